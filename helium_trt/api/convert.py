"""The only place protobuf messages become domain objects (and back), plus workflow files.

A workflow file is YAML or JSON in the protobuf JSON mapping of ``helium.v1.RunRequest``
(``workflow`` + ``rows`` + ``options``), or of a bare ``helium.v1.Workflow``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct, Value

from helium_trt.api.helium.v1 import service_pb2, workflow_pb2
from helium_trt.errors import InvalidWorkflowError
from helium_trt.plan import ops as ir
from helium_trt.plan.graph import Plan

DEFAULT_MAX_TOKENS = 128
_ROLES = {workflow_pb2.ROLE_SYSTEM: "system", workflow_pb2.ROLE_USER: "user",
          workflow_pb2.ROLE_ASSISTANT: "assistant", workflow_pb2.ROLE_UNSPECIFIED: "user"}
_MODES = {workflow_pb2.LLM_MODE_UNSPECIFIED: "auto", workflow_pb2.LLM_MODE_GENERATE: "generate",
          workflow_pb2.LLM_MODE_CHAT: "chat"}
_MATCH = {workflow_pb2.MATCH_KIND_UNSPECIFIED: "regex", workflow_pb2.MATCH_KIND_REGEX: "regex",
          workflow_pb2.MATCH_KIND_CHOICE: "choice"}
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def parse_template(text: str, *, op_id: str, field: str, in_map: bool = False) -> ir.Template:
    """``"Hi {name}!"`` -> ``("Hi ", Ref("name"), "!")``; ``{{``/``}}`` are literal braces."""
    segments: list[ir.Segment] = []
    literal: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        literal.append(text[pos:m.start()])
        pos = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
            continue
        if m.group(1) is None:
            raise InvalidWorkflowError(
                f"unbalanced {token!r} at character {m.start()} (write {token * 2} for a "
                "literal brace)", op_id=op_id, field=field)
        name = m.group(1).strip()
        if not name:
            raise InvalidWorkflowError(f"empty placeholder at character {m.start()}",
                                       op_id=op_id, field=field)
        if "".join(literal):
            segments.append("".join(literal))
        literal = []
        if in_map and name == "item":
            segments.append(ir.Item())
        elif in_map and name == "index":
            segments.append(ir.Index())
        else:
            segments.append(ir.Ref(name))
    literal.append(text[pos:])
    if "".join(literal):
        segments.append("".join(literal))
    return tuple(segments)


def plan_from_proto(workflow: workflow_pb2.Workflow, rows: tuple[dict, ...] = ()) -> Plan:
    return Plan(tuple(op_from_proto(op, i) for i, op in enumerate(workflow.ops)),
                workflow.name, rows)


def op_from_proto(op: workflow_pb2.Operator, index: int = 0) -> ir.Op:
    kind = op.WhichOneof("kind")
    oid = op.id
    if kind is None:
        raise InvalidWorkflowError("operator has no kind (input, format, llm, ...)",
                                   op_id=oid or f"#{index}", field="kind")
    m = getattr(op, kind)
    if kind == "input":
        return ir.InputOp(oid, column=m.column or oid)
    if kind == "constant":
        return ir.ConstantOp(oid, text=m.text)
    if kind == "format":
        return _format_from_proto(oid, m)
    if kind == "llm":
        return _llm_from_proto(oid, m)
    if kind == "concat":
        return ir.ConcatOp(oid, parts=tuple(m.inputs), separator=m.separator)
    if kind == "map":
        return ir.MapOp(oid, list_id=m.list,
                        template=parse_template(m.template, op_id=oid, field="template", in_map=True))
    if kind == "switch_op":
        cases = tuple(ir.SwitchCase(c.value, c.target) for c in m.cases)
        match = _enum(_MATCH, m.match, workflow_pb2.MatchKind, oid, "match")
        return ir.SwitchOp(oid, input=m.input, match=match, cases=cases,
                           default_target=m.default_target or None)
    if kind == "loop":
        body = tuple(op_from_proto(b, i) for i, b in enumerate(m.body))
        return ir.LoopOp(oid, init=m.init, state=m.state, result=m.result,
                         max_iterations=m.max_iterations, body=body,
                         stop_regex=m.stop_regex or None, stop_on=m.stop_on or None)
    if kind == "tool_call":
        return ir.ToolCallOp(oid, name=m.name, args=tuple(sorted(m.args.items())))
    if kind == "output":
        return ir.OutputOp(oid, input=m.input, name=m.name or oid)
    raise InvalidWorkflowError(f"unsupported operator kind {kind!r}", op_id=oid, field="kind")


def _format_from_proto(oid: str, m: workflow_pb2.FormatOp) -> ir.FormatOp:
    if m.template and m.messages:
        raise InvalidWorkflowError("set template or messages, not both", op_id=oid,
                                   field="messages")
    messages = []
    for i, msg in enumerate(m.messages):
        if msg.history and msg.template:
            raise InvalidWorkflowError("a message has a template or a history, not both",
                                       op_id=oid, field=f"messages[{i}]")
        if msg.history:
            messages.append(ir.Message(history=msg.history))
        else:
            tmpl = parse_template(msg.template, op_id=oid, field=f"messages[{i}].template")
            role = _enum(_ROLES, msg.role, workflow_pb2.Role, oid, f"messages[{i}].role")
            messages.append(ir.Message(role=role, template=tmpl))
    template = parse_template(m.template, op_id=oid, field="template")
    return ir.FormatOp(oid, template=template, messages=tuple(messages))


def _llm_from_proto(oid: str, m: workflow_pb2.LlmOp) -> ir.LlmOp:
    c = m.config
    config = ir.GenerationConfig(
        max_tokens=c.max_tokens if c.max_tokens != 0 else DEFAULT_MAX_TOKENS,
        temperature=c.temperature,
        top_p=c.top_p if c.HasField("top_p") else 1.0,
        top_k=c.top_k,
        seed=c.seed if c.HasField("seed") else None,
        stop=tuple(c.stop),
        ignore_eos=c.ignore_eos,
        n=c.n or 1,
        max_tokens_from=c.max_tokens_from or None,
        stop_from=c.stop_from or None,
    )
    mode = _enum(_MODES, m.mode, workflow_pb2.LlmMode, oid, "mode")
    return ir.LlmOp(oid, prompt=m.prompt, model=m.model, config=config, mode=mode,
                    return_history=m.return_history)


def _enum(names: dict[int, str], value: int, enum_type, op_id: str, field: str) -> str:
    """The domain name of an enum value; proto3 enums are open, so any int32 may arrive."""
    found = names.get(value)
    if found is None:
        known = ", ".join(enum_type.Name(v) for v in sorted(names) if v)
        raise InvalidWorkflowError(f"unknown value {value} (one of {known})", op_id=op_id,
                                   field=field)
    return found


def rows_from_proto(rows) -> tuple[dict, ...]:
    """Rows as plain dicts (numbers as floats, like the JSON mapping); a non-finite number is
    refused naming its row and column."""
    return tuple({k: _plain(v, f"rows[{i}].{k}") for k, v in row.fields.items()}
                 for i, row in enumerate(rows))


def _plain(value: Value, where: str):
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        if not math.isfinite(value.number_value):
            raise InvalidWorkflowError(f"numbers must be finite, got {value.number_value}",
                                       field=where)
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: _plain(v, f"{where}.{k}") for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v, f"{where}[{j}]") for j, v in enumerate(value.list_value.values)]
    return None


def rows_to_proto(rows) -> list[Struct]:
    out = []
    for row in rows:
        s = Struct()
        s.update(row)
        out.append(s)
    return out


# ---- workflow files -------------------------------------------------------------------------

# Bounds on a workflow or rows file's structure, checked before it becomes a message: nesting
# as deep as the protobuf decoder allows, and values counted with YAML aliases expanded (a
# 600-byte file of nested aliases stands for billions of values).
MAX_FILE_DEPTH = 100
MAX_FILE_VALUES = 500_000


def load_request_file(path: str | Path) -> service_pb2.RunRequest:
    """Read a YAML/JSON workflow file into a RunRequest; errors name the line or field."""
    data = _read_structured(Path(path))
    if not isinstance(data, dict):
        raise InvalidWorkflowError(f"{path}: the top level must be a mapping")
    if "workflow" not in data and "ops" in data:
        data = {"workflow": data}
    try:
        return json_format.ParseDict(data, service_pb2.RunRequest())
    except (json_format.ParseError, TypeError, ValueError, ArithmeticError) as exc:
        # NOTE: besides ParseError, json_format lets Python's own errors through for values of
        # the wrong type (``role: .inf`` is an OverflowError); all of them are bad input here.
        raise InvalidWorkflowError(f"{path}: {' '.join(str(exc).split())}") from None


def load_rows_file(path: str | Path) -> tuple[dict, ...]:
    """Rows as a YAML/JSON list of objects, or JSON Lines (one object per line)."""
    p = Path(path)
    if p.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(_read_text(p).splitlines(), 1):
            if line.strip():
                try:
                    rows.append(_check_shape(json.loads(line), f"{p}:{n}"))
                except json.JSONDecodeError as exc:
                    raise InvalidWorkflowError(f"{p}:{n}: {exc.msg}") from None
                except RecursionError:
                    raise InvalidWorkflowError(f"{p}:{n}: nested too deeply") from None
    else:
        rows = _read_structured(p)
        if isinstance(rows, dict) and "rows" in rows:
            rows = rows["rows"]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InvalidWorkflowError(f"{p}: rows must be a list of objects (column -> value)")
    return tuple(rows)


def _read_text(p: Path) -> str:
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InvalidWorkflowError(f"cannot read {p}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidWorkflowError(f"{p}:{line}: not UTF-8 text (byte {exc.start})") from None


def _check_shape(data, where: str):
    """``data`` when it nests at most MAX_FILE_DEPTH deep, holds at most MAX_FILE_VALUES values
    (aliases counted each time they are used) and no infinite or NaN number; walked without
    recursion. A path is a linked (parent, key) pair, spelled out only for an error."""
    stack, num_values = [(data, 0, None)], 0
    while stack:
        value, depth, path = stack.pop()
        num_values += 1
        if num_values > MAX_FILE_VALUES:
            raise InvalidWorkflowError(f"{where}: more than {MAX_FILE_VALUES:,} values (YAML "
                                       "aliases count each time they are used)")
        if depth > MAX_FILE_DEPTH:
            raise InvalidWorkflowError(f"nested more than {MAX_FILE_DEPTH} levels deep in {where}",
                                       field=_spell(path))
        if isinstance(value, dict):
            stack.extend((v, depth + 1, (path, k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, (path, i)) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidWorkflowError(f"numbers must be finite, got {value} in {where}",
                                       field=_spell(path))
    return data


def _spell(path) -> str:
    keys = []
    while path is not None:
        path, key = path
        keys.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(reversed(keys)).lstrip(".") or "(top level)"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses flow collections (``[``/``{``) nested past MAX_FILE_DEPTH while
    scanning: PyYAML's scanner costs time quadratic in that depth (5,000 levels: seconds)."""

    def fetch_flow_collection_start(self, token_class):
        if self.flow_level >= MAX_FILE_DEPTH:
            raise yaml.scanner.ScannerError(
                None, None, f"nested more than {MAX_FILE_DEPTH} levels deep", self.get_mark())
        super().fetch_flow_collection_start(token_class)


def _read_structured(p: Path):
    try:
        return _check_shape(_parse_text(p, _read_text(p)), str(p))
    except RecursionError:
        raise InvalidWorkflowError(f"{p}: nested too deeply") from None


def _parse_text(p: Path, text: str):
    if p.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidWorkflowError(f"{p}:{exc.lineno}:{exc.colno}: {exc.msg}") from None
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = " ".join((getattr(exc, "problem", None) or str(exc)).split())  # one line
        raise InvalidWorkflowError(f"{p}{where}: {problem}") from None


# ---- options --------------------------------------------------------------------------------

# Optimizations switch -> optimizer rule it turns off. The other switches (scheduling, warming,
# retention, KV reuse) belong to the scheduler and runtime, not to plan rewriting.
_RULE_SWITCHES = {
    "disable_eliminate_dead_ops": "eliminate_dead_ops",
    "disable_merge_identical_ops": "merge_identical_ops",
    "disable_fold_constants": "fold_constants",
    "disable_prune_switches": "prune_switches",
    "disable_prompt_cache": "fetch_cached_results",
}


def disabled_rules(optimizations: service_pb2.Optimizations) -> frozenset[str]:
    """Names of the optimizer rules a request's ``Optimizations`` switches turn off."""
    return frozenset(rule for switch, rule in _RULE_SWITCHES.items()
                     if getattr(optimizations, switch))
