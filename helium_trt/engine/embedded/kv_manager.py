"""Sequences' view of the paged KV cache: admission with prefix reuse, growth, caching, release.

Joins the pure block pool and token radix tree to sequences; imports no torch. Every block a
sequence holds is one pool reference; full computed blocks are handed to the tree (which takes
its own reference) as soon as they fill, so later requests reuse them, also while this one runs.
"""

from __future__ import annotations

from helium_trt.cache.block_pool import BlockPool
from helium_trt.cache.token_radix import UNSCOPED, BlockRetention, CacheScope, TokenRadixTree
from helium_trt.engine.embedded.sequence import Sequence


class KVManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        """``enable_prefix_caching`` False: no block is shared or kept after its request (the
        benchmark's naive baseline); every prompt token is computed."""
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks)
        self.tree = TokenRadixTree(self.pool, block_size)
        self._now = 0.0  # the latest time a caller passed in (release takes none)

    # ---- queries ---------------------------------------------------------------------------

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def num_obtainable_blocks(self) -> int:
        """Free blocks plus cached blocks nobody but the tree holds (evictable on demand)."""
        return self.pool.num_free + self.tree.num_evictable()

    def shares_prefixes(self, seq: Sequence) -> bool:
        """Whether ``seq`` reuses cached blocks and hands its own to the tree."""
        return self.enable_prefix_caching and seq.request.reuse_prefix

    def num_resident_tokens(self, token_ids: list[int] | tuple[int, ...],
                            scope: CacheScope = UNSCOPED) -> int:
        """Leading tokens a request in ``scope`` could reuse now (a partly matching block counts)."""
        if not self.enable_prefix_caching:
            return 0
        return self.tree.match_prefix(token_ids, scope=scope).num_tokens

    def same_block_keys(self, a: Sequence, b: Sequence, num_blocks: int) -> bool:
        """Whether ``a`` and ``b`` key their first ``num_blocks`` blocks alike (same salt where
        salted), i.e. could share those blocks if their tokens agree."""
        return scope_of(a).same_keys(scope_of(b), num_blocks, self.block_size)

    # ---- sequence lifecycle ------------------------------------------------------------------

    def try_admit(self, seq: Sequence, now: float) -> bool:
        """Reuse the cached prefix and allocate blocks for all of ``seq``'s current tokens.

        A cached block that matches only partly is copied into ``seq``'s own block (recorded
        in ``seq.pending_copy``; the source stays referenced until ``release_copy``).
        """
        self._now = now
        tokens = seq.token_ids
        matched, copy_src, num_partial = self._reusable_prefix(seq)
        num_new = self.num_blocks_for(len(tokens)) - len(matched)
        obtainable = self.num_obtainable_blocks()
        needed = num_new + self._num_pinned(matched)
        copy_cost = 0 if copy_src is None else self._num_pinned([copy_src])
        if needed + copy_cost > obtainable:
            # The copy's source costs a block until the copy is done: when that block is the
            # one missing (a prompt filling the whole pool), compute those few tokens instead.
            copy_src, num_partial = None, 0
        if needed > obtainable:
            return False
        pinned = matched + ([copy_src] if copy_src is not None else [])
        self.pool.incref(pinned)
        num_matched_tokens = len(matched) * self.block_size
        self.tree.insert(tokens[:num_matched_tokens], matched, now,
                         self._retentions(seq, 0, len(matched), now), scope_of(seq))
        seq.block_table = matched + self._allocate(num_new, now)
        seq.pending_copy = None if copy_src is None else (copy_src, seq.block_table[len(matched)])
        seq.num_computed_tokens = num_matched_tokens + num_partial
        seq.num_inserted_blocks = len(matched)
        if seq.num_cached_tokens is None:
            seq.num_cached_tokens = seq.num_computed_tokens
        return True

    def release_copy(self, copy: tuple[int, int]) -> None:
        """The block copy was done: drop the reference that kept its source alive."""
        self.pool.decref([copy[0]])

    def try_grow(self, seq: Sequence, now: float) -> bool:
        """Make room for every token of ``seq`` (one more block at most in decode)."""
        num_needed = self.num_blocks_for(len(seq.token_ids)) - len(seq.block_table)
        if num_needed <= 0:
            return True
        if num_needed > self.num_obtainable_blocks():
            return False
        seq.block_table.extend(self._allocate(num_needed, now))
        return True

    def cache_full_blocks(self, seq: Sequence, now: float) -> None:
        """Put newly completed blocks of ``seq`` into the tree, switching to the tree's copies;
        once its prompt is computed, its partly filled last block too (``_cache_tail``)."""
        self._now = now
        if not self.shares_prefixes(seq):
            return
        self._insert_full_blocks(seq, now)
        if seq.num_computed_tokens == seq.num_prompt_tokens:
            self._cache_tail(seq)

    def release(self, seq: Sequence) -> None:
        """Drop ``seq``'s references; cached blocks stay in the tree until evicted, and so does
        its partly filled last block (``_cache_tail``)."""
        if self.shares_prefixes(seq) and seq.block_table:
            self._cache_tail(seq)
        self.pool.decref(seq.block_table)
        seq.block_table = []
        seq.num_computed_tokens = 0
        seq.num_inserted_blocks = 0

    # ---- private helpers ---------------------------------------------------------------------

    def _insert_full_blocks(self, seq: Sequence, now: float) -> None:
        num_full = seq.num_computed_tokens // self.block_size
        start = seq.num_inserted_blocks
        if num_full <= start:
            return
        tokens = seq.token_ids[:num_full * self.block_size]
        # The tree walks from the root; blocks below ``start`` are already there and unchanged.
        retentions = [None] * start + self._retentions(seq, start, num_full, now)
        tree_ids = self.tree.insert(tokens, seq.block_table[:num_full], now, retentions,
                                    scope_of(seq))
        for index in range(start, num_full):
            if tree_ids[index] != seq.block_table[index]:
                self.pool.incref([tree_ids[index]])
                self.pool.decref([seq.block_table[index]])
                seq.block_table[index] = tree_ids[index]
        seq.num_inserted_blocks = num_full

    def _cache_tail(self, seq: Sequence) -> None:
        """Cache the computed tokens of ``seq``'s partly filled block (the tree keeps whole
        blocks only), so an identical prompt, or one that goes on from these tokens, copies
        the block instead of computing them again (forks of one prompt, a reply repeated in the
        next prompt).

        Done when the prompt is computed (requests in flight with the same prompt copy it then)
        and when the sequence ends (prompt and output computed so far). Skipped when the tree
        holds those tokens already: then they may have come from a copy that a request finished
        on admission never ran.
        """
        num_computed = seq.num_computed_tokens
        if num_computed % self.block_size == 0:
            return
        tokens = seq.token_ids[:num_computed]
        scope = scope_of(seq)
        if self.tree.match_prefix(tokens, scope=scope).num_tokens >= num_computed:
            return
        tail_block = seq.block_table[num_computed // self.block_size]
        self.tree.insert_partial(tokens, tail_block, self._now, scope)

    def _reusable_prefix(self, seq: Sequence) -> tuple[list[int], int | None, int]:
        """Whole cached blocks to share, and a block to copy the next ``num_partial`` tokens from.

        A request that samples needs the logits of its last token, so it computes at least it.
        """
        if not self.shares_prefixes(seq):
            return [], None, 0
        tokens = seq.token_ids
        limit = len(tokens) if seq.is_warm_only else len(tokens) - 1
        match = self.tree.match_prefix(tokens, scope=scope_of(seq))
        matched = list(match.block_ids)
        copy_src, num_partial = match.partial_block_id, match.num_partial_tokens
        if len(matched) * self.block_size > limit:
            copy_src = matched.pop()
            num_partial = self.block_size
        num_partial = min(num_partial, limit - len(matched) * self.block_size)
        if num_partial <= 0:
            return matched, None, 0
        return matched, copy_src, num_partial

    def _num_pinned(self, block_ids: list[int]) -> int:
        """Cached blocks that stop being evictable once referenced (only the tree holds them)."""
        return sum(1 for b in block_ids if self.pool.ref_count(b) == 1)

    def _allocate(self, num_blocks: int, now: float) -> list[int]:
        shortfall = num_blocks - self.pool.num_free
        if shortfall > 0:
            self.tree.evict(shortfall, now)
        return self.pool.allocate(num_blocks)

    def _retentions(self, seq: Sequence, first: int, last: int, now: float) -> list[BlockRetention | None]:
        """Explicit retention for blocks [first, last): the prompt range covering the block
        (the last listed range wins), else the decode retention for blocks past the prompt."""
        request = seq.request
        result: list[BlockRetention | None] = []
        for index in range(first, last):
            start, end = index * self.block_size, (index + 1) * self.block_size
            retention = None
            for rng in request.retention_ranges:
                range_end = seq.num_prompt_tokens if rng.end is None else rng.end
                if rng.start < end and start < range_end:
                    retention = _retention(rng.priority, rng.duration_ms, now)
            if retention is None and end > seq.num_prompt_tokens and request.decode_retention_priority is not None:
                retention = _retention(request.decode_retention_priority,
                                       request.decode_retention_duration_ms, now)
            result.append(retention)
        return result


def scope_of(seq: Sequence) -> CacheScope:
    """The prefix-cache scope of ``seq``'s request (its tenant's salt and public prefix)."""
    request = seq.request
    if request.cache_salt is None:
        return UNSCOPED
    return CacheScope(request.cache_salt, request.num_public_tokens)


def _retention(priority: int, duration_ms: int | None, now: float) -> BlockRetention:
    expires_at = None if duration_ms is None else now + duration_ms / 1000.0
    return BlockRetention(priority, expires_at)
