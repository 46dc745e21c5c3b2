"""The logical plan: an immutable set of operators and the DAG their references form (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx

from helium_trt.plan.ops import LlmOp, Op, OutputOp


@dataclass(frozen=True)
class Plan:
    """Operators in a stable order (the order they were written, rewrites appended).

    Rules never mutate a plan; they build a new one with ``replace_ops``.
    """

    ops: tuple[Op, ...]
    name: str = ""
    # Per-row facts the optimizer may use (the request's rows); not part of plan identity.
    rows: tuple[dict, ...] = field(default=(), compare=False)

    @cached_property
    def by_id(self) -> dict[str, Op]:
        return {op.id: op for op in self.ops}

    @cached_property
    def graph(self) -> nx.DiGraph:
        """Edge u -> v when v reads u's output."""
        g = nx.DiGraph()
        for op in self.ops:
            g.add_node(op.id)
        for op in self.ops:
            for src in op.inputs:
                g.add_edge(src, op.id)
        return g

    @cached_property
    def topo_order(self) -> tuple[str, ...]:
        """Ids in a dependency order, ties broken by position in ``ops`` (deterministic)."""
        position = {op.id: i for i, op in enumerate(self.ops)}
        return tuple(nx.lexicographical_topological_sort(self.graph, key=position.__getitem__))

    @property
    def outputs(self) -> tuple[OutputOp, ...]:
        return tuple(op for op in self.ops if isinstance(op, OutputOp))

    @property
    def llm_ops(self) -> tuple[LlmOp, ...]:
        return tuple(op for op in self.ops if isinstance(op, LlmOp))

    def nearest_upstream(self, op_id: str, targets: set[str]) -> tuple[str, ...]:
        """Ids in ``targets`` reachable upstream of ``op_id`` without passing through another
        target (e.g. the LLM calls an LLM call waits for, through formats and switches)."""
        found, stack, seen = set(), list(self.graph.predecessors(op_id)), set()
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            if u in targets:
                found.add(u)
            else:
                stack.extend(self.graph.predecessors(u))
        return tuple(sorted(found))

    def consumers(self, op_id: str) -> tuple[str, ...]:
        return tuple(self.graph.successors(op_id))

    def replace_ops(self, ops) -> "Plan":
        return Plan(tuple(ops), self.name, self.rows)

    def __len__(self) -> int:
        return len(self.ops)
