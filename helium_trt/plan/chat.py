"""How chat messages are rendered into prompt text (pure; the engine's tokenizer supplies one)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChatFormat:
    """A message renders as ``message_start.format(role=...) + content + message_end``.

    ``generation_prompt`` is appended after the last message of an LLM chat call.
    ``default_system`` is inserted when a conversation has no system message (as SmolLM2's
    template does); None inserts nothing.
    """

    message_start: str = "<|im_start|>{role}\n"
    message_end: str = "<|im_end|>\n"
    generation_prompt: str = "<|im_start|>assistant\n"
    default_system: str | None = None


CHATML = ChatFormat()
