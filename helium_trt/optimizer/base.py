"""What a rewrite rule is and what it may consult: the Rule protocol and the optimizer context (pure).

A rule is a named, pure function from plan to plan. It never mutates its input (plans and
operators are frozen); it returns the same ``Plan`` object when it has nothing to change, so the
driver can tell "no change" apart cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from helium_trt.optimizer.known_prompts import RenderedPrompts
from helium_trt.plan.chat import CHATML, ChatFormat
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import GenerationConfig
from helium_trt.plan.patterns import PatternMatcher


@runtime_checkable
class PromptResultCache(Protocol):
    """Results of earlier LLM calls keyed by their exact inputs.

    Contract: ``lookup`` returns the text a call with this model, fully rendered prompt text and
    generation config produced before, or None. Only deterministic configs are ever asked
    (the optimizer checks ``config.is_deterministic``), so a hit is the call's exact result.
    Implementations must be side-effect free from the optimizer's point of view.
    """

    def lookup(self, model: str, prompt_text: str, config: GenerationConfig) -> str | None: ...

    def may_hold(self, model: str, config: GenerationConfig) -> bool:
        """False only when no ``lookup`` with this model and config can hit (lets the optimizer
        skip rendering those prompts)."""
        ...


@dataclass(frozen=True, slots=True)
class OptimizeContext:
    """Facts from outside the plan that rules may read.

    ``chat_format`` renders chat prompts to the exact text the engine sees (needed to key the
    prompt-result cache); ``prompt_cache`` is None when no cache is available, which turns
    ``fetch_cached_results`` into a no-op. ``patterns`` is the regex engine that validates
    switch and loop patterns and lets ``prune_switches`` decide regex switches; None leaves
    patterns unchecked and regex switches to the runtime. ``rendered_prompts``, when given,
    receives the known prompts the cache lookup renders, by LLM operator id, for the runtime's
    planner to reuse.
    """

    chat_format: ChatFormat = CHATML
    prompt_cache: PromptResultCache | None = None
    patterns: PatternMatcher | None = None
    # Served models whose chat format is not ``chat_format`` (several models, routed by
    # LlmOp.model): their prompts are rendered with their own format for the cache lookup.
    model_formats: tuple[tuple[str, ChatFormat], ...] = ()
    rendered_prompts: dict[str, RenderedPrompts] | None = None

    def format_for(self, model: str) -> ChatFormat:
        """The chat format an LLM call on ``model`` is rendered with."""
        return next((f for name, f in self.model_formats if name == model), self.chat_format)


class Rule(Protocol):
    """One rewrite. ``name`` is verb_object (the name ``disabled`` and the trace use); the class
    docstring states what it rewrites with a small example.

    ``apply`` must be pure: same plan and context in, same plan out; never mutate ``plan``.
    """

    name: str

    def apply(self, plan: Plan, ctx: OptimizeContext) -> Plan: ...
