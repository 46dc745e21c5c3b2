"""Paged KV block pool: which fixed-size KV blocks are free and who references the rest.

Pure bookkeeping over block ids ``0 .. num_blocks - 1``; the tensors live in the engine. A block
is free exactly when its reference count is zero. Holders are running requests and the prefix
tree (one reference per cached block).

The pool also counts the cached blocks that only the cache references (``mark_cached``), as
reference counts change: the KV manager asks for that count on every admission and growth,
and counting it by walking every cached block cost O(pool) each time (a 512 MB pool of the
tiny model full of cached prefixes: 10 ms a call).
"""

from __future__ import annotations

from helium_trt.errors import ResourceExhaustedError


class BlockPool:
    """Reference-counted allocator of KV block ids.

    NOTE: the free list is a plain list used as a stack (LIFO), not a deque: recently freed
    blocks are handed out first, which keeps the working set of KV memory small and hot in the
    CPU caches, and allocation order stays deterministic so tests can assert exact block ids.
    """

    def __init__(self, num_blocks: int):
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self.num_blocks = num_blocks
        self._ref_counts = [0] * num_blocks
        # Reversed so that a fresh pool hands out 0, 1, 2, ... in order.
        self._free_block_ids = list(range(num_blocks - 1, -1, -1))
        self._is_cached = bytearray(num_blocks)
        self._num_cached_unshared = 0

    # ---- public API ------------------------------------------------------------------------

    @property
    def num_free(self) -> int:
        return len(self._free_block_ids)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free_block_ids)

    @property
    def num_cached_unshared(self) -> int:
        """Blocks marked cached whose only reference is the cache's (it could free them)."""
        return self._num_cached_unshared

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= len(self._free_block_ids)

    def allocate(self, num_blocks: int) -> list[int]:
        """Take ``num_blocks`` free blocks, each with reference count 1."""
        if num_blocks > len(self._free_block_ids):
            raise ResourceExhaustedError(
                f"KV pool: {num_blocks} blocks requested, {len(self._free_block_ids)} free"
            )
        block_ids = [self._free_block_ids.pop() for _ in range(num_blocks)]
        for block_id in block_ids:
            self._ref_counts[block_id] = 1
        return block_ids

    def incref(self, block_ids: list[int] | tuple[int, ...]) -> None:
        for block_id in block_ids:
            count = self._ref_counts[block_id]
            if count <= 0:
                raise ValueError(f"block {block_id} is free; allocate it before sharing it")
            self._ref_counts[block_id] = count + 1
            if count == 1 and self._is_cached[block_id]:
                self._num_cached_unshared -= 1

    def decref(self, block_ids: list[int] | tuple[int, ...]) -> list[int]:
        """Drop one reference from each block; returns the blocks that became free."""
        freed: list[int] = []
        for block_id in block_ids:
            count = self._ref_counts[block_id]
            if count <= 0:
                raise ValueError(f"block {block_id} released more often than referenced")
            self._ref_counts[block_id] = count - 1
            if count == 1:
                self._free_block_ids.append(block_id)
                freed.append(block_id)
                if self._is_cached[block_id]:  # freed while still marked: it is no longer cached
                    self._is_cached[block_id] = 0
                    self._num_cached_unshared -= 1
            elif count == 2 and self._is_cached[block_id]:
                self._num_cached_unshared += 1
        return freed

    def mark_cached(self, block_id: int) -> None:
        """``block_id`` (referenced) now holds a cached prefix: count it while unshared."""
        if self._ref_counts[block_id] <= 0:
            raise ValueError(f"block {block_id} is free; only a referenced block can be cached")
        if not self._is_cached[block_id]:
            self._is_cached[block_id] = 1
            self._num_cached_unshared += self._ref_counts[block_id] == 1

    def unmark_cached(self, block_id: int) -> None:
        """``block_id`` left the cache (call before dropping the cache's reference)."""
        if self._is_cached[block_id]:
            self._is_cached[block_id] = 0
            self._num_cached_unshared -= self._ref_counts[block_id] == 1

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]
