"""Incremental detokenization with stop strings: what text a stream may show so far."""

from __future__ import annotations

from dataclasses import dataclass

from helium_trt.engine.base import Tokenizer


@dataclass(frozen=True, slots=True)
class TextUpdate:
    """``delta`` is new text safe to stream; ``stopped`` when a stop string has appeared."""

    delta: str
    stopped: bool


class OutputText:
    """Tracks one request's output text.

    Text that could still turn out to be the beginning of a stop string, or an incomplete UTF-8
    character (decoded as U+FFFD), is held back until it is settled, so the concatenated deltas
    always equal the final text, which ends just before the first stop string.
    """

    def __init__(self, tokenizer: Tokenizer, stop_strings: tuple[str, ...]):
        self._tokenizer = tokenizer
        self._stop_strings = tuple(s for s in stop_strings if s)
        self._hold = max((len(s) for s in self._stop_strings), default=1) - 1
        self.text = ""
        self._num_emitted = 0

    def update(self, output_token_ids: list[int]) -> TextUpdate:
        full = self._tokenizer.decode(output_token_ids)
        stop_at = self._find_stop(full)
        if stop_at is not None:
            self.text = full[:stop_at]
            return TextUpdate(self._take(len(self.text)), True)
        self.text = full
        safe = len(full) - self._hold
        if full.endswith("\ufffd"):
            safe = min(safe, len(full) - 1)
        return TextUpdate(self._take(safe), False)

    def flush(self) -> str:
        """The rest of the text once the request has finished."""
        return self._take(len(self.text))

    def _find_stop(self, full: str) -> int | None:
        if not self._stop_strings:
            return None
        search_from = max(0, self._num_emitted - self._hold)
        found = [i for i in (full.find(s, search_from) for s in self._stop_strings) if i >= 0]
        return min(found) if found else None

    def _take(self, upto: int) -> str:
        if upto <= self._num_emitted:
            return ""
        delta = self.text[self._num_emitted:upto]
        self._num_emitted = upto
        return delta
