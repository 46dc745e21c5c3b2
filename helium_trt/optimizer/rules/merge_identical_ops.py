"""Rule merge_identical_ops: common subexpression elimination over operators."""

from __future__ import annotations

from dataclasses import replace

from helium_trt.optimizer.base import OptimizeContext
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import CacheFetchOp, LlmOp, Op, OutputOp, ToolCallOp, with_inputs_renamed


class MergeIdenticalOps:
    """Two operators of the same kind with the same inputs and the same configuration compute
    the same value; keep the first (in dependency order) and point the other's consumers at it.
    Walking in dependency order merges whole identical chains in one pass.

    Never merged: LLM calls that sample without a seed (two calls may differ on purpose),
    tool calls (the client may have side effects), outputs (each is a result column). Inputs
    merge only when they read the same column (the column is part of their configuration).

    Example: ``a = llm(p, temperature=0)``, ``b = llm(p, temperature=0)``, ``j = format("{a}
    vs {b}")`` becomes ``a = llm(p)``, ``j = format("{a} vs {a}")``.
    """

    name = "merge_identical_ops"

    def apply(self, plan: Plan, ctx: OptimizeContext) -> Plan:
        rename: dict[str, str] = {}
        seen: dict[Op, str] = {}
        for op_id in plan.topo_order:
            op = with_inputs_renamed(plan.by_id[op_id], rename)
            if not can_merge(op):
                continue
            key = replace(op, id="")
            if key in seen:
                rename[op_id] = seen[key]
            else:
                seen[key] = op_id
        if not rename:
            return plan
        return plan.replace_ops(with_inputs_renamed(op, rename) for op in plan.ops
                                if op.id not in rename)


def can_merge(op: Op) -> bool:
    if isinstance(op, (ToolCallOp, OutputOp)):
        return False
    if isinstance(op, LlmOp):
        return op.config.is_deterministic
    if isinstance(op, CacheFetchOp) and op.fallback is not None:
        return op.fallback.config.is_deterministic
    return True
