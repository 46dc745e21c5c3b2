"""Orders over LLM calls: FIFO (plan order) and the cache-aware greedy order (pure).

Greedy list scheduling: among calls whose dependencies are scheduled, take the one with the
longest remaining dependency chain (critical path first); among equals, the one sharing the
longest known token prefix with the call scheduled just before (siblings together, so a
prefix is computed once and its consumers run while it is resident); then plan order.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from helium_trt.scheduler.types import CallSpec


def fifo_order(calls: Mapping[str, CallSpec]) -> tuple[str, ...]:
    """Calls in the order given (the runtime lists them in plan order, row by row)."""
    return tuple(calls)


def chain_depths(calls: Mapping[str, CallSpec]) -> dict[str, int]:
    """For each call, the number of calls on its longest path to a sink (itself included).

    NOTE: depth counts calls, not tokens: sibling experts with different max_tokens still tie,
    which is what lets the prefix tie-break keep them together.
    """
    successors: dict[str, list[str]] = {cid: [] for cid in calls}
    for spec in calls.values():
        for dep in spec.deps:
            if dep in successors:
                successors[dep].append(spec.call_id)
    depth: dict[str, int] = {}
    for cid in reversed(topological(calls)):
        depth[cid] = 1 + max((depth[s] for s in successors[cid]), default=0)
    return depth


def topological(calls: Mapping[str, CallSpec]) -> list[str]:
    """Kahn's algorithm, ties broken by position in ``calls`` (deterministic)."""
    position = {cid: i for i, cid in enumerate(calls)}
    remaining = {cid: sum(1 for d in s.deps if d in calls) for cid, s in calls.items()}
    successors: dict[str, list[str]] = {cid: [] for cid in calls}
    for spec in calls.values():
        for dep in spec.deps:
            if dep in successors:
                successors[dep].append(spec.call_id)
    ready = sorted((c for c, n in remaining.items() if n == 0), key=position.__getitem__)
    out = []
    while ready:
        cid = ready.pop(0)
        out.append(cid)
        for s in successors[cid]:
            remaining[s] -= 1
            if remaining[s] == 0:
                ready.append(s)
                ready.sort(key=position.__getitem__)
    return out


def greedy_order(calls: Mapping[str, CallSpec]) -> tuple[str, ...]:
    depth = chain_depths(calls)
    position = {cid: i for i, cid in enumerate(calls)}
    done: set[str] = set()
    order: list[str] = []
    previous: tuple[int, ...] = ()
    pending = dict(calls)
    while pending:
        ready = [c for c, s in pending.items() if all(d in done or d not in calls for d in s.deps)]
        best = min(ready, key=lambda c: (-depth[c], -common_prefix(previous, calls[c].known_tokens),
                                         position[c]))
        order.append(best)
        done.add(best)
        previous = calls[best].known_tokens
        del pending[best]
    return tuple(order)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
