"""Values of non-LLM operators for one row, following helium.v1 semantics.

A text value is ``str``; a list column, a map result or a per-element format is ``list[str]``;
a conversation is ``list[dict]`` of role/content. A format whose placeholder names a list of
strings is applied to each element (all such lists must have the same length).

``limit`` (the server's bytes per prompt or formatted value) is checked on a value's parts
before they are joined: formats that repeat their inputs would otherwise double a text's size
at every level.
"""

from __future__ import annotations

import json
from typing import Mapping

from helium_trt.errors import InvalidWorkflowError, ResourceExhaustedError
from helium_trt.plan.chat import ChatFormat
from helium_trt.plan.ops import ConcatOp, FormatOp, MapOp, SwitchOp, Template
from helium_trt.plan.prompt import substitute, value_text
from helium_trt.runtime.patterns import RE2


def is_conversation(value: object) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def is_text_list(value: object) -> bool:
    return isinstance(value, list) and not is_conversation(value)


def num_elements(op_id: str, values: Mapping[str, object]) -> int | None:
    """The common length of the list-of-text values among ``values`` (None: no list)."""
    lengths = {len(v) for v in values.values() if is_text_list(v)}
    if len(lengths) > 1:
        raise InvalidWorkflowError(f"placeholders hold lists of different lengths {sorted(lengths)}",
                                   op_id=op_id)
    return lengths.pop() if lengths else None


def element_values(values: Mapping[str, object], index: int) -> dict[str, object]:
    """``values`` with every list of text replaced by its ``index``-th element."""
    return {k: (v[index] if is_text_list(v) else v) for k, v in values.items()}


def fill(template: Template, values: Mapping[str, object], fmt: ChatFormat,
         item: str | None = None, index: int | None = None, limit: int | None = None) -> str:
    return checked_join(substitute(template, values, fmt, item, index), limit)


def checked_join(parts: list[str], limit: int | None, separator: str = "") -> str:
    """``separator.join(parts)``, refused (ResourceExhaustedError) past ``limit`` UTF-8 bytes."""
    if limit is not None:
        num_bytes = utf8_size_over(parts + [separator] * max(len(parts) - 1, 0), limit)
        if num_bytes is not None:
            raise ResourceExhaustedError(
                f"the text would be {num_bytes:,} bytes, over the server's limit of {limit:,} "
                "bytes per prompt or formatted value")
    return separator.join(parts)


def utf8_size_over(parts: list[str], limit: int) -> int | None:
    """The UTF-8 size of ``parts`` together when it passes ``limit``, else None; encodes only
    when the character count leaves it open (a character is 1 to 4 bytes)."""
    num_chars = sum(map(len, parts))
    if num_chars > limit:
        return num_chars  # at least that many bytes
    if num_chars * 4 <= limit:
        return None
    num_bytes = sum(len(p.encode("utf-8", "surrogatepass")) for p in parts)
    return num_bytes if num_bytes > limit else None


def eval_format(op: FormatOp, values: Mapping[str, object], fmt: ChatFormat,
                limit: int | None = None):
    n = num_elements(op.id, values)
    if n is None:
        return _format_one(op, values, fmt, limit)
    return [_format_one(op, element_values(values, i), fmt, limit) for i in range(n)]


def _format_one(op: FormatOp, values: Mapping[str, object], fmt: ChatFormat, limit: int | None):
    if not op.is_chat:
        return fill(op.template, values, fmt, limit=limit)
    conversation: list[dict] = []
    for m in op.messages:
        if m.history is not None:
            history = values[m.history]
            if not is_conversation(history):
                raise InvalidWorkflowError(f"history {m.history!r} is not a conversation",
                                           op_id=op.id, field="messages")
            conversation.extend(history)
        else:
            content = fill(m.template, values, fmt, limit=limit)
            conversation.append({"role": m.role, "content": content})
    return conversation


def eval_concat(op: ConcatOp, values: Mapping[str, object], fmt: ChatFormat,
                limit: int | None = None) -> str:
    parts = []
    for part in op.parts:
        value = values[part]
        if is_text_list(value):
            parts.extend(str(v) for v in value)
        else:
            parts.append(value_text(value, fmt))
    return checked_join(parts, limit, op.separator)


def eval_map(op: MapOp, values: Mapping[str, object], fmt: ChatFormat,
             limit: int | None = None) -> list[str]:
    items = values[op.list_id]
    if not is_text_list(items):
        items = [value_text(items, fmt)]
    return [fill(op.template, values, fmt, item=str(x), index=i, limit=limit)
            for i, x in enumerate(items)]


def choose_branch(op: SwitchOp, text: str) -> str:
    """The target of the first matching case, else the default; raises when none."""
    for case in op.cases:
        if op.match == "choice" and text.strip().lower() == case.value.strip().lower():
            return case.target
        if op.match == "regex" and RE2.search(case.value, text):
            return case.target
    if op.default_target is None:
        raise InvalidWorkflowError(f"no case matches {text[:80]!r} and there is no default",
                                   op_id=op.id, field="cases")
    return op.default_target


def output_text(value: object) -> str:
    """An operator's value as wire text: strings as they are, lists as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
