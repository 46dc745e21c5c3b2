"""Token sequences in lexicographic order with O(1) common-prefix lengths (pure).

In sorted order, the common prefix of two sequences is the minimum of the adjacent common
prefixes between them, so a sparse table over adjacent lengths answers any pair in O(1) and
finds the contiguous run of ranks sharing at least L tokens with a given one in O(log n).
"""

from __future__ import annotations

import sys
from array import array
from typing import Sequence


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token sequences (non-negative ids below 2**32)."""
    return _common_of_ints(_as_int(a), len(a), _as_int(b), len(b))


class PrefixIndex:
    """Ranks of ``sequences`` in sorted order and common-prefix queries between ranks."""

    def __init__(self, sequences: Sequence[Sequence[int]],
                 packed: Sequence[bytes] | None = None) -> None:
        """``packed``: the sequences ``pack``ed, where the caller has them already."""
        # NOTE: sorted by packed bytes (memcmp), not by tuples: same order, and comparing
        # tuples that share hundreds of leading tokens was a third of the greedy order's time.
        if packed is None:
            packed = [pack(s) for s in sequences]
        self.order = sorted(range(len(sequences)), key=packed.__getitem__)
        self.rank = [0] * len(sequences)
        for r, i in enumerate(self.order):
            self.rank[i] = r
        self._table = [adjacent_common_packed([packed[i] for i in self.order])]
        step = 1
        while 2 * step <= len(self._table[0]):
            prev = self._table[-1]
            self._table.append(list(map(min, prev[:len(prev) - step], prev[step:])))
            step *= 2
        # (2**level, row, len(row)), deepest level first: the walks above read nothing else.
        self._levels_down = [(1 << level, row, len(row))
                             for level, row in reversed(list(enumerate(self._table)))]

    def __len__(self) -> int:
        return len(self.order)

    def common(self, r1: int, r2: int) -> int:
        """Common prefix length of the sequences at ranks ``r1 < r2``."""
        level = (r2 - r1).bit_length() - 1
        row = self._table[level]
        return min(row[r1], row[r2 - (1 << level)])

    def first_rank_sharing(self, r: int, length: int) -> int:
        """Smallest rank whose sequence shares at least ``length`` tokens with rank ``r``."""
        lo = r
        for step, row, _ in self._levels_down:
            if lo >= step and row[lo - step] >= length:
                lo -= step
        return lo

    def last_rank_sharing(self, r: int, length: int) -> int:
        """Largest rank whose sequence shares at least ``length`` tokens with rank ``r``."""
        hi = r
        for step, row, size in self._levels_down:
            if hi < size and row[hi] >= length:
                hi += step
        return hi


def adjacent_common_prefixes(ranked: Sequence[Sequence[int]]) -> list[int]:
    """Common prefix length of each sequence with the next one."""
    return adjacent_common_packed([pack(s) for s in ranked])


def adjacent_common_packed(ranked: Sequence[bytes]) -> list[int]:
    """``adjacent_common_prefixes`` of sequences given as ``pack``ed bytes."""
    # NOTE: in sorted order a sequence is most often a prefix of the next (every row's call of
    # an operator known only up to an LLM output, or equal prompts): startswith answers those
    # at memcmp speed, and only the others become integers (Trading x 32: 2,720 of 2,815
    # pairs; 5.6 -> 0.6 ms).
    out: list[int] = []
    next_int = None  # ranked[i] as an integer, when the previous pair made it
    for i in range(len(ranked) - 1):
        a, b = ranked[i], ranked[i + 1]
        if b.startswith(a):
            out.append(len(a) >> 2)
            next_int = None
            continue
        a_int = next_int if next_int is not None else int.from_bytes(a, "big")
        next_int = int.from_bytes(b, "big")
        out.append(_common_of_ints(a_int, len(a) >> 2, next_int, len(b) >> 2))
    return out


def pack(tokens: Sequence[int]) -> bytes:
    """Tokens as big-endian 32-bit words: bytes order is the token sequences' order."""
    packed = array("I", tokens)
    if sys.byteorder == "little":
        packed.byteswap()
    return packed.tobytes()


def _as_int(tokens: Sequence[int]) -> int:
    # NOTE: one big integer per sequence, 32 bits a token, first token most significant: XOR
    # then bit_length finds the first differing token at C speed (a Python loop was 90% of
    # the greedy order's time on Trading x 32 rows).
    return int.from_bytes(pack(tokens), "big")


def _common_of_ints(a: int, len_a: int, b: int, len_b: int) -> int:
    n = min(len_a, len_b)
    diff = (a >> 32 * (len_a - n)) ^ (b >> 32 * (len_b - n))
    return n - (diff.bit_length() + 31) // 32
