"""Values the optimizer can compute at plan time: constants, and per row, inputs and formats (pure).

An operator's value is *plan-time computable* for a row when it depends only on inputs,
constants, text/chat formats and concats. Anything downstream of an LLM call, a tool call, a
switch or a map is not (None). Semantics follow helium.v1: a conversation is a list of
``{"role", "content"}`` dicts; a list value in a text template is not expanded here (the format
would apply per element), so such values count as not computable.
"""

from __future__ import annotations

from typing import Mapping

from helium_trt.plan.chat import ChatFormat
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import ConcatOp, ConstantOp, FormatOp, InputOp, Ref, Template
from helium_trt.plan.prompt import value_text

_MISSING = object()


def static_text(plan: Plan, op_id: str) -> str | None:
    """The text of ``op_id`` when it is the same for every row (constants, static formats)."""
    return _static(plan, op_id, {})


def _static(plan: Plan, op_id: str, memo: dict) -> str | None:
    if op_id in memo:
        return memo[op_id]
    op = plan.by_id.get(op_id)
    memo[op_id] = None  # guards against cycles in unvalidated plans
    value = None
    if isinstance(op, ConstantOp):
        value = op.text
    elif isinstance(op, FormatOp) and not op.is_chat:
        parts = [_static(plan, s.op_id, memo) if isinstance(s, Ref) else s for s in op.template]
        value = "".join(parts) if all(isinstance(p, str) for p in parts) else None
    memo[op_id] = value
    return value


class RowValues:
    """Plan-time values of one row; ``get`` returns None when the value is not computable."""

    def __init__(self, plan: Plan, row: Mapping[str, object], fmt: ChatFormat) -> None:
        self._plan, self._row, self._fmt = plan, row, fmt
        self._memo: dict[str, object] = {}

    def get(self, op_id: str):
        cached = self._memo.get(op_id, _MISSING)
        if cached is not _MISSING:
            return cached
        self._memo[op_id] = None
        value = self._compute(op_id)
        self._memo[op_id] = value
        return value

    def _compute(self, op_id: str):
        op = self._plan.by_id.get(op_id)
        if isinstance(op, InputOp):
            return self._row.get(op.column)
        if isinstance(op, ConstantOp):
            return op.text
        if isinstance(op, FormatOp):
            return self._chat(op) if op.is_chat else self._text(op.template)
        if isinstance(op, ConcatOp):
            return self._concat(op)
        return None

    def _text(self, template: Template) -> str | None:
        out = []
        for seg in template:
            if isinstance(seg, str):
                out.append(seg)
                continue
            value = self.get(seg.op_id) if isinstance(seg, Ref) else None
            if not isinstance(value, str):
                return None
            out.append(value)
        return "".join(out)

    def _chat(self, op: FormatOp) -> list[dict] | None:
        conversation: list[dict] = []
        for m in op.messages:
            if m.history is not None:
                value = self.get(m.history)
                if not (isinstance(value, list) and all(isinstance(v, dict) for v in value)):
                    return None
                conversation.extend(value)
                continue
            content = self._text(m.template)
            if content is None:
                return None
            conversation.append({"role": m.role, "content": content})
        return conversation

    def _concat(self, op: ConcatOp) -> str | None:
        parts = []
        for part in op.parts:
            value = self.get(part)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                parts.extend(value)
            elif isinstance(value, str):
                parts.append(value)
            else:
                return None
        return op.separator.join(parts)

    def text_of(self, op_id: str) -> str | None:
        """The value as prompt text (a conversation renders with the chat format)."""
        value = self.get(op_id)
        if value is None or (isinstance(value, list) and not value):
            return None
        if isinstance(value, list) and not isinstance(value[0], dict):
            return None  # a list would make the consumer run once per element
        return value_text(value, self._fmt)
