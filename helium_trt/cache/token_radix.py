"""Token-level prefix tree over KV blocks, with retention priorities and LRU eviction.

Maps prompt prefixes to the KV blocks that hold them so requests sharing a prefix share blocks
without copying. Eviction follows TensorRT-LLM's KvCacheRetentionConfig semantics: lowest
retention priority first, then least recently used; a priority set with a duration expires back
to the default; the latest explicit priority set on a block wins. Pure: time comes in as ``now``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from helium_trt.cache.block_pool import BlockPool

DEFAULT_PRIORITY = 35


@dataclass(frozen=True, slots=True)
class BlockRetention:
    """An explicit retention priority for one block; ``expires_at`` None means never."""

    priority: int
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """Result of matching a token sequence against the tree.

    ``block_ids`` hold the first ``num_block_tokens`` tokens (whole blocks). The next block may
    match partially: ``partial_block_id`` then holds ``num_partial_tokens`` more leading tokens
    (usable by copying that block, since its tail belongs to another sequence).
    """

    block_ids: tuple[int, ...]
    num_block_tokens: int
    partial_block_id: int | None = None
    num_partial_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return self.num_block_tokens + self.num_partial_tokens


@dataclass(slots=True, eq=False)
class _Node:
    parent: _Node | None
    key: tuple[int, ...]
    block_id: int | None
    last_access: float
    priority: int = DEFAULT_PRIORITY
    expires_at: float | None = None
    children: dict[tuple[int, ...], _Node] = field(default_factory=dict)


class TokenRadixTree:
    """Prefix tree whose every edge is exactly one full block of tokens.

    NOTE: edges are one block long instead of compressed runs of blocks. A compressed radix
    tree saves nodes, but retention priorities, recency and eviction are all per block, so a
    compressed edge would have to be split whenever they differ; chains of one-block nodes keep
    every operation per block and a child lookup is one dict probe on the block's token tuple.
    Matching is still token-level: the block after the last full match may match partially.

    The tree holds one pool reference per cached block; a block is evictable when only the tree
    references it and no cached block hangs below it.
    """

    def __init__(self, pool: BlockPool, block_size: int, default_priority: int = DEFAULT_PRIORITY):
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.pool = pool
        self.block_size = block_size
        self.default_priority = default_priority
        self._root = _Node(parent=None, key=(), block_id=None, last_access=0.0)
        self._nodes_by_block: dict[int, _Node] = {}
        self._insert_order = 0

    # ---- public API ------------------------------------------------------------------------

    @property
    def num_cached_blocks(self) -> int:
        return len(self._nodes_by_block)

    def match_prefix(self, token_ids: list[int] | tuple[int, ...], now: float | None = None) -> PrefixMatch:
        """Longest cached prefix of ``token_ids``; with ``now`` the matched blocks count as used."""
        block_ids: list[int] = []
        node = self._root
        for key in self._block_keys(token_ids):
            child = node.children.get(key)
            if child is None:
                break
            node = child
            block_ids.append(child.block_id)
            if now is not None:
                child.last_access = now
        num_block_tokens = len(block_ids) * self.block_size
        partial_block_id, num_partial = self._match_partial(node, token_ids[num_block_tokens:])
        return PrefixMatch(tuple(block_ids), num_block_tokens, partial_block_id, num_partial)

    def insert(
        self,
        token_ids: list[int] | tuple[int, ...],
        block_ids: list[int] | tuple[int, ...],
        now: float,
        retentions: list[BlockRetention | None] | None = None,
    ) -> list[int]:
        """Cache whole blocks: ``block_ids[i]`` holds tokens ``[i*bs, (i+1)*bs)`` of ``token_ids``.

        Returns the tree's block id for each position. Where the tree already held a block for
        that prefix it keeps its own and the caller should switch to it (and release its copy).
        ``retentions[i]`` (when not None) overrides block i's priority: the latest one wins.
        """
        keys = self._block_keys(token_ids)
        if len(keys) < len(block_ids):
            raise ValueError(f"{len(block_ids)} blocks but only {len(keys)} full blocks of tokens")
        node = self._root
        tree_block_ids: list[int] = []
        for index, block_id in enumerate(block_ids):
            key = keys[index]
            child = node.children.get(key)
            if child is None:
                self.pool.incref([block_id])
                child = _Node(parent=node, key=key, block_id=block_id, last_access=now,
                              priority=self.default_priority)
                node.children[key] = child
                self._nodes_by_block[block_id] = child
            child.last_access = now
            retention = retentions[index] if retentions is not None else None
            if retention is not None:
                child.priority = retention.priority
                child.expires_at = retention.expires_at
            tree_block_ids.append(child.block_id)
            node = child
        return tree_block_ids

    def num_evictable(self) -> int:
        """Blocks that eviction could free now (held by nobody but the tree)."""
        ref_count = self.pool.ref_count
        return sum(1 for block_id in self._nodes_by_block if ref_count(block_id) == 1)

    def evict(self, num_blocks: int, now: float) -> list[int]:
        """Free up to ``num_blocks`` unreferenced leaf blocks, lowest priority then LRU first."""
        heap = [(self._eviction_key(n, now), id(n), n) for n in self._evictable_leaves()]
        heapq.heapify(heap)
        freed: list[int] = []
        while heap and len(freed) < num_blocks:
            _, _, node = heapq.heappop(heap)
            parent = node.parent
            self._remove_leaf(node)
            freed.extend(self.pool.decref([node.block_id]))
            if parent is not self._root and self._is_evictable_leaf(parent):
                heapq.heappush(heap, (self._eviction_key(parent, now), id(parent), parent))
        return freed

    def retention_of(self, block_id: int, now: float) -> int | None:
        """Effective priority of a cached block at ``now``; None if it is not cached."""
        node = self._nodes_by_block.get(block_id)
        return None if node is None else self._effective_priority(node, now)

    # ---- private helpers ---------------------------------------------------------------------

    def _block_keys(self, token_ids: list[int] | tuple[int, ...]) -> list[tuple[int, ...]]:
        size = self.block_size
        return [tuple(token_ids[i:i + size]) for i in range(0, len(token_ids) - size + 1, size)]

    def _match_partial(self, node: _Node, rest: list[int] | tuple[int, ...]) -> tuple[int | None, int]:
        best_block_id, best_len = None, 0
        for key, child in node.children.items():
            common = 0
            for a, b in zip(key, rest):
                if a != b:
                    break
                common += 1
            if common > best_len:
                best_block_id, best_len = child.block_id, common
        return best_block_id, best_len

    def _effective_priority(self, node: _Node, now: float) -> int:
        if node.expires_at is not None and now >= node.expires_at:
            return self.default_priority
        return node.priority

    def _eviction_key(self, node: _Node, now: float) -> tuple[int, float]:
        """Eviction policy in one place: lowest effective priority, then oldest access."""
        return (self._effective_priority(node, now), node.last_access)

    def _is_evictable_leaf(self, node: _Node) -> bool:
        return not node.children and self.pool.ref_count(node.block_id) == 1

    def _evictable_leaves(self) -> list[_Node]:
        return [n for n in self._nodes_by_block.values() if self._is_evictable_leaf(n)]

    def _remove_leaf(self, node: _Node) -> None:
        del node.parent.children[node.key]
        del self._nodes_by_block[node.block_id]
