"""Incremental detokenization with stop strings: what text a stream may show so far.

Each new token is decoded on its own through the tokenizer's streaming decoder
(``new_decode_stream``, the tokenizers library's DecodeStream), so a token costs the same however
long the output already is; a tokenizer without one has the whole output decoded per token.
"""

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
    always equal the final text, which ends just before the first stop string. Without a stop
    string the final text is ``tokenizer.decode`` of all the output tokens.
    """

    def __init__(self, tokenizer: Tokenizer, stop_strings: tuple[str, ...]):
        self._tokenizer = tokenizer
        self._stop_strings = tuple(s for s in stop_strings if s)
        self._hold = max((len(s) for s in self._stop_strings), default=1) - 1
        self.text = ""
        self._num_emitted = 0
        new_stream = getattr(tokenizer, "new_decode_stream", None)
        self._step = new_stream() if new_stream is not None else None
        self._settled = ""  # what the stream has decoded so far
        self._num_fed = 0  # tokens given to the stream
        self._is_settled = True  # False while the stream holds tokens it has not shown
        self._token_ids: list[int] = []
        self._stopped = False

    def update(self, output_token_ids: list[int]) -> TextUpdate:
        self._token_ids = output_token_ids
        full = self._decoded()
        stop_at = self._find_stop(full)
        if stop_at is not None:
            self.text = full[:stop_at]
            self._stopped = True
            return TextUpdate(self._take(len(self.text)), True)
        self.text = full
        safe = len(full) - self._hold
        if full.endswith("\ufffd"):
            safe = min(safe, len(full) - 1)
        return TextUpdate(self._take(safe), False)

    def flush(self) -> str:
        """The rest of the text once the request has finished."""
        if not self._stopped and not self._is_settled:
            # An output ending mid-character (or on a skipped special token): the stream
            # never settles it, so decode the whole output once, as decoding it whole shows.
            full = self._tokenizer.decode(self._token_ids)
            if full.startswith(self.text):
                self.text = full
        return self._take(len(self.text))

    def _decoded(self) -> str:
        """The output's text so far (without a character the stream has not completed)."""
        if self._step is not None:
            try:
                for token_id in self._token_ids[self._num_fed:]:
                    piece = self._step(token_id)
                    self._num_fed += 1
                    self._is_settled = piece is not None
                    self._settled += piece or ""
                return self._settled
            except Exception:  # noqa: BLE001 - the Rust side raises plain Exception subclasses
                # NOTE: e.g. DecodeStream's "invalid prefix" on a decoder whose text for a token
                # depends on later ones: decode the whole output per token from here on.
                self._step = None
        self._is_settled = True
        return self._tokenizer.decode(self._token_ids)

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
