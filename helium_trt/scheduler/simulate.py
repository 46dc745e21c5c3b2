"""A simulated engine for the cost model: a block-granular token prefix cache with LRU (pure).

Mirrors what the real engines do closely enough to rank orders: full blocks of a prompt are
cached under a key chained from their prefix, a lookup matches whole leading blocks, and the
least recently used blocks are evicted past ``capacity_blocks``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Sequence


class SimulatedCache:
    def __init__(self, block_size: int, capacity_blocks: int) -> None:
        self.block_size = block_size
        self.capacity_blocks = capacity_blocks
        # Keys in eviction order, least recently used first. NOTE: an OrderedDict rather than
        # a sort per insert: sorting every block on each insert once full cost 1.5 s of a
        # Trading x 32 rows schedule.
        self._lru: OrderedDict[int, None] = OrderedDict()

    def copy(self) -> "SimulatedCache":
        other = SimulatedCache(self.block_size, self.capacity_blocks)
        other._lru = self._lru.copy()
        return other

    def num_resident(self, tokens: Sequence[int]) -> int:
        """Leading tokens of ``tokens`` cached now (whole blocks)."""
        return self.num_resident_keys(block_keys(tokens, self.block_size))

    def insert(self, tokens: Sequence[int]) -> int:
        """Cache every full block of ``tokens``; returns how many leading tokens were resident."""
        return self.insert_keys(block_keys(tokens, self.block_size))

    def num_resident_keys(self, keys: Iterable[int]) -> int:
        """``num_resident`` of the tokens whose ``block_keys`` are ``keys``."""
        return self._num_resident_keys(keys) * self.block_size

    def insert_keys(self, keys: Sequence[int]) -> int:
        """``insert`` of the tokens whose ``block_keys`` are ``keys``."""
        resident = self._num_resident_keys(keys) * self.block_size
        # Deeper blocks of one insert look older: a prefix outlives its extensions (leaf-first).
        lru = self._lru
        for key in reversed(keys):
            lru[key] = None
            lru.move_to_end(key)
        while len(lru) > self.capacity_blocks:
            lru.popitem(last=False)
        return resident

    def __len__(self) -> int:
        return len(self._lru)

    def _num_resident_keys(self, keys: Iterable[int]) -> int:
        n = 0
        for key in keys:
            if key not in self._lru:
                break
            n += 1
        return n


def block_keys(tokens: Sequence[int], block_size: int, start: int = 0,
               keys: Sequence[int] = ()) -> list[int]:
    """A key per full block of ``tokens``, chained from the blocks before it.

    ``keys`` may hold the keys of ``tokens[:start]`` already (``start`` a block boundary):
    the chain continues from them.
    """
    out = list(keys)
    key = out[-1] if out else 0
    for begin in range(start, len(tokens) - block_size + 1, block_size):
        key = hash((key, tuple(tokens[begin:begin + block_size])))
        out.append(key)
    return out


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


def prefill_minimum(calls: Iterable[tuple[Sequence[int], Sequence[int]]]) -> int:
    """The least prefill that (prompt, output) ``calls`` need on an engine that reuses the KV
    of every token it has computed, decoded tokens included.

    Every distinct prompt token (a node of the prompts' token trie) is computed at least once,
    by a prefill or by decoding: a call that decodes ``o1..on`` after prompt ``p`` computes the
    KV of ``p + o1..ok`` for k < n (the last token is sampled, never fed back). A later prompt
    that repeats a reply (a chat's history, a transcript) needs no prefill for those nodes.
    So the bound is the prompt trie's size less its nodes some call decoded; in whatever order
    the calls run, a prompt node that no call decoded must be prefilled once.
    """
    calls = list(calls)
    root: list = [{}, False]  # a node: [children by token, some call decoded it]
    size = 0
    for prompt, _ in calls:
        node = root
        for token in prompt:
            child = node[0].get(token)
            if child is None:
                child = node[0][token] = [{}, False]
                size += 1
            node = child
    for prompt, output in calls:
        node = root
        for token in prompt:
            node = node[0][token]
        for token in tuple(output)[:-1]:
            node = node[0].get(token)
            if node is None:  # past every prompt: nothing below counts
                break
            if not node[1]:
                node[1] = True
                size -= 1
    return size
