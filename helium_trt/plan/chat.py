"""How a conversation becomes prompt text, and how data stays data inside it (pure).

A ``ChatFormat`` carries the model's renderer: a callable the engine side builds from the
tokenizer's own chat template (``engine.chat_template``), or the ChatML fallback below for a
model without one. Pure code calls it and never sees Jinja.

Data (row values, tool results, LLM outputs, message contents) is marked before rendering:
every control-token string inside it is wrapped in ``DATA_OPEN``/``DATA_CLOSE``, so the
tokenizer can tell it from the control tokens the template writes itself and encode it as
plain text. Text without control-token strings is never marked: it renders exactly as the
model's own preprocessing renders it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Mapping, Sequence

from helium_trt.errors import InvalidWorkflowError

Conversation = Sequence[Mapping[str, str]]  # [{"role": ..., "content": ...}, ...]
# (messages, add_generation_prompt) -> prompt text; raises ChatTemplateError.
ChatRenderer = Callable[[Conversation, bool], str]

# Unicode noncharacters: reserved for a program's internal use, never valid in interchange.
DATA_OPEN, DATA_CLOSE = "\ufdd0", "\ufdd1"
_MARKERS = re.compile(f"[{DATA_OPEN}{DATA_CLOSE}]")
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


class ChatTemplateError(InvalidWorkflowError):
    """The model's chat template refused a conversation (its raise_exception, or a template
    error): INVALID_ARGUMENT, naming the LLM operator whose prompt it was."""


@dataclass(frozen=True, slots=True)
class ChatFormat:
    """A model's chat rendering: ``render(messages, add_generation_prompt) -> text``.

    ``source`` says where it came from (shown by explain); ``control_tokens`` are the token
    strings data must never turn into (the tokenizer's special tokens and the template's own).
    """

    render: ChatRenderer
    source: str
    control_tokens: tuple[str, ...] = CHATML_TOKENS


def chatml(default_system: str | None = None, *, source: str = "ChatML",
           control_tokens: tuple[str, ...] = CHATML_TOKENS) -> ChatFormat:
    """ChatML framing (``<|im_start|>role\\ncontent<|im_end|>\\n``); ``default_system`` is
    inserted when a conversation does not start with a system message."""

    def render(messages: Conversation, add_generation_prompt: bool) -> str:
        parts = []
        if default_system is not None and (not messages or messages[0]["role"] != "system"):
            parts.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
        parts.extend(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        if add_generation_prompt:
            parts.append("<|im_start|>assistant\n")
        return "".join(parts)

    return ChatFormat(render, source, control_tokens)


CHATML = chatml(source="ChatML (assumed: no model given)")


def render_chat(fmt: ChatFormat, messages: Conversation, add_generation_prompt: bool,
                op_id: str | None = None) -> str:
    """``fmt.render``, with a template's refusal reported against operator ``op_id``."""
    try:
        return fmt.render(messages, add_generation_prompt)
    except ChatTemplateError as exc:
        raise ChatTemplateError(exc.detail, op_id=op_id, field="prompt") from exc


def mark_data(text: str, fmt: ChatFormat) -> str:
    """``text`` as data: its control-token strings marked, and any marker it held dropped.

    Also marked: a proper prefix of a control token at the very end and a proper suffix at the
    very start (two or more characters), so two data values side by side cannot join into one.
    """
    found = _patterns(fmt.control_tokens)
    if found is None:
        return text
    if DATA_OPEN in text or DATA_CLOSE in text:
        text = _MARKERS.sub("", text)
    head = tail = 0
    if not found.last_chars.isdisjoint(text[1:found.max_len - 1]):
        head = _partial_len(text, found.suffixes, found.max_len, at_end=False)
    if not found.first_chars.isdisjoint(text[-found.max_len + 1:-1]):
        tail = _partial_len(text, found.prefixes, found.max_len, at_end=True)
    if head + tail > len(text):
        tail = 0  # one marked edge is enough to keep the text from joining anything
    middle = text[head:len(text) - tail]
    if not (head or tail or found.whole.search(middle)):
        return text
    marked = found.whole.sub(lambda m: DATA_OPEN + m.group(0) + DATA_CLOSE, middle)
    return _wrap(text[:head]) + marked + _wrap(text[len(text) - tail:])


def unmark(text: str) -> str:
    """The text the model sees: markers removed."""
    if DATA_OPEN not in text and DATA_CLOSE not in text:
        return text
    return _MARKERS.sub("", text)


def mark_conversation(conversation: Conversation, fmt: ChatFormat,
                      memo: dict[str, str] | None = None) -> list[dict]:
    """Every text of ``conversation``'s messages (role, content, ...) marked as data.

    ``memo`` (text -> marked) saves marking a text again: a system prompt every row repeats.
    """
    if memo is None:
        return [{k: mark_data(v, fmt) if isinstance(v, str) else v for k, v in m.items()}
                for m in conversation]
    return [{k: mark_memoized(v, fmt, memo) if isinstance(v, str) else v for k, v in m.items()}
            for m in conversation]


def mark_memoized(text: str, fmt: ChatFormat, memo: dict[str, str]) -> str:
    """``mark_data(text, fmt)``, looked up in ``memo`` first."""
    found = memo.get(text)
    if found is None:
        found = memo[text] = mark_data(text, fmt)
    return found


@dataclass(frozen=True, slots=True)
class _Patterns:
    whole: re.Pattern
    prefixes: frozenset[str]  # proper prefixes of control tokens, 2+ characters
    suffixes: frozenset[str]  # proper suffixes, 2+ characters
    max_len: int
    first_chars: frozenset[str]  # what a prefix starts with
    last_chars: frozenset[str]  # what a suffix ends with


@lru_cache(maxsize=32)
def _patterns(tokens: tuple[str, ...]) -> _Patterns | None:
    tokens = tuple(sorted({t for t in tokens if t}, key=lambda t: (-len(t), t)))
    if not tokens:
        return None
    # Longest first: at one position the longest token wins, as the tokenizer matches.
    whole = re.compile("|".join(map(re.escape, tokens)))
    prefixes = frozenset(t[:n] for t in tokens for n in range(2, len(t)))
    suffixes = frozenset(t[n:] for t in tokens for n in range(1, len(t) - 1))
    return _Patterns(whole, prefixes, suffixes, max(map(len, tokens)),
                     frozenset(t[0] for t in tokens), frozenset(t[-1] for t in tokens))


def _wrap(text: str) -> str:
    return DATA_OPEN + text + DATA_CLOSE if text else ""


def _partial_len(text: str, parts: frozenset[str], max_len: int, *, at_end: bool) -> int:
    """Length of the longest member of ``parts`` that ``text`` ends (or starts) with."""
    for n in range(min(len(text), max_len - 1), 1, -1):
        if (text[-n:] if at_end else text[:n]) in parts:
            return n
    return 0
