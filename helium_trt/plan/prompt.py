"""LLM prompts as templates: literal text and placeholders, chat rendered by the model's format (pure).

``llm_prompt_template`` expands an LLM op's prompt through constant and format operators, so
the template holds as much literal text as plan time can know; only values that depend on rows
or on other LLM calls stay placeholders. A chat prompt's template comes from rendering the
conversation with the model's own chat format, a unique sentinel standing in for each
placeholder, and splitting the text at the sentinels: the template's framing, defaults and
whitespace become literal text without assuming any format. The radix tree, the scheduler and
explain read these templates. ``expanded_prompt_template`` also sees through spliced histories
and maps (what the templated radix tree and the scheduler's static prefixes need).

``render_call`` is the exact prompt of one call once its values are known (a chat prompt is
rendered whole by the chat format, as the model's own preprocessing would), with its data
marked (plan.chat) so that no value can become a control token.
"""

from __future__ import annotations

import os
import re
from typing import Mapping, Sequence

from helium_trt.plan.chat import (
    ChatFormat, ChatTemplateError, mark_conversation, mark_data, mark_memoized, render_chat,
)
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    ConstantOp, FormatOp, Item, LlmOp, MapOp, Message, Ref, Segment, Template,
)

_SENTINEL = re.compile("\ufdd2([0-9]+)\ufdd3")
# A spliced conversation of unknown messages renders through stand-ins: (role, is the Ref).
# The first that the template accepts gives the template; the static text before the history
# is what every accepted stand-in agrees on (a history may start with a system message).
_HISTORY_STANDINS = (
    (("user", True), ("assistant", False)),
    (("system", True), ("user", False), ("assistant", False)),
    (("user", True),),
)
# A chat message before rendering: (role, content template), or the op id of a spliced history.
_ChatForm = tuple[str, Template] | str
# How deep expansion follows formats, maps and histories into one another.
_MAX_DEPTH = 64


def is_chat_prompt(plan: Plan, llm: LlmOp) -> bool:
    """Whether the call renders a conversation (explicit CHAT, or a messages/history prompt)."""
    if llm.mode != "auto":
        return llm.mode == "chat"
    src = plan.by_id.get(llm.prompt)
    if isinstance(src, FormatOp):
        return src.is_chat
    return isinstance(src, LlmOp) and src.return_history


def llm_prompt_template(plan: Plan, llm: LlmOp, fmt: ChatFormat) -> Template:
    """The full prompt of ``llm`` as literal text and Refs (a chat prompt as its model renders it).

    Raises ChatTemplateError (naming ``llm``) when the chat format refuses the conversation.
    """
    return _prompt_template(plan, llm, fmt, expand=False)


def expanded_prompt_template(plan: Plan, llm: LlmOp, fmt: ChatFormat) -> Template:
    """``llm_prompt_template`` seen through what plan time knows of spliced conversations and
    maps, so that prefixes they share are visible: a history spliced from an LLM op with
    ``return_history`` (or from a messages format) becomes the messages it holds, the reply a
    placeholder naming that op; a map's element becomes the map's template, its ``{item}`` the
    list operator (element i of a list is what a per-element call sees), ``{index}`` kept.

    For the templated radix tree and the scheduler's static prefixes and estimates only: the
    runtime reads its values through ``llm_prompt_template`` and renders each call whole.
    """
    return _prompt_template(plan, llm, fmt, expand=True)


def prompt_templates(plan: Plan, llm: LlmOp, fmt: ChatFormat) -> tuple[Template, Template]:
    """(``llm_prompt_template``, ``expanded_prompt_template``) of ``llm``.

    NOTE: a chat prompt whose messages expanding leaves unchanged (no spliced history, no map)
    is rendered once for both: the chat template is most of the cost of either.
    """
    if not is_chat_prompt(plan, llm):
        return (merge_literals(_expand_ref(plan, llm.prompt, expand=False)),
                merge_literals(_expand_ref(plan, llm.prompt, expand=True)))
    forms = _chat_forms(plan, llm, False)
    expanded_forms = _chat_forms(plan, llm, True)
    template = _chat_template(forms, fmt, llm.id)
    if expanded_forms == forms:
        return template, template
    return template, _chat_template(expanded_forms, fmt, llm.id)


def _prompt_template(plan: Plan, llm: LlmOp, fmt: ChatFormat, expand: bool) -> Template:
    if not is_chat_prompt(plan, llm):
        return merge_literals(_expand_ref(plan, llm.prompt, expand=expand))
    return _chat_template(_chat_forms(plan, llm, expand), fmt, llm.id)


def _chat_template(forms: tuple[_ChatForm, ...], fmt: ChatFormat, op_id: str) -> Template:
    rendered, first_error = [], None
    standins = _HISTORY_STANDINS if any(isinstance(f, str) for f in forms) else _HISTORY_STANDINS[:1]
    for standin in standins:
        try:
            rendered.append(_render_placeholders(forms, standin, fmt, op_id))
        except ChatTemplateError as exc:
            first_error = first_error or exc
    if not rendered:
        raise first_error
    template = _split_at_sentinels(*rendered[0])
    if len(rendered) > 1 and template and isinstance(template[0], str):
        heads = [text[:m.start()] if (m := _SENTINEL.search(text)) else text for text, _ in rendered]
        template = merge_literals((os.path.commonprefix(heads), *template[1:]))
    return template


def render_call(chat: bool, template: Template, values: Mapping[str, object], prompt_value,
                fmt: ChatFormat, op_id: str | None = None,
                marks: dict[str, str] | None = None) -> str:
    """One call's exact prompt with its data marked (``plan.chat.unmark`` gives the text).

    A text prompt is ``template`` with each placeholder's value as data; a chat prompt is the
    conversation ``prompt_value`` (a text value: one user message) rendered whole by ``fmt``
    with a generation prompt, every role and content as data. ``marks`` memoizes texts marked
    as data (plan.chat.mark_memoized) across the calls that share it.
    """
    if not chat:
        mark = (lambda text: mark_data(text, fmt)) if marks is None else \
            (lambda text: mark_memoized(text, fmt, marks))
        return "".join(seg if isinstance(seg, str) else mark(value_text(values[seg.op_id], fmt))
                       for seg in template)
    if isinstance(prompt_value, list) and prompt_value and isinstance(prompt_value[0], dict):
        conversation = prompt_value
    else:
        conversation = [{"role": "user", "content": value_text(prompt_value, fmt)}]
    return render_chat(fmt, mark_conversation(conversation, fmt, marks), True, op_id)


def static_prefix(template: Template) -> str:
    """Literal text before the first placeholder."""
    out = []
    for seg in template:
        if not isinstance(seg, str):
            break
        out.append(seg)
    return "".join(out)


def substitute(template: Template, values: Mapping[str, object], fmt: ChatFormat,
               item: str | None = None, index: int | None = None) -> list[str]:
    """Per-segment strings of a template with every Ref replaced by its value.

    A conversation value renders with ``fmt``; a list value joins with newlines. Inside a map,
    ``item``/``index`` fill the Item/Index placeholders.
    """
    out = []
    for seg in template:
        if isinstance(seg, str):
            out.append(seg)
        elif isinstance(seg, Ref):
            out.append(value_text(values[seg.op_id], fmt))
        elif isinstance(seg, Item):
            out.append(item if item is not None else "")
        elif index is not None:
            out.append(str(index))
        else:
            raise ValueError(f"map placeholder {seg!r} outside a map")
    return out


def value_text(value: object, fmt: ChatFormat) -> str:
    """A value as prompt text: a conversation rendered by ``fmt`` (no generation prompt), a
    list one element a line."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return render_chat(fmt, value, False)
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    raise TypeError(f"cannot render {type(value).__name__} as prompt text")


def _chat_forms(plan: Plan, llm: LlmOp, expand: bool = False,
                depth: int = 0) -> tuple[_ChatForm, ...]:
    src = plan.by_id.get(llm.prompt)
    if isinstance(src, FormatOp) and src.is_chat:
        return _message_forms(plan, src.messages, expand, depth)
    if isinstance(src, LlmOp) and src.return_history:
        return _history_forms(plan, llm.prompt, depth) if expand else (llm.prompt,)
    # A text prompt sent as one user message.
    return (("user", _expand_ref(plan, llm.prompt, expand=expand)),)


def _message_forms(plan: Plan, messages: Sequence[Message], expand: bool,
                   depth: int) -> tuple[_ChatForm, ...]:
    forms: list[_ChatForm] = []
    for m in messages:
        if m.history is None:
            forms.append((m.role, _expand_template(plan, m.template, expand=expand)))
        elif expand:
            forms.extend(_history_forms(plan, m.history, depth))
        else:
            forms.append(m.history)
    return tuple(forms)


def _history_forms(plan: Plan, op_id: str, depth: int) -> tuple[_ChatForm, ...]:
    """The messages of the conversation ``op_id`` yields as far as plan time sees them: an LLM
    op with return_history is its prompt's messages and its reply; a messages format its
    messages; anything else (a row column) an opaque history."""
    src = plan.by_id.get(op_id)
    if depth < _MAX_DEPTH:
        if isinstance(src, LlmOp) and src.return_history:
            return (*_chat_forms(plan, src, True, depth + 1), ("assistant", (Ref(op_id),)))
        if isinstance(src, FormatOp) and src.is_chat:
            return _message_forms(plan, src.messages, True, depth + 1)
    return (op_id,)


def _render_placeholders(forms: Sequence[_ChatForm], standin, fmt: ChatFormat,
                         op_id: str) -> tuple[str, list[Segment | None]]:
    """The conversation rendered with a sentinel for each placeholder; the sentinels' segments
    (None for a stand-in message that stands for nothing)."""
    slots: list[Segment | None] = []

    def sentinel(seg: Segment | None) -> str:
        slots.append(seg)
        return f"\ufdd2{len(slots) - 1}\ufdd3"

    messages = []
    for form in forms:
        if isinstance(form, str):
            messages.extend({"role": role, "content": sentinel(Ref(form) if is_ref else None)}
                            for role, is_ref in standin)
        else:
            role, template = form
            content = "".join(seg if isinstance(seg, str) else sentinel(seg) for seg in template)
            messages.append({"role": role, "content": content})
    return render_chat(fmt, messages, True, op_id), slots


def _split_at_sentinels(text: str, slots: list[Segment | None]) -> Template:
    out: list = []
    pos = 0
    for m in _SENTINEL.finditer(text):
        out.append(text[pos:m.start()])
        seg = slots[int(m.group(1))]
        if seg is not None:
            out.append(seg)
        pos = m.end()
    out.append(text[pos:])
    return merge_literals(out)


def _expand_ref(plan: Plan, op_id: str, depth: int = 0, expand: bool = False) -> Template:
    op = plan.by_id.get(op_id)
    if isinstance(op, ConstantOp):
        return (op.text,)
    if isinstance(op, FormatOp) and not op.is_chat and depth < _MAX_DEPTH:
        return _expand_template(plan, op.template, depth + 1, expand)
    if expand and isinstance(op, MapOp) and depth < _MAX_DEPTH:
        element = tuple(Ref(op.list_id) if isinstance(seg, Item) else seg for seg in op.template)
        return _expand_template(plan, element, depth + 1, expand)
    return (Ref(op_id),)


def _expand_template(plan: Plan, template: Template, depth: int = 0,
                     expand: bool = False) -> Template:
    out: list = []
    for seg in template:
        out.extend(_expand_ref(plan, seg.op_id, depth, expand) if isinstance(seg, Ref) else (seg,))
    return tuple(out)


def merge_literals(template) -> Template:
    """Adjacent literals joined, empty ones dropped: ("a", "b", Ref) -> ("ab", Ref)."""
    out: list = []
    for seg in template:
        if isinstance(seg, str):
            if not seg:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += seg
                continue
        out.append(seg)
    return tuple(out)
