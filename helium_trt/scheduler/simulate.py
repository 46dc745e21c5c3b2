"""A simulated engine for the cost model: a block-granular token prefix cache with LRU (pure).

Mirrors what the real engines do closely enough to rank orders: full blocks of a prompt are
cached under a key chained from their prefix, a lookup matches whole leading blocks, and the
least recently used blocks are evicted past ``capacity_blocks``.
"""

from __future__ import annotations

from typing import Iterable, Sequence


class SimulatedCache:
    def __init__(self, block_size: int, capacity_blocks: int) -> None:
        self.block_size = block_size
        self.capacity_blocks = capacity_blocks
        self._last_use: dict[int, tuple[int, int]] = {}
        self._clock = 0

    def copy(self) -> "SimulatedCache":
        other = SimulatedCache(self.block_size, self.capacity_blocks)
        other._last_use = dict(self._last_use)
        other._clock = self._clock
        return other

    def num_resident(self, tokens: Sequence[int]) -> int:
        """Leading tokens of ``tokens`` cached now (whole blocks)."""
        n = 0
        for key in self._block_keys(tokens):
            if key not in self._last_use:
                break
            n += self.block_size
        return n

    def insert(self, tokens: Sequence[int]) -> int:
        """Cache every full block of ``tokens``; returns how many leading tokens were resident."""
        self._clock += 1
        resident = self.num_resident(tokens)
        # Deeper blocks of one insert look older: a prefix outlives its extensions (leaf-first).
        for depth, key in enumerate(self._block_keys(tokens)):
            self._last_use[key] = (self._clock, -depth)
        self._evict()
        return resident

    def __len__(self) -> int:
        return len(self._last_use)

    def _block_keys(self, tokens: Sequence[int]) -> Iterable[int]:
        key = 0
        bs = self.block_size
        for start in range(0, len(tokens) - bs + 1, bs):
            key = hash((key, tuple(tokens[start:start + bs])))
            yield key

    def _evict(self) -> None:
        excess = len(self._last_use) - self.capacity_blocks
        if excess <= 0:
            return
        victims = sorted(self._last_use, key=self._last_use.__getitem__)[:excess]
        for key in victims:
            del self._last_use[key]


def trie_size(sequences: Iterable[Sequence[int]]) -> int:
    """Nodes of the token trie of ``sequences``: every distinct prompt token counted once.

    This is the least prefill any order and placement could do for these prompts.
    """
    root: dict = {}
    size = 0
    for seq in sequences:
        node = root
        for token in seq:
            child = node.get(token)
            if child is None:
                child = node[token] = {}
                size += 1
            node = child
    return size


def unknown_tail(index: int, length: int) -> tuple[int, ...]:
    """Stand-in tokens for a call's run-time part: unique per call, never matching real ids."""
    base = -(index + 1) * 1_000_000
    return tuple(range(base, base - length, -1))
