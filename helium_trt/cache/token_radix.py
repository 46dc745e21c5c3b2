"""Token-level prefix tree over KV blocks, with retention priorities and LRU eviction.

Maps prompt prefixes to the KV blocks that hold them so requests sharing a prefix share blocks
without copying. Eviction follows TensorRT-LLM's KvCacheRetentionConfig semantics: lowest
retention priority first, then least recently used; a priority set with a duration expires back
to the default; the latest explicit priority set on a block wins. Pure: time comes in as ``now``.

A CacheScope keeps tenants apart: a salted block is keyed by its salt and its tokens, so only
sequences with the same salt ever match it (vLLM's ``cache_salt``, TensorRT-LLM's
``cache_salt_id``), while blocks inside a scope's public prefix are keyed by tokens alone.
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
class CacheScope:
    """Whose cache a token sequence is matched in and cached into.

    A block that ends past the first ``num_public_tokens`` tokens is keyed by ``salt`` as well
    as its tokens; blocks wholly inside those tokens (a prefix the operator made public) are
    keyed by their tokens alone and shared by every scope. ``salt`` None salts nothing.
    """

    salt: str | None = None
    num_public_tokens: int = 0

    def salt_of_block(self, index: int, block_size: int) -> str | None:
        if self.salt is None or (index + 1) * block_size <= self.num_public_tokens:
            return None
        return self.salt

    def same_keys(self, other: CacheScope, num_blocks: int, block_size: int) -> bool:
        """Whether both scopes key the first ``num_blocks`` blocks of a sequence alike."""
        def shape(scope: CacheScope) -> tuple:  # (salt of the salted blocks, unsalted blocks)
            num_public = min(scope.num_public_tokens // block_size, num_blocks)
            if scope.salt is None or num_public == num_blocks:
                return (None, num_blocks)
            return (scope.salt, num_public)
        return shape(self) == shape(other)


UNSCOPED = CacheScope()


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
    version: int = 0  # bumped on each push to the eviction heap; -1 once removed


class TokenRadixTree:
    """Prefix tree whose every edge is exactly one full block of tokens.

    NOTE: edges are one block long instead of compressed runs of blocks. A compressed radix
    tree saves nodes, but retention priorities, recency and eviction are all per block, so a
    compressed edge would have to be split whenever they differ; chains of one-block nodes keep
    every operation per block and a child lookup is one dict probe on the block's token tuple.
    Matching is still token-level: the block after the last full match may match partially.

    A leaf may also hold a partly filled block (``insert_partial``): the tail of a sequence that
    ended mid-block. Its key is shorter than a block, so it is never walked through, only
    matched token by token as the partial block of ``match_prefix`` (to be copied).

    The tree holds one pool reference per cached block; a block is evictable when only the tree
    references it and no cached block hangs below it.

    NOTE: eviction candidates live in a heap kept across calls and validated lazily, instead of
    a heap of every cached leaf built per call: with the pool full of cached prefixes every
    allocation evicts, and that build cost O(cached blocks) each time (a 512 MB pool of the
    tiny model: 25 ms a call). A leaf is pushed when it appears, becomes a leaf, or gets a new
    priority; an entry is checked when popped: dropped if superseded or no longer a leaf,
    pushed again with its new key if the block was used since (keys only grow by use), kept
    aside for the next call if a request still holds the block. A priority with an expiry gets
    a second entry under the default priority, valid from the expiry on.
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
        # (priority, last access, push order, node version, node): see the class NOTE.
        self._heap: list[tuple[int, float, int, int, _Node]] = []
        self._num_pushes = 0

    # ---- public API ------------------------------------------------------------------------

    @property
    def num_cached_blocks(self) -> int:
        return len(self._nodes_by_block)

    def match_prefix(self, token_ids: list[int] | tuple[int, ...], now: float | None = None,
                     scope: CacheScope = UNSCOPED) -> PrefixMatch:
        """Longest prefix of ``token_ids`` cached in ``scope``; with ``now`` the matched blocks
        count as used."""
        block_ids: list[int] = []
        node = self._root
        for key in self._block_keys(token_ids, scope):
            child = node.children.get(key)
            if child is None:
                break
            node = child
            block_ids.append(child.block_id)
            if now is not None:
                child.last_access = now
        num_block_tokens = len(block_ids) * self.block_size
        salt = scope.salt_of_block(len(block_ids), self.block_size)
        partial_block_id, num_partial = self._match_partial(node, token_ids[num_block_tokens:], salt)
        return PrefixMatch(tuple(block_ids), num_block_tokens, partial_block_id, num_partial)

    def insert(
        self,
        token_ids: list[int] | tuple[int, ...],
        block_ids: list[int] | tuple[int, ...],
        now: float,
        retentions: list[BlockRetention | None] | None = None,
        scope: CacheScope = UNSCOPED,
    ) -> list[int]:
        """Cache whole blocks in ``scope``: ``block_ids[i]`` holds tokens ``[i*bs, (i+1)*bs)`` of
        ``token_ids``.

        Returns the tree's block id for each position. Where the tree already held a block for
        that prefix it keeps its own and the caller should switch to it (and release its copy).
        ``retentions[i]`` (when not None) overrides block i's priority: the latest one wins.
        """
        keys = self._block_keys(token_ids, scope)
        if len(keys) < len(block_ids):
            raise ValueError(f"{len(block_ids)} blocks but only {len(keys)} full blocks of tokens")
        node = self._root
        tree_block_ids: list[int] = []
        changed: list[_Node] = []  # new or re-prioritized: (re)enter the eviction heap as leaves
        for index, block_id in enumerate(block_ids):
            key = keys[index]
            child = node.children.get(key)
            if child is None:
                tail = self._nodes_by_block.get(block_id)
                if tail is not None and self._is_tail(tail):  # filled up: its reference moves here
                    self._detach(tail)
                else:
                    self.pool.incref([block_id])
                    self.pool.mark_cached(block_id)
                child = _Node(parent=node, key=key, block_id=block_id, last_access=now,
                              priority=self.default_priority)
                node.children[key] = child
                self._nodes_by_block[block_id] = child
                changed.append(child)
            child.last_access = now
            retention = retentions[index] if retentions is not None else None
            if retention is not None:
                child.priority = retention.priority
                child.expires_at = retention.expires_at
                changed.append(child)
            tree_block_ids.append(child.block_id)
            node = child
        for child in changed:
            if not child.children and child.version >= 0:
                self._push(child)
        return tree_block_ids

    def insert_partial(self, token_ids: list[int] | tuple[int, ...], block_id: int, now: float,
                       scope: CacheScope = UNSCOPED) -> bool:
        """Cache ``block_id`` as holding the tokens of ``token_ids`` past its last whole block
        (fewer than a block), below the cached whole blocks before them. False (nothing
        cached) when those blocks are not all in the tree, or a cached tail holds these tokens
        already.

        A tail that this one extends is replaced (the same block grown, or another block with
        fewer of these tokens); tails that differ from it stay side by side.
        """
        keys = self._block_keys(token_ids, scope)
        node = self._root
        for key in keys:
            node = node.children.get(key)
            if node is None:
                return False
        tail = tuple(token_ids[len(keys) * self.block_size:])
        salt = scope.salt_of_block(len(keys), self.block_size)
        if not tail:
            return False
        tails = [child for child in node.children.values()
                 if self._is_tail(child) and _split_key(child.key)[0] == salt]
        for other in tails:
            other_tail = _split_key(other.key)[1]
            if other_tail[:len(tail)] == tail:
                return False  # holds all of these tokens already
        cached = self._nodes_by_block.get(block_id)
        if cached is not None and cached not in tails:
            return False  # the block is cached elsewhere (never for a sequence's own tail)
        moved = False  # the tree's reference to block_id passes from its old tail to the new one
        for other in tails:
            if other.block_id == block_id:
                self._detach(other)
                moved = True
            elif tail[:len(_split_key(other.key)[1])] == _split_key(other.key)[1]:
                self._remove_leaf(other)
                self.pool.decref([other.block_id])
        if not moved:
            self.pool.incref([block_id])
            self.pool.mark_cached(block_id)
        child = _Node(parent=node, key=tail if salt is None else (salt, *tail), block_id=block_id,
                      last_access=now, priority=self.default_priority)
        node.children[child.key] = child
        self._nodes_by_block[block_id] = child
        self._push(child)
        return True

    def num_evictable(self) -> int:
        """Blocks that eviction could free now (held by nobody but the tree)."""
        return self.pool.num_cached_unshared

    def evict(self, num_blocks: int, now: float) -> list[int]:
        """Free up to ``num_blocks`` unreferenced leaf blocks, lowest priority then LRU first."""
        freed: list[int] = []
        held: list[tuple] = []  # entries of blocks still in use: back in the heap afterwards
        while self._heap and len(freed) < num_blocks:
            entry = heapq.heappop(self._heap)
            verdict = self._check(entry, now)
            node = entry[-1]
            if verdict == "evict":
                parent = node.parent
                self._remove_leaf(node)
                freed.extend(self.pool.decref([node.block_id]))
                if parent is not self._root and not parent.children:
                    self._push(parent)
            elif verdict == "hold":
                held.append(entry)
            elif verdict == "rekey":
                self._push(node)
        for entry in held:
            heapq.heappush(self._heap, entry)
        return freed

    def retention_of(self, block_id: int, now: float) -> int | None:
        """Effective priority of a cached block at ``now``; None if it is not cached."""
        node = self._nodes_by_block.get(block_id)
        return None if node is None else self._effective_priority(node, now)

    # ---- private helpers ---------------------------------------------------------------------

    def _block_keys(self, token_ids: list[int] | tuple[int, ...],
                    scope: CacheScope) -> list[tuple]:
        """One key per full block: its tokens, led by its salt where the scope salts it (a salt
        is a str, never a token id, so a salted key cannot equal an unsalted one)."""
        size = self.block_size
        if scope.salt is None:
            return [tuple(token_ids[i:i + size]) for i in range(0, len(token_ids) - size + 1, size)]
        keys: list[tuple] = []
        for index, start in enumerate(range(0, len(token_ids) - size + 1, size)):
            tokens = tuple(token_ids[start:start + size])
            salt = scope.salt_of_block(index, size)
            keys.append(tokens if salt is None else (salt, *tokens))
        return keys

    def _match_partial(self, node: _Node, rest: list[int] | tuple[int, ...],
                       salt: str | None) -> tuple[int | None, int]:
        """The child sharing the most leading tokens with ``rest`` among those keyed with
        ``salt`` (a partial match is copied, so it must not cross scopes either)."""
        best_block_id, best_len = None, 0
        for key, child in node.children.items():
            key_salt, tokens = _split_key(key)
            if key_salt != salt:
                continue
            common = 0
            for a, b in zip(tokens, rest):
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

    def _push(self, node: _Node) -> None:
        """(Re)enter ``node`` in the eviction heap under its current keys, superseding its
        older entries; rebuild the heap once stale entries outnumber live ones."""
        node.version += 1
        self._num_pushes += 1
        heapq.heappush(self._heap, (node.priority, node.last_access, self._num_pushes, node.version, node))
        if node.expires_at is not None and node.priority != self.default_priority:
            self._num_pushes += 1
            heapq.heappush(self._heap, (self.default_priority, node.last_access, self._num_pushes,
                                        node.version, node))
        if len(self._heap) > 2 * len(self._nodes_by_block) + 64:
            self._heap = []
            for leaf in [n for n in self._nodes_by_block.values() if not n.children]:
                self._push(leaf)

    def _check(self, entry: tuple, now: float) -> str:
        """What a popped heap entry means now: "evict", "hold" (keep for later), "rekey" (push
        the node again under its new key) or "drop"."""
        priority, last_access, _, version, node = entry
        if version != node.version or node.children:
            return "drop"  # superseded, removed, or no longer a leaf (pushed again when it is)
        if last_access != node.last_access:
            return "rekey"  # used since: its key only grew
        if (priority, last_access) != self._eviction_key(node, now):
            # The entry for the other side of the priority's expiry: the explicit priority's
            # entry is spent once expired; the default one becomes valid at the expiry.
            return "drop" if priority == node.priority else "hold"
        return "evict" if self.pool.ref_count(node.block_id) == 1 else "hold"

    def _remove_leaf(self, node: _Node) -> None:
        self.pool.unmark_cached(node.block_id)
        node.version = -1
        del node.parent.children[node.key]
        del self._nodes_by_block[node.block_id]

    def _is_tail(self, node: _Node) -> bool:
        return len(_split_key(node.key)[1]) < self.block_size

    def _detach(self, node: _Node) -> None:
        """Unlink a cached tail whose block (and the tree's reference to it) a new node takes."""
        node.version = -1
        del node.parent.children[node.key]


def _split_key(key: tuple) -> tuple[str | None, tuple]:
    """(salt or None, tokens) of a node key (a salt is a str, never a token id)."""
    if key and isinstance(key[0], str):
        return key[0], key[1:]
    return None, key
