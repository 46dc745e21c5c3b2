"""Orders over LLM calls: FIFO (plan order) and the cache-aware greedy order (pure).

Greedy list scheduling: among calls whose dependencies are scheduled, take the one with the
longest remaining dependency chain (critical path first); among equals, the one sharing the
longest known token prefix with the call scheduled just before (siblings together, so a
prefix is computed once and its consumers run while it is resident); then plan order.
"""

from __future__ import annotations

import sys
from bisect import bisect_left, insort
from heapq import heapify, heappop, heappush
from typing import Mapping

from helium_trt.scheduler.prefix_index import PrefixIndex
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
    # A heap of plan positions: the same pops as re-sorting a ready list after every push.
    ready = [position[c] for c, n in remaining.items() if n == 0]
    heapify(ready)
    ids = list(calls)
    out = []
    while ready:
        cid = ids[heappop(ready)]
        out.append(cid)
        for s in successors[cid]:
            remaining[s] -= 1
            if remaining[s] == 0:
                heappush(ready, position[s])
    return out


def greedy_order(calls: Mapping[str, CallSpec],
                 packed: Mapping[str, bytes] | None = None) -> tuple[str, ...]:
    """Greedy list order (see the module docstring), in O(n log n) after the prefix index.

    Ready calls wait in one bucket per chain depth; within the deepest bucket, the ready calls
    sharing the most tokens with the previous call form a contiguous run of ranks in the
    sorted prefix index, and the earliest of them in plan order wins. ``packed`` holds each
    call's known tokens ``pack``ed, where the caller has them already.
    """
    ids = list(calls)
    index = PrefixIndex([calls[cid].known_tokens for cid in ids],
                        [packed[cid] for cid in ids] if packed is not None else None)
    successors, remaining = _dependency_counts(calls, ids)
    depth = _depths(successors, remaining)
    buckets: dict[int, _ReadyBucket] = {}
    for pos in (p for p in range(len(ids)) if remaining[p] == 0):
        _bucket(buckets, depth[pos], len(ids)).add(index.rank[pos], pos)
    order: list[str] = []
    previous_rank: int | None = None
    while buckets:
        level = max(buckets)
        bucket = buckets[level]
        pos = _closest(bucket, index, previous_rank)
        previous_rank = index.rank[pos]
        bucket.remove(previous_rank)
        if not bucket.ranks:
            del buckets[level]
        order.append(ids[pos])
        for succ in successors[pos]:
            remaining[succ] -= 1
            if remaining[succ] == 0:
                _bucket(buckets, depth[succ], len(ids)).add(index.rank[succ], succ)
    return tuple(order)


def _dependency_counts(calls: Mapping[str, CallSpec],
                       ids: list[str]) -> tuple[list[list[int]], list[int]]:
    """Successor positions and unmet dependency counts (dependencies outside ``calls`` are met)."""
    position = {cid: i for i, cid in enumerate(ids)}
    successors: list[list[int]] = [[] for _ in ids]
    remaining = [0] * len(ids)
    for pos, cid in enumerate(ids):
        for dep in calls[cid].deps:
            if dep in position:
                successors[position[dep]].append(pos)
                remaining[pos] += 1
    return successors, remaining


def _depths(successors: list[list[int]], remaining: list[int]) -> list[int]:
    """``chain_depths`` by plan position: any topological order gives the same depths."""
    unmet = list(remaining)
    stack = [pos for pos, n in enumerate(unmet) if n == 0]
    topo: list[int] = []
    while stack:
        pos = stack.pop()
        topo.append(pos)
        for succ in successors[pos]:
            unmet[succ] -= 1
            if unmet[succ] == 0:
                stack.append(succ)
    depth = [1] * len(unmet)
    for pos in reversed(topo):
        if successors[pos]:
            depth[pos] = 1 + max(map(depth.__getitem__, successors[pos]))
    return depth


def _bucket(buckets: dict[int, "_ReadyBucket"], level: int, size: int) -> "_ReadyBucket":
    found = buckets.get(level)
    if found is None:
        found = buckets[level] = _ReadyBucket(size)
    return found


def _closest(bucket: "_ReadyBucket", index: PrefixIndex, previous_rank: int | None) -> int:
    """Plan position of the ready call sharing the longest prefix with ``previous_rank``."""
    if previous_rank is None:
        return bucket.min_position(0, len(index) - 1)
    i = bisect_left(bucket.ranks, previous_rank)
    left = index.common(bucket.ranks[i - 1], previous_rank) if i > 0 else -1
    right = index.common(previous_rank, bucket.ranks[i]) if i < len(bucket.ranks) else -1
    best = max(left, right)
    lo = index.first_rank_sharing(previous_rank, best) if left == best else previous_rank
    hi = index.last_rank_sharing(previous_rank, best) if right == best else previous_rank
    return bucket.min_position(lo, hi)


class _ReadyBucket:
    """Ready calls of one depth: their ranks sorted, and a segment tree of min plan position."""

    def __init__(self, size: int) -> None:
        self.ranks: list[int] = []
        self._size = 1 << max(size - 1, 0).bit_length()
        self._tree = [_ABSENT] * (2 * self._size)

    def add(self, rank: int, position: int) -> None:
        insort(self.ranks, rank)
        self._set(rank, position)

    def remove(self, rank: int) -> None:
        del self.ranks[bisect_left(self.ranks, rank)]
        self._set(rank, _ABSENT)

    def min_position(self, lo: int, hi: int) -> int:
        """Least plan position among ready ranks in [lo, hi]."""
        tree, best = self._tree, _ABSENT
        lo += self._size
        hi += self._size + 1
        while lo < hi:
            if lo & 1:
                if tree[lo] < best:
                    best = tree[lo]
                lo += 1
            if hi & 1:
                hi -= 1
                if tree[hi] < best:
                    best = tree[hi]
            lo >>= 1
            hi >>= 1
        return best

    def _set(self, rank: int, value: int) -> None:
        tree = self._tree
        i = rank + self._size
        tree[i] = value
        while i > 1:
            left, right = tree[i & ~1], tree[i | 1]
            i >>= 1
            least = left if left < right else right
            if tree[i] == least:
                break  # NOTE: an unchanged node leaves every ancestor unchanged too
            tree[i] = least


_ABSENT = sys.maxsize
