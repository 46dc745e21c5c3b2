"""Prompt prefixes an operator made public: their KV blocks are shared by every tenant (pure).

Tenants' KV blocks are salted apart (token_radix.CacheScope). The static prefixes of the
workflows an operator publishes (`serve --public-workflow FILE`) are the exception: a prompt's
leading tokens that agree with a public prefix are keyed without salt, so one copy serves every
tenant. Nothing a tenant sends can make anything public: a prompt only ever shares tokens the
operator's own workflow files already start with, and everything after them stays salted.
"""

from __future__ import annotations

import threading
from typing import Iterable, Sequence


class PublicPrefixes:
    """A set of public token prefixes; safe to read from planning threads while one is added."""

    def __init__(self, prefixes: Iterable[Sequence[int]] = ()) -> None:
        self._lock = threading.Lock()
        self._prefixes: tuple[tuple[int, ...], ...] = ()
        for prefix in prefixes:
            self.add(prefix)

    def add(self, prefix: Sequence[int]) -> None:
        prefix = tuple(prefix)
        with self._lock:
            if prefix and prefix not in self._prefixes:
                self._prefixes = (*self._prefixes, prefix)

    def replace(self, prefixes: Iterable[Sequence[int]]) -> None:
        """Make exactly ``prefixes`` public (the operator's files were read again)."""
        found = tuple(dict.fromkeys(tuple(p) for p in prefixes if p))
        with self._lock:
            self._prefixes = found

    def num_public_tokens(self, prompt: Sequence[int]) -> int:
        """How many leading tokens of ``prompt`` agree with some public prefix (the longest
        agreement; 0 when none starts like it)."""
        best = 0
        for prefix in self._prefixes:  # an immutable snapshot: no lock needed to read it
            if not prompt or prefix[0] != prompt[0]:
                continue
            n = 0
            for a, b in zip(prefix, prompt):
                if a != b:
                    break
                n += 1
            best = max(best, n)
        return best

    def __len__(self) -> int:
        return len(self._prefixes)
