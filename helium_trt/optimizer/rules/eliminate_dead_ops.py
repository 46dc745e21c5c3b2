"""Rule eliminate_dead_ops: drop operators no output depends on."""

from __future__ import annotations

import networkx as nx

from helium_trt.optimizer.base import OptimizeContext
from helium_trt.plan.graph import Plan


class EliminateDeadOps:
    """Keep only the outputs and the operators reachable backward from them.

    NOTE: an unreachable tool call is dropped too; a workflow that wants a tool's side effect
    must route its result to an output.

    Example: ``q = input``, ``sys = constant(..)`` (already folded into ``p``), ``p =
    format("...{q}")``, ``a = llm(p)``, ``unused = llm(p)``, ``out = output(a)`` becomes
    ``q, p, a, out``.
    """

    name = "eliminate_dead_ops"

    def apply(self, plan: Plan, ctx: OptimizeContext) -> Plan:
        live: set[str] = set()
        for out in plan.outputs:
            live.add(out.id)
            live |= nx.ancestors(plan.graph, out.id)
        if len(live) == len(plan.ops):
            return plan
        return plan.replace_ops(op for op in plan.ops if op.id in live)
