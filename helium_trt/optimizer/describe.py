"""Plain descriptions of operators and traces for EXPLAIN: one text line or one JSON object (pure)."""

from __future__ import annotations

from dataclasses import fields

from helium_trt.plan.ops import (
    CacheFetchOp, ConcatOp, ConstantOp, FormatOp, GenerationConfig, Index, InputOp, Item, LlmOp,
    LoopOp, MapOp, Message, Op, OutputOp, Ref, SwitchOp, ToolCallOp,
)

MAX_TEXT = 48


def template_text(template) -> str:
    """``("Hi ", Ref("q"))`` -> ``"Hi {q}"`` (literal braces doubled, as workflow files write them)."""
    out = []
    for seg in template:
        if isinstance(seg, str):
            out.append(seg.replace("{", "{{").replace("}", "}}"))
        elif isinstance(seg, Ref):
            out.append("{" + seg.op_id + "}")
        elif isinstance(seg, Item):
            out.append("{item}")
        elif isinstance(seg, Index):
            out.append("{index}")
    return "".join(out)


def describe_op(op: Op) -> str:
    """One line: ``id  kind  details`` with long text shortened."""
    return f"{op.id}  {op.kind}  {_details(op)}".rstrip()


def _details(op: Op) -> str:
    if isinstance(op, InputOp):
        return f"column={op.column}"
    if isinstance(op, ConstantOp):
        return _short(op.text)
    if isinstance(op, FormatOp):
        if op.is_chat:
            return " ".join(_message(m) for m in op.messages)
        return _short(template_text(op.template))
    if isinstance(op, LlmOp):
        return _llm(op)
    if isinstance(op, ConcatOp):
        return f"{', '.join(op.parts)} sep={op.separator!r}"
    if isinstance(op, MapOp):
        return f"over {op.list_id}: {_short(template_text(op.template))}"
    if isinstance(op, SwitchOp):
        cases = ", ".join(f"{c.value!r}->{c.target}" for c in op.cases)
        default = f" else {op.default_target}" if op.default_target is not None else ""
        return f"on {op.input} ({op.match}) {cases}{default}"
    if isinstance(op, LoopOp):
        stop = (f" stop={op.stop_regex!r} on {op.stop_on or op.result}" if op.stop_regex
                else "")
        return (f"init={op.init} x{op.max_iterations} body=[{', '.join(b.id for b in op.body)}]"
                f"{stop}")
    if isinstance(op, ToolCallOp):
        return f"{op.name}({', '.join(f'{k}={v}' for k, v in op.args)})"
    if isinstance(op, OutputOp):
        return f"{op.input} as {op.name or op.id}"
    if isinstance(op, CacheFetchOp):
        rows = ",".join(str(i) for i, _ in op.hits)
        fallback = f" else {_llm(op.fallback)}" if op.fallback is not None else " (all rows)"
        return f"hits rows [{rows}]{fallback}"
    return ""


def _llm(op: LlmOp) -> str:
    c = op.config
    extra = f" seed={c.seed}" if c.seed is not None else ""
    extra += f" n={c.n}" if c.n > 1 else ""
    extra += " ignore_eos" if c.ignore_eos else ""
    extra += f" max_tokens_from={c.max_tokens_from}" if c.max_tokens_from else ""
    extra += f" stop_from={c.stop_from}" if c.stop_from else ""
    history = " return_history" if op.return_history else ""
    model = f" model={op.model}" if op.model else ""
    return (f"prompt={op.prompt} mode={op.mode}{model} max_tokens={c.max_tokens} "
            f"temperature={c.temperature:g}{extra}{history}")


def _message(m: Message) -> str:
    if m.history is not None:
        return f"[history {m.history}]"
    return f"[{m.role}: {_short(template_text(m.template), MAX_TEXT // 2)}]"


def _short(text: str, width: int = MAX_TEXT) -> str:
    """``text`` cut to ``width`` characters, quoted with Python's escapes (a newline is \\n)."""
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def op_to_json(op: Op) -> dict:
    """Every field of ``op`` as JSON values; templates as text with ``{placeholders}``."""
    out: dict = {"id": op.id, "kind": op.kind}
    for f in fields(op):
        if f.name == "template":
            out[f.name] = template_text(op.template)
        elif f.name != "id":
            out[f.name] = _json_value(getattr(op, f.name))
    return out


def _json_value(value):
    if isinstance(value, Op):
        return op_to_json(value)
    if isinstance(value, GenerationConfig):
        return {f.name: _json_value(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Message):
        if value.history is not None:
            return {"history": value.history}
        return {"role": value.role, "template": template_text(value.template)}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _json_value(getattr(value, f.name)) for f in fields(value)}
    return value
