"""Exhaustive search over call orders for small DAGs, scored by the same cost model (pure).

Enumerates every order that respects dependencies (at most ``max_calls`` calls, so at most
8! = 40320 orders) and simulates each on one worker; used to measure the greedy order's gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

from helium_trt.errors import InvalidWorkflowError
from helium_trt.scheduler.cost import simulate
from helium_trt.scheduler.types import CallSpec, CostEstimate, SchedulerConfig


@dataclass(frozen=True, slots=True)
class SearchResult:
    best_order: tuple[str, ...]
    best: CostEstimate
    num_orders: int


def topological_orders(calls: Mapping[str, CallSpec]) -> Iterator[tuple[str, ...]]:
    """Every order of ``calls`` in which each call comes after its dependencies."""
    remaining = {cid: {d for d in s.deps if d in calls} for cid, s in calls.items()}
    prefix: list[str] = []

    def extend():
        if len(prefix) == len(calls):
            yield tuple(prefix)
            return
        placed = set(prefix)
        for cid, deps in remaining.items():
            if cid not in placed and deps <= placed:
                prefix.append(cid)
                yield from extend()
                prefix.pop()

    yield from extend()


def exhaustive_search(calls: Mapping[str, CallSpec], config: SchedulerConfig,
                      max_calls: int | None = None) -> SearchResult:
    """The cheapest order (ties: first found). Refuses DAGs over ``max_calls`` calls."""
    limit = config.search_max_calls if max_calls is None else max_calls
    if len(calls) > limit:
        raise InvalidWorkflowError(f"{len(calls)} LLM calls are too many to enumerate "
                                   f"(at most {limit})")
    best_order, best, n = (), None, 0
    for order in topological_orders(calls):
        n += 1
        cost = simulate(calls, order, config)
        if best is None or cost.total < best.total:
            best_order, best = order, cost
    return SearchResult(best_order, best, n)
