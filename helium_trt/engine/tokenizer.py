"""Tokenizer wrapper over a Hugging Face ``tokenizer.json``, with the model's chat format."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer as RustTokenizer

from helium_trt.engine.model_config import MalformedModelError
from helium_trt.plan.chat import CHATML, ChatFormat

_CHATML_SYSTEM = re.compile(r"<\|im_start\|>system(?:\\n|\n)(.*?)<\|im_end\|>", re.DOTALL)


class HFTokenizer:
    """``encode``/``decode`` plus ``eos_token_ids`` and ``chat_format`` (from the chat template)."""

    def __init__(self, tokenizer: RustTokenizer, eos_token_ids: Sequence[int], chat_format: ChatFormat):
        self._tokenizer = tokenizer
        self.eos_token_ids = tuple(sorted(set(eos_token_ids)))
        self.chat_format = chat_format
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

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
        template = _chat_template(model_dir, tokenizer_config)
        chat_format = chat_format_from_template(template)
        eos_ids = list(config_eos_ids)
        for token in (tokenizer_config.get("eos_token"), "<|im_end|>" if template and "<|im_start|>" in template else None):
            token_id = tokenizer.token_to_id(token) if isinstance(token, str) else None
            if token_id is not None:
                eos_ids.append(token_id)
        return cls(tokenizer, eos_ids, chat_format)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)


def chat_format_from_template(template: str | None) -> ChatFormat:
    """ChatML (the only family handled), with the template's built-in system prompt if any.

    NOTE: the Jinja template is not executed; ChatML's fixed framing is assumed and only the
    default system message is lifted out of it. Non-ChatML templates fall back to ChatML.
    """
    if not template:
        return CHATML
    match = _CHATML_SYSTEM.search(template)
    if match is None:
        return CHATML
    default_system = match.group(1).replace("\\n", "\n")
    return ChatFormat(default_system=default_system)


def _chat_template(model_dir: Path, tokenizer_config: dict) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    template = tokenizer_config.get("chat_template")
    return template if isinstance(template, str) else None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise MalformedModelError(f"{path}: {exc}") from exc
