"""LLM prompts as templates: literal text and placeholders, chat rendered with a ChatFormat (pure).

``llm_prompt_template`` expands an LLM op's prompt through constant and format operators, so
the template holds as much literal text as plan time can know; only values that depend on rows
or on other LLM calls stay placeholders. The radix tree, the scheduler and the runtime all use
the same expansion, so what the tree calls a shared prefix is exactly what the engine sees.

Prompts are tokenized segment by segment (each literal and each substituted value on its own),
so a static prefix tokenizes identically whatever follows it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from helium_trt.plan.chat import ChatFormat
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import ConstantOp, FormatOp, Item, LlmOp, Message, Ref, Template

Conversation = list[dict]  # [{"role": ..., "content": ...}, ...]


def is_chat_prompt(plan: Plan, llm: LlmOp) -> bool:
    """Whether the call renders a conversation (explicit CHAT, or a messages/history prompt)."""
    if llm.mode != "auto":
        return llm.mode == "chat"
    src = plan.by_id.get(llm.prompt)
    if isinstance(src, FormatOp):
        return src.is_chat
    return isinstance(src, LlmOp) and src.return_history


def llm_prompt_template(plan: Plan, llm: LlmOp, fmt: ChatFormat) -> Template:
    """The full prompt of ``llm`` as literal text and Refs (a Ref to a conversation renders as chat)."""
    src = plan.by_id.get(llm.prompt)
    if not is_chat_prompt(plan, llm):
        return merge_literals(_expand_ref(plan, llm.prompt))
    if isinstance(src, FormatOp) and src.is_chat:
        body = messages_template(plan, src.messages, fmt)
    elif isinstance(src, LlmOp) and src.return_history:
        body = (Ref(llm.prompt),)
    else:  # a text prompt sent as one user message
        body = _default_system(fmt) + _message("user", _expand_ref(plan, llm.prompt), fmt)
    return merge_literals(body + (fmt.generation_prompt,))


def messages_template(plan: Plan, messages: Sequence[Message], fmt: ChatFormat) -> Template:
    out: list = []
    if messages and messages[0].history is None and messages[0].role != "system":
        out.extend(_default_system(fmt))
    for m in messages:
        if m.history is not None:
            out.append(Ref(m.history))
        else:
            out.extend(_message(m.role, _expand_template(plan, m.template), fmt))
    return tuple(out)


def render_conversation(conversation: Conversation, fmt: ChatFormat) -> str:
    """Chat text of a conversation value (no generation prompt)."""
    parts = []
    if conversation and conversation[0]["role"] != "system" and fmt.default_system is not None:
        parts.append(fmt.message_start.format(role="system") + fmt.default_system + fmt.message_end)
    for m in conversation:
        parts.append(fmt.message_start.format(role=m["role"]) + m["content"] + fmt.message_end)
    return "".join(parts)


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
    ``item``/``index`` fill the Item/Index placeholders. Literal segments are returned as they
    are, so callers can tokenize segment by segment.
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
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return render_conversation(value, fmt)
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    raise TypeError(f"cannot render {type(value).__name__} as prompt text")


def _message(role: str, content: Template, fmt: ChatFormat) -> Template:
    return (fmt.message_start.format(role=role), *content, fmt.message_end)


def _default_system(fmt: ChatFormat) -> Template:
    if fmt.default_system is None:
        return ()
    return _message("system", (fmt.default_system,), fmt)


def _expand_ref(plan: Plan, op_id: str, depth: int = 0) -> Template:
    op = plan.by_id.get(op_id)
    if isinstance(op, ConstantOp):
        return (op.text,)
    if isinstance(op, FormatOp) and not op.is_chat and depth < 64:
        return _expand_template(plan, op.template, depth + 1)
    return (Ref(op_id),)


def _expand_template(plan: Plan, template: Template, depth: int = 0) -> Template:
    out: list = []
    for seg in template:
        out.extend(_expand_ref(plan, seg.op_id, depth) if isinstance(seg, Ref) else (seg,))
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
