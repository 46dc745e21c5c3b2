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
# Longest text plan time computes; a longer value (formats that repeat their inputs can double
# it at every level) is left for the runtime, which checks it against the server's byte limit.
MAX_TEXT_CHARS = 8 << 20


def static_text(plan: Plan, op_id: str) -> str | None:
    """The text of ``op_id`` when it is the same for every row (constants, static formats)."""
    memo: dict[str, str | None] = {}
    for current in _inputs_first(plan, op_id, memo, lambda op: isinstance(op, FormatOp)):
        op = plan.by_id.get(current)
        value = None
        if isinstance(op, ConstantOp):
            value = op.text
        elif isinstance(op, FormatOp) and not op.is_chat:
            parts = [memo.get(s.op_id) if isinstance(s, Ref) else s for s in op.template]
            value = _join(parts)
        memo[current] = value
    return memo.get(op_id)


def _inputs_first(plan: Plan, op_id: str, memo: dict, expand) -> list[str]:
    """``op_id`` and the operators it reads through ``expand``ed ones (those not in ``memo``),
    each after its inputs.

    NOTE: iterative, not recursive: a chain of hundreds of formats is a valid plan, and each
    level used to cost several Python frames (a 400-format chain hit the recursion limit).
    A cycle (unvalidated plans) is cut where it closes.
    """
    order: list[str] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(op_id, False)]
    while stack:
        current, inputs_done = stack.pop()
        if inputs_done:
            order.append(current)
            continue
        if current in seen or current in memo:
            continue
        seen.add(current)
        stack.append((current, True))
        op = plan.by_id.get(current)
        if op is not None and expand(op):
            stack.extend((i, False) for i in reversed(op.inputs) if i not in seen)
    return order


def _join(parts: list) -> str | None:
    """The parts joined, or None when one is not text or the text would pass MAX_TEXT_CHARS."""
    total = 0
    for part in parts:
        if not isinstance(part, str):
            return None
        total += len(part)
    return "".join(parts) if total <= MAX_TEXT_CHARS else None


def _reads_values(op) -> bool:
    return isinstance(op, (FormatOp, ConcatOp))


def row_independent_values(plan: Plan, fmt: ChatFormat) -> dict[str, object]:
    """The computable values every row shares: constants, and the formats and concats that
    read nothing else (``RowValues(seed=)`` starts from them instead of recomputing them, and
    rows then share one object for each: a memo keyed on them hashes it once)."""
    independent: set[str] = set()
    for op_id in plan.topo_order:
        op = plan.by_id[op_id]
        if isinstance(op, ConstantOp) or (isinstance(op, (FormatOp, ConcatOp))
                                          and all(i in independent for i in op.inputs)):
            independent.add(op_id)
    values = RowValues(plan, {}, fmt)
    return {op_id: value for op_id in independent if (value := values.get(op_id)) is not None}


class RowValues:
    """Plan-time values of one row; ``get`` returns None when the value is not computable.

    ``seed``: values known for every row already (``row_independent_values``). NOTE: they are
    shared, not copied: no caller mutates a value it gets (conversations are read only).
    ``orders``: a memo of the order each value's inputs are computed in, shared by the rows of
    one plan and seed (the same for every row: walking the graph for each was a third of
    computing a row's prompts).
    """

    def __init__(self, plan: Plan, row: Mapping[str, object], fmt: ChatFormat,
                 seed: Mapping[str, object] | None = None,
                 orders: dict[str, list[str]] | None = None) -> None:
        self._plan, self._row, self._fmt = plan, row, fmt
        self._seed = seed or {}
        self._memo: dict[str, object] = dict(seed) if seed else {}
        self._orders = orders if orders is not None else {}

    def get(self, op_id: str):
        memo = self._memo
        cached = memo.get(op_id, _MISSING)
        if cached is not _MISSING:
            return cached
        order = self._orders.get(op_id)
        if order is None:
            order = self._orders[op_id] = _inputs_first(self._plan, op_id, self._seed,
                                                        _reads_values)
        for current in order:
            if current not in memo:
                memo[current] = self._compute(current)
        return memo.get(op_id)

    def _known(self, op_id: str):
        """An input's value, computed already by ``get`` (None: not computable, or a cycle)."""
        return self._memo.get(op_id)

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
        return _join([seg if isinstance(seg, str) else
                      self._known(seg.op_id) if isinstance(seg, Ref) else None
                      for seg in template])

    def _chat(self, op: FormatOp) -> list[dict] | None:
        conversation: list[dict] = []
        for m in op.messages:
            if m.history is not None:
                value = self._known(m.history)
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
            value = self._known(part)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                parts.extend(value)
            elif isinstance(value, str):
                parts.append(value)
            else:
                return None
        if sum(map(len, parts)) + len(op.separator) * len(parts) > MAX_TEXT_CHARS:
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
