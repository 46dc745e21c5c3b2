"""EXPLAIN for workflows: the plan before and after each rule, the templated radix tree and the
shared static prefixes, as text or one JSON object (pure: the CLI and the gRPC service share it)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from helium_trt.cache.trt import TemplatedRadixTree, build_trt
from helium_trt.optimizer.base import OptimizeContext
from helium_trt.optimizer.describe import describe_op, op_to_json
from helium_trt.optimizer.driver import OptimizeResult, optimize
from helium_trt.plan.chat import CHATML
from helium_trt.plan.fanout import per_element_sources
from helium_trt.plan.graph import Plan


@dataclass(frozen=True, slots=True)
class Explanation:
    result: OptimizeResult
    tree: TemplatedRadixTree
    planning_ms: float
    chat_format: str = CHATML.source  # where chat prompts' rendering came from


def explain(plan: Plan, *, disabled: frozenset[str] = frozenset(),
            ctx: OptimizeContext | None = None) -> Explanation:
    """Optimize ``plan`` and build its TRT, timing both together as planning time."""
    ctx = ctx or OptimizeContext(chat_format=CHATML)
    start = time.perf_counter()
    result = optimize(plan, ctx=ctx, disabled=disabled)
    tree = build_trt(result.plan, ctx.chat_format)
    planning_ms = (time.perf_counter() - start) * 1000.0
    return Explanation(result, tree, planning_ms, ctx.chat_format.source)


def to_text(ex: Explanation, *, verbose: bool = False,
            count_tokens: Callable[[str], int] | None = None) -> str:
    """The explanation as text; with ``count_tokens`` (the model's stable tokens of a prefix)
    shared prefixes are sized in tokens too."""
    before = ex.result.input_plan
    lines = [f"== plan before optimization ({len(before)} ops, {len(before.llm_ops)} LLM ops)"]
    lines += [f"  {describe_op(op)}" for op in before.ops]
    for t in ex.result.trace:
        if t.disabled:
            lines.append(f"== rule {t.name}: disabled")
            continue
        if not t.did_change and not verbose:
            continue
        lines.append(f"== rule {t.name} ({t.elapsed_ms:.2f} ms): -{len(t.removed)} removed, "
                     f"+{len(t.added)} added, ~{len(t.changed)} changed")
        lines += [f"  - {op_id}" for op_id in t.removed]
        shown = t.plan.ops if verbose else [t.plan.by_id[i] for i in (*t.added, *t.changed)]
        marks = {**{i: "+" for i in t.added}, **{i: "~" for i in t.changed}}
        lines += [f"  {marks.get(op.id, ' ')} {describe_op(op)}" for op in shown]
    after = ex.result.plan
    lines.append(f"== plan after optimization ({len(after)} ops, {len(after.llm_ops)} LLM ops)")
    lines += [f"  {describe_op(op)}" for op in after.ops]
    lines.append("== templated radix tree")
    lines.append(ex.tree.render())
    lines.append(f"== prompts (chat format: {ex.chat_format})")
    for op_id, text in ex.tree.to_json()["leaves"].items():
        lines.append(f"  {op_id}:")
        lines += [f"    | {line}" for line in text.split("\n")]
    lines.append("== shared static prefixes" + (
        "" if count_tokens else " (in characters: --model DIR counts them in its tokens)"))
    for p in ex.tree.shared_prefixes():
        size = (f"{count_tokens(p.text):,} tokens ({p.num_chars:,} chars)" if count_tokens
                else f"{p.num_chars:,} chars")
        lines.append(f"  {size}, {len(p.consumers)} consumers: "
                     f"{', '.join(p.consumers)}\n    {_ends(p.text)}")
    per_element = _per_element_prefixes(ex)
    if per_element:
        lines.append("== static prefixes of per-element calls (every call of the operator "
                     "shares it)")
    for p in per_element:
        size = (f"{count_tokens(p['text']):,} tokens ({p['num_chars']:,} chars)" if count_tokens
                else f"{p['num_chars']:,} chars")
        lines.append(f"  {size}, {p['op']}: one call per element of "
                     f"{', '.join(p['lists'])}\n    {_ends(p['text'])}")
    lines.append(f"== planning time {ex.planning_ms:.2f} ms (optimize + radix tree)")
    return "\n".join(lines)


def to_json(ex: Explanation) -> dict:
    return {
        "ops_before": [op_to_json(op) for op in ex.result.input_plan.ops],
        "ops_after": [op_to_json(op) for op in ex.result.plan.ops],
        "rules": [{"name": t.name, "removed": list(t.removed), "added": list(t.added),
                   "changed": list(t.changed), "elapsed_ms": round(t.elapsed_ms, 3)}
                  for t in ex.result.trace if t.did_change],
        "disabled_rules": sorted({t.name for t in ex.result.trace if t.disabled}),
        "chat_format": ex.chat_format,
        "trt": ex.tree.to_json(),
        "shared_prefixes": [{"text": p.text, "consumers": list(p.consumers),
                             "num_chars": p.num_chars} for p in ex.tree.shared_prefixes()],
        "per_element_prefixes": _per_element_prefixes(ex),
        "planning_ms": round(ex.planning_ms, 3),
    }


def _per_element_prefixes(ex: Explanation) -> list[dict]:
    """The static prefix of each LLM operator whose calls run once per list element (a map's
    instruction, say): what those calls share, though no other operator does."""
    found = []
    plan = ex.result.plan
    for op_id, lists in sorted(per_element_sources(plan, plan.rows).items()):
        text = ex.tree.static_prefix(op_id) if op_id in ex.tree.templates else ""
        if text:
            found.append({"op": op_id, "lists": sorted(lists), "text": text,
                          "num_chars": len(text)})
    return found


def _ends(text: str, width: int = 36) -> str:
    """Start and end of a long prefix (shared prefixes mostly differ in how they end), quoted
    with Python's escapes: a newline shows as \\n, once."""
    return repr(text) if len(text) <= 2 * width else f"{text[:width]!r} .. {text[-width:]!r}"
