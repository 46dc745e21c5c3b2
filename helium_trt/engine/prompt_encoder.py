"""Prompt text to token ids as the model's tokenizer encodes the whole text, with data kept data.

A prompt arrives rendered with its data marked (plan.chat). The tokenizer matches added
tokens first and encodes the text between them piece by piece; so does this encoder: it splits
the text at the control tokens the template wrote (never at ones inside marked data), encodes
each piece between them on its own (memoized: static prefixes repeat across calls), and joins
them with the control tokens' ids. For text whose data holds no control-token string that is
exactly the tokenizer's encoding of the whole text; marked control-token strings are encoded
as plain text (``Tokenizer.encode_special_tokens``).

Two tokenizer behaviours across pieces are reproduced: a control token's ``lstrip``/``rstrip``
absorbs the whitespace beside it, and a Metaspace pre-tokenizer with ``prepend_scheme="first"``
prefixes only the piece at the start of the text.

``stable_prefix`` gives the tokens of a prefix that no continuation can change: everything up
to its last control token, then the tokens of the remaining piece that end before its last
pre-tokenizer piece (and any whitespace before that), which a continuation could merge with.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Iterator, MutableMapping

from tokenizers import Tokenizer as RustTokenizer

from helium_trt.plan.chat import DATA_CLOSE, DATA_OPEN

# Rust's char::is_whitespace (Unicode White_Space), which added tokens' lstrip/rstrip use.
WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
              "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_MARKED = re.compile(f"{DATA_OPEN}([^{DATA_OPEN}{DATA_CLOSE}]*){DATA_CLOSE}")
_STRAY = re.compile(f"[{DATA_OPEN}{DATA_CLOSE}]")
_LAST_WORD = re.compile(r"\S*\s*$")
ChunkMemo = MutableMapping[tuple[str, bool], tuple[int, ...]]
# Texts at least this long are encoded with ``encode_batch``, which releases the GIL while it
# works; ``encode`` holds it throughout (measured: a worker thread encoding 3 MB with ``encode``
# stalled the event loop 2.8 s, with ``encode_batch`` at most 0.16 s). Same ids and offsets.
GIL_FREE_CHARS = 8192


def encode_text(tokenizer: RustTokenizer, text: str):
    """``tokenizer.encode(text)`` without special tokens, the GIL released for long texts."""
    if len(text) < GIL_FREE_CHARS:
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode_batch([text], add_special_tokens=False)[0]


@dataclass(frozen=True, slots=True)
class _Control:
    token_id: int
    lstrip: bool
    rstrip: bool


class PromptEncoder:
    """Encodes marked prompt text for one tokenizer; ``control_tokens`` never come from data."""

    def __init__(self, tokenizer: RustTokenizer, control_tokens: Iterable[str]) -> None:
        wanted = set(control_tokens)
        added = tokenizer.get_added_tokens_decoder()
        self._control = {t.content: _Control(i, t.lstrip, t.rstrip)
                         for i, t in added.items() if t.content in wanted}
        self.control_tokens = tuple(sorted(self._control))
        contents = sorted({t.content for t in added.values() if t.content},
                          key=lambda c: (-len(c), c))
        # Longest first: at one position the tokenizer takes the longest added token.
        self._added = re.compile("|".join(map(re.escape, contents))) if contents else None
        self._added_prefixes = frozenset(c[:n] for c in contents for n in range(1, len(c)))
        self._max_added = max(map(len, contents), default=0)
        self._first, self._rest = _plain_copies(tokenizer, set(self._control))
        self._pre_tokenizer = tokenizer.pre_tokenizer

    def encode(self, text: str, memo: ChunkMemo | None = None) -> list[int]:
        """Token ids of marked prompt ``text`` (see the module docstring)."""
        chunks, controls = self._split(text)
        ids: list[int] = []
        for i, chunk in enumerate(chunks):
            ids.extend(self._chunk_ids(chunk, i == 0, memo))
            if i < len(controls):
                ids.append(controls[i].token_id)
        return ids

    def stable_prefix(self, text: str, memo: ChunkMemo | None = None) -> list[int]:
        """The leading tokens of ``text``'s encoding that stay whatever text follows."""
        chunks, controls = self._split(text)
        ids: list[int] = []
        for i, chunk in enumerate(chunks[:-1]):
            ids.extend(self._chunk_ids(chunk, i == 0, memo))
            ids.append(controls[i].token_id)
        last = chunks[-1]
        if not last:
            return ids
        encoding = encode_text(self._first if len(chunks) == 1 else self._rest, last)
        cut = self._last_piece_start(last)
        for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
            if start >= cut or end > cut:
                break
            ids.append(token_id)
        return ids

    # ---- private helpers ---------------------------------------------------------------------

    def _split(self, text: str) -> tuple[list[str], list[_Control]]:
        """The text between the template's control tokens (markers dropped), and those tokens."""
        chunks: list[str] = []
        controls: list[_Control] = []
        current: list[str] = []
        for is_data, piece in _pieces(text):
            if is_data or self._added is None:
                current.append(piece)
                continue
            pos = 0
            for m in self._added.finditer(piece):
                control = self._control.get(m.group(0))
                if control is None:
                    continue  # an ordinary added token: the piece's own encoding matches it
                current.append(piece[pos:m.start()])
                chunks.append("".join(current))
                controls.append(control)
                current, pos = [], m.end()
            current.append(piece[pos:])
        chunks.append("".join(current))
        for i, control in enumerate(controls):
            if control.lstrip:
                chunks[i] = chunks[i].rstrip(WHITESPACE)
            if control.rstrip:
                chunks[i + 1] = chunks[i + 1].lstrip(WHITESPACE)
        return chunks, controls

    def _chunk_ids(self, chunk: str, first: bool, memo: ChunkMemo | None) -> tuple[int, ...]:
        if not chunk:
            return ()
        key = (chunk, first)
        found = memo.get(key) if memo is not None else None
        if found is None:
            tokenizer = self._first if first else self._rest
            found = tuple(encode_text(tokenizer, chunk).ids)
            if memo is not None:
                memo[key] = found
        return found

    def _last_piece_start(self, chunk: str) -> int:
        """Where the part of ``chunk`` a continuation could re-tokenize starts."""
        pieces = self._pre_tokenizer.pre_tokenize_str(chunk) if self._pre_tokenizer else []
        if len(pieces) > 1:
            cut = pieces[-1][1][0]
        else:  # one piece (or no pre-tokenizer): the last word and the whitespace after it
            cut = _LAST_WORD.search(chunk).start()
        for n in range(min(len(chunk), self._max_added - 1), 0, -1):
            if chunk[-n:] in self._added_prefixes:  # could complete into an added token
                cut = min(cut, len(chunk) - n)
                break
        while cut > 0 and chunk[cut - 1] in WHITESPACE:
            cut -= 1
        return cut


def _pieces(text: str) -> Iterator[tuple[bool, str]]:
    """(is data, text) in order: marked spans are data; a stray marker (a template's string
    method split a marked span) still separates the text around it."""
    if DATA_OPEN not in text and DATA_CLOSE not in text:
        yield False, text  # most prompts: their data holds no control-token string
        return
    pos = 0
    for m in _MARKED.finditer(text):
        yield from ((False, part) for part in _STRAY.split(text[pos:m.start()]))
        yield True, m.group(1)
        pos = m.end()
    yield from ((False, part) for part in _STRAY.split(text[pos:]))


def _plain_copies(tokenizer: RustTokenizer, control: set[str]) -> tuple[RustTokenizer, RustTokenizer]:
    """Copies that encode every control token as plain text: for the first piece of a text,
    and for the others (which a Metaspace ``prepend_scheme="first"`` does not prefix)."""
    spec = json.loads(tokenizer.to_str())
    for entry in spec.get("added_tokens") or ():
        if entry.get("content") in control:
            entry["special"] = True
    first = RustTokenizer.from_str(json.dumps(spec))
    first.encode_special_tokens = True
    if not _prepend_first_to_never(spec.get("pre_tokenizer")):
        return first, first
    rest = RustTokenizer.from_str(json.dumps(spec))
    rest.encode_special_tokens = True
    return first, rest


def _prepend_first_to_never(node) -> bool:
    if not isinstance(node, dict):
        return False
    if node.get("type") == "Metaspace" and node.get("prepend_scheme") == "first":
        node["prepend_scheme"] = "never"
        return True
    changed = False
    for child in node.get("pretokenizers") or ():
        changed = _prepend_first_to_never(child) or changed
    return changed
