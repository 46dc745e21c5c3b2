"""Prompt-result cache: exact (model, prompt text, deterministic config) -> output text (pure).

Bounded by bytes with least-recently-used eviction. It satisfies the optimizer's
``PromptResultCache`` protocol (``lookup``) and the runtime stores each finished deterministic
call with ``store``.

NOTE: keyed on the exact rendered prompt text, not on token ids: the runtime tokenizes a prompt
segment by segment, so equal text under one model always gives equal tokens, and text keys let
the optimizer look calls up at plan time without a tokenizer.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass

from helium_trt.plan.ops import GenerationConfig

CacheKey = tuple[str, str, tuple]


@dataclass(frozen=True, slots=True)
class PromptCacheStats:
    num_entries: int
    num_bytes: int
    num_hits: int
    num_misses: int
    num_evictions: int


class PromptResultCache:
    """LRU over entries whose size is the UTF-8 bytes of prompt + output (+ model name).

    Thread-safe: planning (lookups) runs in worker threads while the event loop stores results.
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, str] = OrderedDict()
        self._num_by_call: Counter[tuple[str, tuple]] = Counter()  # (model, config key) -> entries
        self._num_bytes = 0
        self._num_hits = self._num_misses = self._num_evictions = 0
        self._lock = threading.Lock()

    # ---- public API ----------------------------------------------------------------------------

    def lookup(self, model: str, prompt_text: str, config: GenerationConfig) -> str | None:
        """The stored output of this exact call, or None (non-deterministic configs never hit)."""
        if not config.is_deterministic:
            return None
        key = (model, prompt_text, config_key(config))
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self._num_misses += 1
                return None
            self._entries.move_to_end(key)
            self._num_hits += 1
            return found

    def may_hold(self, model: str, config: GenerationConfig) -> bool:
        """False when no entry has this model and config: no prompt of such a call can hit, so
        the optimizer need not render one (the first run of a workflow looks nothing up)."""
        return self._num_by_call[(model, config_key(config))] > 0

    def store(self, model: str, prompt_text: str, config: GenerationConfig, output: str) -> bool:
        """Remember ``output``; False when the call is not deterministic or the entry is too big."""
        if not config.is_deterministic:
            return False
        key = (model, prompt_text, config_key(config))
        size = _entry_bytes(key, output)
        if size > self.max_bytes:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._num_bytes -= _entry_bytes(key, old)
            else:
                self._num_by_call[(model, key[2])] += 1
            self._entries[key] = output
            self._num_bytes += size
            self._evict_to(self.max_bytes)
        return True

    def stats(self) -> PromptCacheStats:
        return PromptCacheStats(len(self._entries), self._num_bytes, self._num_hits,
                                self._num_misses, self._num_evictions)

    def __len__(self) -> int:
        return len(self._entries)

    # ---- private helpers -----------------------------------------------------------------------

    def _evict_to(self, limit: int) -> None:
        while self._num_bytes > limit and self._entries:
            key, output = self._entries.popitem(last=False)
            self._num_bytes -= _entry_bytes(key, output)
            self._num_by_call[(key[0], key[2])] -= 1
            self._num_evictions += 1


def config_key(config: GenerationConfig) -> tuple:
    """The generation settings that change the output of a deterministic call."""
    seed = None if config.temperature == 0.0 else config.seed
    sampling = () if config.temperature == 0.0 else (config.temperature, config.top_p, config.top_k)
    # NOTE: n and the *_from references are in the key so that an operator's own config (as
    # the plan holds it) never finds what one resolved call stored (n = 1, values filled in).
    return (config.max_tokens, sampling, seed, tuple(config.stop), config.ignore_eos, config.n,
            config.max_tokens_from, config.stop_from)


def _entry_bytes(key: CacheKey, output: str) -> int:
    model, prompt, _ = key
    return len(model.encode()) + len(prompt.encode()) + len(output.encode()) + 64
