"""A call's whole prompt when plan time already knows every value it reads (pure).

The prompt-result cache keys on this text and the runtime's planner encodes it, so both see
exactly what the call will send: ``plan.prompt.render_call`` over the row's plan-time values.
``RenderedPrompts`` carries what the cache lookup rendered to the planner, which would
otherwise render every known prompt a second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from helium_trt.optimizer.plan_values import RowValues
from helium_trt.plan.chat import ChatFormat
from helium_trt.plan.ops import LlmOp, Ref, Template
from helium_trt.plan.prompt import render_call


def known_prompt(llm: LlmOp, is_chat: bool, template: Template, values: RowValues,
                 fmt: ChatFormat, op_id: str | None = None,
                 marks: dict[str, str] | None = None) -> str | None:
    """The call's prompt with its data marked (plan.chat), or None when a value it reads is
    not computable now (an LLM output, a tool result, a list the call would run once per
    element of). ``marks`` memoizes texts marked as data across calls (render_call)."""
    if is_chat:  # the conversation holds every value the template reads
        conversation = values.get(llm.prompt)
        if not (isinstance(conversation, str) or _is_conversation(conversation)):
            return None
        return render_call(True, template, {}, conversation, fmt, op_id or llm.id, marks)
    if any(not isinstance(seg, (str, Ref)) for seg in template):
        return None
    refs = {seg.op_id for seg in template if isinstance(seg, Ref)}
    if any(values.text_of(ref) is None for ref in refs):
        return None
    return render_call(False, template, {r: values.get(r) for r in refs}, None, fmt,
                       marks=marks)


@dataclass(frozen=True, slots=True)
class RenderedPrompts:
    """One LLM operator's known prompts by row (None: not computable), and what they were
    rendered from: a reader whose operator, chat-ness, template or format differ renders its
    own (``rows_for``)."""

    llm: LlmOp
    is_chat: bool
    template: Template
    fmt: ChatFormat
    by_row: dict[int, str | None] = field(default_factory=dict)

    def rows_for(self, llm: LlmOp, is_chat: bool, template: Template,
                 fmt: ChatFormat) -> dict[int, str | None] | None:
        """``by_row`` when rendered from exactly these, else None."""
        if (llm is self.llm and is_chat == self.is_chat and fmt is self.fmt
                and template == self.template):
            return self.by_row
        return None


def _is_conversation(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) for m in value)
