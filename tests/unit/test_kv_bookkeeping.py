"""The prefix cache's bookkeeping kept across calls: the pool's count of cached blocks only the
cache holds, and the tree's eviction heap, checked against the full scan they replace."""

import heapq
import random

from helium_trt.cache.block_pool import BlockPool
from helium_trt.cache.token_radix import BlockRetention, TokenRadixTree

BS = 2


def test_cached_unshared_count_follows_reference_counts():
    pool = BlockPool(4)
    a, b = pool.allocate(2)
    pool.incref([a])  # a request and the cache hold a
    pool.mark_cached(a)
    pool.mark_cached(b)  # only the cache holds b
    assert pool.num_cached_unshared == 1
    pool.decref([a])  # the request lets go of a
    assert pool.num_cached_unshared == 2
    pool.incref([b])  # a request reuses b
    assert pool.num_cached_unshared == 1
    pool.unmark_cached(a)
    assert pool.decref([a]) == [a]  # evicted: out of the cache, then freed
    assert pool.num_cached_unshared == 0
    pool.decref([b])  # the request lets go of b
    assert pool.num_cached_unshared == 1
    assert pool.decref([b]) == [b]  # freed while still marked: no longer counted
    assert pool.num_cached_unshared == 0
    [c] = pool.allocate(1)
    assert c == b and pool.num_cached_unshared == 0  # a reused id starts unmarked


class FullScanTree(TokenRadixTree):
    """The eviction the heap replaced: every call scans every cached block."""

    def num_evictable(self) -> int:
        return sum(1 for b in self._nodes_by_block if self.pool.ref_count(b) == 1)

    def evict(self, num_blocks: int, now: float) -> list[int]:
        def evictable_leaf(n):
            return not n.children and self.pool.ref_count(n.block_id) == 1

        heap = [(self._eviction_key(n, now), n.block_id, n)
                for n in self._nodes_by_block.values() if evictable_leaf(n)]
        heapq.heapify(heap)
        freed: list[int] = []
        while heap and len(freed) < num_blocks:
            _, _, node = heapq.heappop(heap)
            parent = node.parent
            self._remove_leaf(node)
            freed.extend(self.pool.decref([node.block_id]))
            if parent is not self._root and evictable_leaf(parent):
                heapq.heappush(heap, (self._eviction_key(parent, now), parent.block_id, parent))
        return freed


class Harness:
    """One tree with its pool, driven like the KV manager drives it."""

    def __init__(self, tree_type, num_blocks: int):
        self.tree = tree_type(BlockPool(num_blocks), BS)
        self.held: list[list[int]] = []

    def cache(self, tokens, now, retentions, keep: bool) -> list[int]:
        pool = self.tree.pool
        num_blocks = len(tokens) // BS
        shortfall = num_blocks - pool.num_free
        if shortfall > 0:
            self.tree.evict(shortfall, now)
        if num_blocks > pool.num_free:
            return []
        blocks = pool.allocate(num_blocks)
        tree_ids = self.tree.insert(tokens, blocks, now, retentions)
        pool.incref(tree_ids)  # the request switches to the tree's blocks
        pool.decref(blocks)
        if keep:
            self.held.append(tree_ids)
        else:
            pool.decref(tree_ids)
        return tree_ids

    def release(self, index: int) -> None:
        self.tree.pool.decref(self.held.pop(index))


def _retentions(rng: random.Random, num_blocks: int, now: float):
    if rng.random() < 0.6:
        return None
    out = []
    for _ in range(num_blocks):
        roll = rng.random()
        if roll < 0.5:
            out.append(None)
        elif roll < 0.75:
            out.append(BlockRetention(rng.choice((10, 35, 60, 90))))
        else:
            out.append(BlockRetention(rng.choice((10, 60, 90)), expires_at=now + rng.uniform(1, 40)))
    return out


def test_eviction_heap_evicts_exactly_what_a_full_scan_evicts():
    rng = random.Random(7)
    heap, scan = Harness(TokenRadixTree, 48), Harness(FullScanTree, 48)
    prefixes = [[rng.randrange(50) for _ in range(rng.randrange(0, 9))] for _ in range(6)]
    for step in range(3000):
        now = float(step + 1)  # distinct times: no ties in the eviction order
        op = rng.random()
        if op < 0.5:
            tokens = rng.choice(prefixes) + [rng.randrange(50) for _ in range(rng.randrange(1, 12))]
            retentions = _retentions(rng, len(tokens) // BS, now)
            keep = rng.random() < 0.3 and len(heap.held) < 6
            assert heap.cache(tokens, now, retentions, keep) == scan.cache(tokens, now, retentions, keep)
        elif op < 0.65 and heap.held:
            index = rng.randrange(len(heap.held))
            heap.release(index)
            scan.release(index)
        elif op < 0.85:
            tokens = rng.choice(prefixes) + [rng.randrange(50) for _ in range(4)]
            assert heap.tree.match_prefix(tokens, now) == scan.tree.match_prefix(tokens, now)
        else:
            num = rng.randrange(1, 8)
            assert heap.tree.evict(num, now) == scan.tree.evict(num, now), f"step {step}"
        assert heap.tree.num_evictable() == scan.tree.num_evictable(), f"step {step}"
        assert heap.tree.pool.num_free == scan.tree.pool.num_free
