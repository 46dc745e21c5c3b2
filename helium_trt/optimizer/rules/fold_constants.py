"""Rule fold_constants: inline constants and static text into templates."""

from __future__ import annotations

from dataclasses import replace

from helium_trt.optimizer.base import OptimizeContext
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import ConstantOp, FormatOp, MapOp, Op, Ref, Template
from helium_trt.plan.prompt import merge_literals


class FoldConstants:
    """Inline ``ConstantOp`` text (and text formats that fold to pure text) into the templates
    that reference them, so every template shows its static prefix as literal text; a text
    ``FormatOp`` left with no placeholder becomes a ``ConstantOp`` with the same id.

    Example: ``sys = constant("You are a judge.")``, ``p = format("{sys} Q: {q}")`` becomes
    ``p = format("You are a judge. Q: {q}")``. ``sys`` is now unreferenced; dropping it is
    eliminate_dead_ops' job. Conversations (chat formats) are values, not text, and are never
    inlined into a text template.
    """

    name = "fold_constants"

    def apply(self, plan: Plan, ctx: OptimizeContext) -> Plan:
        texts: dict[str, str] = {}
        folded: dict[str, Op] = {}
        for op_id in plan.topo_order:
            op = plan.by_id[op_id]
            new = _fold(op, texts)
            if isinstance(new, ConstantOp):
                texts[op_id] = new.text
            if new != op:
                folded[op_id] = new
        if not folded:
            return plan
        return plan.replace_ops(folded.get(op.id, op) for op in plan.ops)


def _fold(op: Op, texts: dict[str, str]) -> Op:
    if isinstance(op, FormatOp) and not op.is_chat:
        template = _inline(op.template, texts)
        if all(isinstance(s, str) for s in template):
            return ConstantOp(op.id, text="".join(template))
        return replace(op, template=template)
    if isinstance(op, FormatOp):
        messages = tuple(m if m.history is not None else replace(m, template=_inline(m.template, texts))
                         for m in op.messages)
        return replace(op, messages=messages)
    if isinstance(op, MapOp):
        return replace(op, template=_inline(op.template, texts))
    return op


def _inline(template: Template, texts: dict[str, str]) -> Template:
    """Refs to known text replaced by that text; adjacent literals joined, empty ones dropped."""
    return merge_literals(texts[s.op_id] if isinstance(s, Ref) and s.op_id in texts else s
                          for s in template)
