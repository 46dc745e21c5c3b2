"""The rule-based plan optimizer (pure): ordered rewrite rules, a validating driver, a trace.

Use ``optimize(plan, ctx=OptimizeContext(...), disabled=frozenset({"merge_identical_ops"}))``.
"""

from helium_trt.optimizer.base import OptimizeContext, PromptResultCache, Rule
from helium_trt.optimizer.driver import OptimizeResult, RuleTrace, optimize
from helium_trt.optimizer.rules import RULE_NAMES, RULES

__all__ = ["OptimizeContext", "OptimizeResult", "PromptResultCache", "Rule", "RuleTrace",
           "RULES", "RULE_NAMES", "optimize"]
