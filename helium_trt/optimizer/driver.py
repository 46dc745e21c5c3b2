"""The optimizer driver: run the ordered rules, re-validate after each, record a trace (pure).

Timing uses an injected clock (``perf_counter`` by default) so tests can pass a fake one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from helium_trt.errors import InvalidWorkflowError, OptimizerError
from helium_trt.optimizer.base import OptimizeContext, Rule
from helium_trt.optimizer.rules import RULES, RULE_NAMES
from helium_trt.plan.graph import Plan
from helium_trt.plan.validate import validate


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """What one rule did. ``plan`` is the plan after the rule (the input plan when skipped)."""

    name: str
    removed: tuple[str, ...]
    added: tuple[str, ...]
    changed: tuple[str, ...]
    elapsed_ms: float
    plan: Plan = field(repr=False, compare=False)
    disabled: bool = False

    @property
    def did_change(self) -> bool:
        return bool(self.removed or self.added or self.changed)


@dataclass(frozen=True, slots=True)
class OptimizeResult:
    plan: Plan
    trace: tuple[RuleTrace, ...]
    input_plan: Plan | None = field(repr=False, compare=False, default=None)

    @property
    def total_ms(self) -> float:
        return sum(t.elapsed_ms for t in self.trace)


def optimize(plan: Plan, *, ctx: OptimizeContext | None = None,
             disabled: frozenset[str] = frozenset(), rules: Sequence[Rule] = RULES,
             clock: Callable[[], float] = time.perf_counter) -> OptimizeResult:
    """Validate ``plan`` (with its rows), then apply ``rules`` in order, skipping ``disabled``.

    Raises InvalidWorkflowError for a bad plan or an unknown rule name in ``disabled``, and
    OptimizerError when a rule's output does not validate.
    """
    ctx = ctx if ctx is not None else OptimizeContext()
    known = {r.name for r in rules} | set(RULE_NAMES)
    unknown = sorted(set(disabled) - known)
    if unknown:
        raise InvalidWorkflowError(f"unknown optimizer rule(s) {unknown}; known: {sorted(known)}",
                                   field="options.optimizations")
    validate(plan, rows=plan.rows or None, patterns=ctx.patterns)
    trace = []
    current = plan
    for rule in rules:
        if rule.name in disabled:
            trace.append(RuleTrace(rule.name, (), (), (), 0.0, current, disabled=True))
            continue
        start = clock()
        after = rule.apply(current, ctx)
        elapsed_ms = (clock() - start) * 1000.0
        if after is not current:  # an unchanged plan was validated already
            _revalidate(rule.name, after)
        trace.append(_diff(rule.name, current, after, elapsed_ms))
        current = after
    return OptimizeResult(current, tuple(trace), plan)


def _revalidate(rule_name: str, plan: Plan) -> None:
    try:
        validate(plan)
    except InvalidWorkflowError as exc:
        raise OptimizerError(f"rule {rule_name!r} produced an invalid plan: {exc}") from exc


def _diff(name: str, before: Plan, after: Plan, elapsed_ms: float) -> RuleTrace:
    if after is before:
        return RuleTrace(name, (), (), (), elapsed_ms, after)
    old, new = before.by_id, after.by_id
    removed = tuple(i for i in old if i not in new)
    added = tuple(i for i in new if i not in old)
    changed = tuple(i for i in new if i in old and old[i] != new[i])
    return RuleTrace(name, removed, added, changed, elapsed_ms, after)
