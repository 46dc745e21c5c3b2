"""`helium-trt explain FILE`: the plan before and after each optimizer rule, the templated radix
tree and every shared static prefix, as text or as one JSON object (``--json``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

from helium_trt.api.convert import (
    disabled_rules, load_request_file, load_rows_file, plan_from_proto, rows_from_proto,
)
from helium_trt.cache.trt import TemplatedRadixTree, build_trt
from helium_trt.errors import HeliumError
from helium_trt.optimizer import RULE_NAMES, OptimizeContext, OptimizeResult, optimize
from helium_trt.optimizer.describe import describe_op, op_to_json
from helium_trt.plan.chat import CHATML
from helium_trt.plan.graph import Plan


@dataclass(frozen=True, slots=True)
class Explanation:
    result: OptimizeResult
    tree: TemplatedRadixTree
    planning_ms: float


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain", help="show the optimized plan, the templated radix tree and shared prefixes",
        description=__doc__)
    p.add_argument("file", help="workflow file (YAML/JSON RunRequest or Workflow)")
    p.add_argument("--rows", help="rows file (YAML/JSON list, or .jsonl); replaces the file's rows")
    p.add_argument("--verbose", action="store_true", help="print the whole plan after every rule")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--disable", action="append", default=[], choices=RULE_NAMES,
                   metavar="RULE", help=f"turn off a rule (repeatable): {', '.join(RULE_NAMES)}")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        plan, disabled = _load(args)
        explanation = explain(plan, disabled=disabled | frozenset(args.disable))
    except HeliumError as exc:
        print(f"helium-trt explain: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(to_json(explanation), indent=2))
    else:
        print(to_text(explanation, verbose=args.verbose))
    return 0


def _load(args) -> tuple[Plan, frozenset[str]]:
    request = load_request_file(args.file)
    rows = load_rows_file(args.rows) if args.rows else rows_from_proto(request.rows)
    plan = plan_from_proto(request.workflow, rows)
    return plan, disabled_rules(request.options.optimizations)


def explain(plan: Plan, *, disabled: frozenset[str] = frozenset(),
            ctx: OptimizeContext | None = None) -> Explanation:
    """Optimize ``plan`` and build its TRT, timing both together as planning time."""
    ctx = ctx or OptimizeContext(chat_format=CHATML)
    start = time.perf_counter()
    result = optimize(plan, ctx=ctx, disabled=disabled)
    tree = build_trt(result.plan, ctx.chat_format)
    planning_ms = (time.perf_counter() - start) * 1000.0
    return Explanation(result, tree, planning_ms)


def to_text(ex: Explanation, *, verbose: bool = False) -> str:
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
    lines.append("== shared static prefixes")
    for p in ex.tree.shared_prefixes():
        lines.append(f"  {p.num_chars} chars, {len(p.consumers)} consumers: "
                     f"{', '.join(p.consumers)}\n    {_ends(p.text)}")
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
        "trt": ex.tree.to_json(),
        "shared_prefixes": [{"text": p.text, "consumers": list(p.consumers),
                             "num_chars": p.num_chars} for p in ex.tree.shared_prefixes()],
        "planning_ms": round(ex.planning_ms, 3),
    }


def _ends(text: str, width: int = 36) -> str:
    """Start and end of a long prefix: shared prefixes mostly differ in how they end."""
    text = text.replace("\n", "\\n")
    return repr(text) if len(text) <= 2 * width else f"{text[:width]!r} .. {text[-width:]!r}"
