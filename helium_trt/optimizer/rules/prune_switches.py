"""Rule prune_switches: resolve switches whose input is known at plan time."""

from __future__ import annotations

from helium_trt.optimizer.base import OptimizeContext
from helium_trt.optimizer.plan_values import static_text
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import SwitchOp, with_inputs_renamed
from helium_trt.plan.patterns import PatternMatcher


class PruneSwitches:
    """A ``SwitchOp`` whose input is the same text for every row (a constant or a static
    format) is decided now: the switch is removed and its consumers read the chosen target.
    A switch that matches no case and has no default is left for the runtime to report, and
    so is a regex switch when the context carries no regex engine (``ctx.patterns``).

    Example: ``mode = constant("short")``, ``s = switch(mode, [("^short", brief), ("^long",
    full)])``, ``out = output(s)`` becomes ``out = output(brief)``; ``full`` is now dead.
    """

    name = "prune_switches"

    def apply(self, plan: Plan, ctx: OptimizeContext) -> Plan:
        rename: dict[str, str] = {}
        for op in plan.ops:
            if isinstance(op, SwitchOp):
                text = static_text(plan, op.input)
                target = choose_target(op, text, ctx.patterns) if text is not None else None
                if target is not None:
                    rename[op.id] = target
        if not rename:
            return plan
        _resolve_chains(rename)
        return plan.replace_ops(with_inputs_renamed(op, rename) for op in plan.ops
                                if op.id not in rename)


def choose_target(op: SwitchOp, text: str, patterns: PatternMatcher | None) -> str | None:
    """The target ``op`` yields for input ``text`` (helium.v1 MatchKind semantics); None when
    undecided (a regex switch without a regex engine)."""
    if op.match == "regex" and patterns is None:
        return None
    for case in op.cases:
        if op.match == "choice":
            if text.strip().casefold() == case.value.strip().casefold():
                return case.target
        elif patterns.search(case.value, text):
            return case.target
    return op.default_target


def _resolve_chains(rename: dict[str, str]) -> None:
    """A switch choosing another pruned switch reads that switch's choice."""
    for key in rename:
        seen = {key}
        target = rename[key]
        while target in rename and target not in seen:
            seen.add(target)
            target = rename[target]
        rename[key] = target
