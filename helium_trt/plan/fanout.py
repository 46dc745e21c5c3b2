"""How many LLM calls a plan makes for its rows, list fan-out included (pure).

A list column makes every format over it, every map of it and every LLM call on those run once
per element, so one row can stand for thousands of calls. ``count_llm_calls`` counts them from
the plan and the rows alone, before anything runs, so a server can refuse a request by the work
it would create (``serve --max-calls``).
"""

from __future__ import annotations

from typing import Sequence

from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import CacheFetchOp, FormatOp, InputOp, LlmOp, MapOp, SwitchOp


def count_llm_calls(plan: Plan, rows: Sequence[dict]) -> int:
    """LLM calls of ``plan`` over ``rows``: each LLM operator once per row (per element of the
    list its prompt holds, times its ``n`` samples), rows answered from the result cache aside.

    NOTE: an upper bound: every branch of a switch is counted, though only one runs.
    """
    sources = _list_sources(plan)
    calls = [(sources[llm.prompt], hit_rows, llm.config.n) for llm, hit_rows in _calls(plan)]
    inputs = [(op.id, op.column) for op in plan.ops if isinstance(op, InputOp)]
    total = 0
    for index, row in enumerate(rows):
        lengths = {op_id: len(row[column]) for op_id, column in inputs
                   if isinstance(row.get(column), list)}
        for prompt_sources, hit_rows, num_samples in calls:
            if index not in hit_rows:
                total += max((lengths.get(s, 1) for s in prompt_sources), default=1) * num_samples
    return total


def _calls(plan: Plan):
    """(LLM operator, rows answered from the result cache) of every LLM call site."""
    for op in plan.ops:
        if isinstance(op, LlmOp):
            yield op, frozenset()
        elif isinstance(op, CacheFetchOp) and op.fallback is not None:
            yield op.fallback, frozenset(dict(op.hits))


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
            found = sources.get(op.prompt, frozenset())
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
