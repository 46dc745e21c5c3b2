"""How many LLM calls a plan makes for its rows, list fan-out included (pure).

A list column makes every format over it, every map of it and every LLM call on those run once
per element, and an LLM operator with n samples makes a list of its own, so one row can stand
for thousands of calls. ``count_llm_calls`` counts them from
the plan and the rows alone, before anything runs, so a server can refuse a request by the work
it would create (``serve --max-calls``).
"""

from __future__ import annotations

from typing import Sequence

from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import CacheFetchOp, FormatOp, InputOp, LlmOp, MapOp, SwitchOp


def count_llm_calls(plan: Plan, rows: Sequence[dict]) -> int:
    """LLM calls of ``plan`` over ``rows``: each LLM operator once per row, per element of the
    list its prompt holds and per sample (``n``), rows answered from the result cache aside.
    Samples are lists too: a level of n samples over a list of k makes k * n elements for the
    next (a tree of thought fans out n^depth).

    NOTE: an upper bound: every branch of a switch is counted, though only one runs, and lists
    that must be of equal length count as the longest.
    """
    inputs = [(op.id, op.column) for op in plan.ops if isinstance(op, InputOp)]
    hits = {op.id: frozenset(dict(op.hits)) for op in plan.ops if isinstance(op, CacheFetchOp)}
    memo: dict[tuple, dict[str, int]] = {}  # list lengths of a row -> calls per operator
    total = 0
    for index, row in enumerate(rows):
        lengths = tuple((op_id, len(row[column])) for op_id, column in inputs
                        if isinstance(row.get(column), list))
        calls = memo.get(lengths)
        if calls is None:
            calls = memo[lengths] = _calls_per_op(plan, dict(lengths))
        total += sum(n for op_id, n in calls.items() if index not in hits.get(op_id, ()))
    return total


def _calls_per_op(plan: Plan, lengths: dict[str, int]) -> dict[str, int]:
    """LLM calls per LLM operator for one row whose list columns have ``lengths``: each
    operator's value has a width (1 for a text), computed inputs first."""
    width: dict[str, int] = {}
    calls: dict[str, int] = {}
    for op_id in plan.topo_order:
        op = plan.by_id[op_id]
        llm = op.fallback if isinstance(op, CacheFetchOp) else op
        if isinstance(op, InputOp):
            width[op_id] = lengths.get(op_id, 1)
        elif isinstance(llm, LlmOp):
            calls[op_id] = max((width.get(i, 1) for i in llm.inputs), default=1) * llm.config.n
            width[op_id] = calls[op_id]
        elif isinstance(op, (FormatOp, SwitchOp)):
            width[op_id] = max((width.get(i, 1) for i in op.inputs), default=1)
        elif isinstance(op, MapOp):
            width[op_id] = width.get(op.list_id, 1)
        else:  # constants, concats (they join lists), tool calls, outputs
            width[op_id] = 1
    return calls


def per_element_sources(plan: Plan, rows: Sequence[dict]) -> dict[str, frozenset[str]]:
    """For every LLM operator whose calls run once per element of a list: the list columns (of
    ``rows``) and sampled LLM operators (n > 1) whose lengths set how many."""
    list_columns = {op.id for op in plan.ops if isinstance(op, InputOp)
                    and any(isinstance(row.get(op.column), list) for row in rows)}
    sources = _list_sources(plan)
    found = {}
    for op in plan.ops:
        llm = op.fallback if isinstance(op, CacheFetchOp) else op
        lists = sources.get(llm.prompt, frozenset()) & (list_columns | _sampled(plan)) \
            if isinstance(llm, LlmOp) else frozenset()
        if lists:
            found[op.id] = lists
    return found


def _sampled(plan: Plan) -> set[str]:
    return {op.id for op in plan.ops if isinstance(op, LlmOp) and op.config.n > 1}


def _list_sources(plan: Plan) -> dict[str, frozenset[str]]:
    """For every operator, the input operators whose list length its value is per-element over."""
    sources: dict[str, frozenset[str]] = {}
    for op_id in plan.topo_order:
        op = plan.by_id[op_id]
        if isinstance(op, InputOp):
            found = frozenset({op_id})
        elif isinstance(op, FormatOp):
            found = _union(sources, op.inputs)
        elif isinstance(op, MapOp):
            found = sources.get(op.list_id, frozenset())
        elif isinstance(op, LlmOp):
            # n samples make a list too.
            found = sources.get(op.prompt, frozenset()) | (
                frozenset({op_id}) if op.config.n > 1 else frozenset())
        elif isinstance(op, CacheFetchOp) and op.fallback is not None:
            found = sources.get(op.fallback.prompt, frozenset())
        elif isinstance(op, SwitchOp):
            found = _union(sources, op.targets)
        else:  # constants, concats (they join lists), tool calls, outputs
            found = frozenset()
        sources[op_id] = found
    return sources


def _union(sources: dict[str, frozenset[str]], op_ids) -> frozenset[str]:
    return frozenset().union(*(sources.get(i, frozenset()) for i in op_ids))
