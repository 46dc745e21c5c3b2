"""Token ids of a workflow's static text, kept across a server's runs.

Every run of a workflow tokenizes the static prefix of each LLM operator's prompt (system
prompts, instructions, the chat template's framing up to the first value) and the literal
segments its estimates count. That text is the same in every request of the workflow and its
ids depend only on the model's tokenizer, so a server keeps them between runs: per model (its
tokenizer object too, so another tokenizer under the same name starts afresh) and per cache
scope (a tenant's ``cache_salt``), so one tenant's text never answers, or times, another's.
Only static text goes in: row values and LLM outputs stay in the run's own memo.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Iterable

# What one scope may hold, counted as characters of text plus token ids (about 10 MB of
# Python objects), and how many scopes (model x tenant) are kept, least recently used first out.
MAX_SCOPE_SIZE = 1 << 20
MAX_SCOPES = 16


class StaticTokens:
    """One (model, cache scope)'s memo: stable prefixes of static texts, the encoded chunks
    between control tokens that computing them filled in (a run seeds its chunk memo from
    them), and plain-text encodings.

    NOTE: emptied whole when full, not evicted entry by entry: a workflow's static text is a
    few hundred KB at most, so only a flood of distinct workflows fills it, and then each is
    tokenized as if nothing were kept.
    """

    def __init__(self, tokenizer, max_size: int = MAX_SCOPE_SIZE) -> None:
        self.tokenizer = tokenizer
        self.max_size = max_size
        self._clear()

    def chunks(self) -> dict:
        """A copy of the encoded chunks, for a run's own chunk memo."""
        return dict(self._chunks)

    def prefix(self, text: str) -> tuple[int, ...] | None:
        return self._prefixes.get(text)

    def text(self, text: str) -> tuple[int, ...] | None:
        return self._texts.get(text)

    def add_prefix(self, text: str, ids: tuple[int, ...], chunks: Iterable[tuple]) -> None:
        """``ids``: the stable prefix of static ``text``; ``chunks``: (key, ids) pairs its
        encoding put in a chunk memo."""
        chunks = list(chunks)
        if not self._fits(len(text) + len(ids) + sum(len(k[0]) + len(v) for k, v in chunks)):
            return
        self._prefixes[text] = ids
        self._chunks.update(chunks)

    def add_text(self, text: str, ids: tuple[int, ...]) -> None:
        if self._fits(len(text) + len(ids)):
            self._texts[text] = ids

    @property
    def size(self) -> int:
        return self._size

    def _fits(self, size: int) -> bool:
        if size > self.max_size:
            return False
        if self._size + size > self.max_size:
            self._clear()
        self._size += size
        return True

    def _clear(self) -> None:
        # NOTE: new dicts, not clear(): a run copying the chunks in another thread keeps
        # the old ones whole.
        self._chunks: dict = {}
        self._prefixes: dict[str, tuple[int, ...]] = {}
        self._texts: dict[str, tuple[int, ...]] = {}
        self._size = 0


class StaticTokenScopes:
    """StaticTokens per (model name, cache salt), the most recently used ``max_scopes``."""

    def __init__(self, max_scopes: int = MAX_SCOPES, max_size: int = MAX_SCOPE_SIZE) -> None:
        self.max_scopes = max_scopes
        self.max_size = max_size
        self._scopes: OrderedDict[tuple[str, str | None], StaticTokens] = OrderedDict()
        self._lock = threading.Lock()  # runs are planned in worker threads

    def scope(self, model: str, cache_salt: str | None, tokenizer) -> StaticTokens:
        """The memo of ``model``'s static text in ``cache_salt``'s scope, for ``tokenizer``."""
        key = (model, cache_salt)
        with self._lock:
            found = self._scopes.get(key)
            if found is None or found.tokenizer is not tokenizer:
                found = self._scopes[key] = StaticTokens(tokenizer, self.max_size)
            self._scopes.move_to_end(key)
            while len(self._scopes) > self.max_scopes:
                self._scopes.popitem(last=False)
            return found

    def __len__(self) -> int:
        return len(self._scopes)
