"""Tokenizer wrapper over a Hugging Face ``tokenizer.json``, with the model's chat format.

``chat_format`` renders conversations with the model directory's own chat template
(engine.chat_template); a directory without one gets ChatML, and its ``source`` says so.
``encode_prompt``/``stable_prefix`` encode rendered prompts exactly as the tokenizer encodes the
whole text, data never becoming a control token (engine.prompt_encoder).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer as RustTokenizer
from tokenizers.decoders import DecodeStream

from helium_trt.engine.chat_template import chat_format_for, read_chat_template
from helium_trt.engine.embedded.model_config import MalformedModelError
from helium_trt.engine.prompt_encoder import ChunkMemo, PromptEncoder, encode_text
from helium_trt.plan.chat import CHATML_TOKENS, ChatFormat

log = logging.getLogger(__name__)


class HFTokenizer:
    """``encode``/``decode`` plus ``eos_token_ids``, ``chat_format`` and prompt encoding."""

    def __init__(self, tokenizer: RustTokenizer, eos_token_ids: Sequence[int], chat_format: ChatFormat):
        self._tokenizer = tokenizer
        self.eos_token_ids = tuple(sorted(set(eos_token_ids)))
        self.chat_format = chat_format
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self._prompts = PromptEncoder(tokenizer, chat_format.control_tokens)

    @classmethod
    def from_dir(cls, model_dir: str | Path, config_eos_ids: Sequence[int] = ()) -> HFTokenizer:
        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise MalformedModelError(f"model directory {str(model_dir)!r} has no tokenizer.json")
        try:
            tokenizer = RustTokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            raise MalformedModelError(f"{path}: unreadable tokenizer ({exc})") from exc
        tokenizer_config = _read_json(model_dir / "tokenizer_config.json")
        template = read_chat_template(model_dir, tokenizer_config)
        chat_format = chat_format_for(model_dir, tokenizer_config,
                                      control_tokens(tokenizer, template))
        if template is None:
            log.warning("%s has no chat template: chat prompts use ChatML", model_dir)
        eos_ids = list(config_eos_ids)
        for token in (tokenizer_config.get("eos_token"), "<|im_end|>" if template and "<|im_start|>" in template else None):
            if isinstance(token, dict):
                token = token.get("content")
            token_id = tokenizer.token_to_id(token) if isinstance(token, str) else None
            if token_id is not None:
                eos_ids.append(token_id)
        return cls(tokenizer, eos_ids, chat_format)

    def encode(self, text: str) -> list[int]:
        return encode_text(self._tokenizer, text).ids

    def encode_prompt(self, text: str, memo: ChunkMemo | None = None) -> list[int]:
        """Ids of a rendered prompt whose data is marked (plan.chat.mark_data): the tokenizer's
        encoding of the whole text, marked control-token strings encoded as plain text."""
        return self._prompts.encode(text, memo)

    def stable_prefix(self, text: str, memo: ChunkMemo | None = None) -> list[int]:
        """The leading ids of ``encode_prompt(text)`` that no continuation of ``text`` changes."""
        return self._prompts.stable_prefix(text, memo)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def new_decode_stream(self):
        """A step function for one output stream: token id -> the text it completes, or None
        while it is part of an unfinished character (the tokenizers library's DecodeStream)."""
        stream = DecodeStream(skip_special_tokens=True)
        return lambda token_id: stream.step(self._tokenizer, token_id)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)


def control_tokens(tokenizer: RustTokenizer, template: str | None) -> tuple[str, ...]:
    """Token strings data must never become: every special added token, and every other
    added token the chat template writes (ChatML's, without a template), whitespace aside."""
    written = template if template is not None else "".join(CHATML_TOKENS)
    return tuple(sorted(
        t.content for t in tokenizer.get_added_tokens_decoder().values()
        if t.content and (t.special or (t.content in written and not t.content.isspace()))))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise MalformedModelError(f"{path}: {exc}") from exc
