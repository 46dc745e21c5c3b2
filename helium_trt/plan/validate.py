"""Plan validation: every error names the operator id and field at fault (pure)."""

from __future__ import annotations

import math
import re

import networkx as nx

from helium_trt.errors import InvalidWorkflowError, ResourceExhaustedError
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    ITERATION, CacheFetchOp, ConcatOp, ConstantOp, FormatOp, InputOp, LlmOp, LoopOp, MapOp, Op,
    OutputOp, Ref, SwitchOp, ToolCallOp, iter_templates,
)
from helium_trt.plan.patterns import PatternMatcher

ID_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")

# Characters (plus one per placeholder) a template may hold once constants and text formats are
# inlined, as fold_constants and every LLM prompt template do. Formats that repeat an input
# double it at every level: 30 levels of "{f}{f}" would be 2^30 characters.
MAX_EXPANDED_CHARS = 16 << 20

# Value kinds an operator yields, for checking what may feed an LLM prompt.
TEXT, LIST, CHAT, ANY, NOTHING = "text", "list", "chat", "any", "nothing"


def validate(plan: Plan, *, rows: tuple[dict, ...] | None = None,
             patterns: PatternMatcher | None = None) -> None:
    """Raise InvalidWorkflowError on the first problem found; return None when the plan is sound.

    ``rows``, when given, are checked against the declared inputs. ``patterns``, when given,
    must accept every switch regex and loop stop pattern (without it they are not checked:
    the engine that will match them decides what is valid).
    """
    if not plan.ops:
        raise InvalidWorkflowError("the workflow has no operators", field="ops")
    _check_ids(plan.ops)
    known = set(plan.by_id)
    for op in plan.ops:
        _check_op(op, known, patterns)
    _check_acyclic(plan)
    if not plan.outputs:
        raise InvalidWorkflowError("the workflow has no output operator", field="ops")
    kinds = value_kinds(plan)
    for op in plan.ops:
        _check_types(op, kinds)
    _check_expansion(plan)
    if rows is not None:
        _check_rows(plan, rows)


def value_kinds(plan: Plan) -> dict[str, str]:
    """What each operator yields: text, list, chat, any (data-dependent) or nothing."""
    kinds: dict[str, str] = {}
    for op_id in plan.topo_order:
        kinds[op_id] = _kind_of(plan.by_id[op_id], kinds)
    return kinds


def _kind_of(op: Op, kinds: dict[str, str]) -> str:
    if isinstance(op, InputOp):
        return ANY
    if isinstance(op, FormatOp):
        if op.is_chat:
            return CHAT
        return LIST if any(kinds.get(r) == LIST for r in op.inputs) else TEXT
    if isinstance(op, MapOp):
        return LIST
    if isinstance(op, LlmOp):
        if op.return_history:
            return CHAT
        return LIST if op.config.n > 1 or kinds.get(op.prompt) == LIST else TEXT
    if isinstance(op, CacheFetchOp):
        return _kind_of(op.fallback, kinds) if op.fallback is not None else ANY
    if isinstance(op, SwitchOp):
        found = {kinds.get(t, ANY) for t in op.targets}
        return found.pop() if len(found) == 1 else ANY
    if isinstance(op, LoopOp):
        return kinds.get(op.init, ANY)
    if isinstance(op, OutputOp):
        return NOTHING
    return TEXT  # constant, concat, tool call


def _check_ids(ops: tuple[Op, ...]) -> None:
    seen: set[str] = set()
    for i, op in enumerate(ops):
        if not op.id:
            raise InvalidWorkflowError(f"operator #{i} has an empty id", field=f"ops[{i}].id")
        if not ID_RE.match(op.id):
            raise InvalidWorkflowError(
                "id may hold only letters, digits, '_', '-' and '.'", op_id=op.id, field="id")
        if op.id in seen:
            raise InvalidWorkflowError("duplicate operator id", op_id=op.id, field="id")
        seen.add(op.id)


def _check_op(op: Op, known: set[str], patterns: PatternMatcher | None) -> None:
    for field_name, ref in _named_refs(op):
        if not ref:
            raise InvalidWorkflowError("missing operator reference", op_id=op.id, field=field_name)
        if ref not in known:
            raise InvalidWorkflowError(
                f"refers to unknown operator {ref!r}", op_id=op.id, field=field_name)
        if ref == op.id:
            raise InvalidWorkflowError("refers to itself", op_id=op.id, field=field_name)
    if isinstance(op, LlmOp):
        _check_generation(op)
    elif isinstance(op, SwitchOp):
        _check_switch(op, patterns)
    elif isinstance(op, LoopOp):
        _check_loop(op, known, patterns)
    elif isinstance(op, ToolCallOp) and not op.name:
        raise InvalidWorkflowError("a tool call needs a tool name", op_id=op.id, field="name")


def _named_refs(op: Op):
    """(field name, referenced id) pairs, so errors can name the field."""
    if isinstance(op, LoopOp):
        yield "init", op.init
        return
    if isinstance(op, LlmOp):
        yield "prompt", op.prompt
        yield from _config_refs(op)
    elif isinstance(op, OutputOp):
        yield "input", op.input
    elif isinstance(op, ConcatOp):
        yield from ((f"inputs[{i}]", p) for i, p in enumerate(op.parts))
    elif isinstance(op, MapOp):
        yield "list", op.list_id
        yield from (("template", r) for r in op.inputs[1:])
    elif isinstance(op, SwitchOp):
        yield "input", op.input
        yield from ((f"cases[{i}].target", c.target) for i, c in enumerate(op.cases))
        if op.default_target is not None:
            yield "default_target", op.default_target
    elif isinstance(op, FormatOp):
        if op.messages:
            for i, m in enumerate(op.messages):
                name = f"messages[{i}].history" if m.history is not None else f"messages[{i}].template"
                yield from ((name, r) for r in m.refs)
        else:
            yield from (("template", r) for r in op.inputs)
    elif isinstance(op, ToolCallOp):
        yield from ((f"args[{k!r}]", v) for k, v in op.args)
    elif isinstance(op, CacheFetchOp) and op.fallback is not None:
        yield "fallback.prompt", op.fallback.prompt
        yield from ((f"fallback.{name}", ref) for name, ref in _config_refs(op.fallback))


def _config_refs(op: LlmOp):
    for name in ("max_tokens_from", "stop_from"):
        ref = getattr(op.config, name)
        if ref is not None:
            yield f"config.{name}", ref


def _check_generation(op: LlmOp) -> None:
    c = op.config
    if c.max_tokens < 1:
        raise InvalidWorkflowError(f"max_tokens must be >= 1, got {c.max_tokens}",
                                   op_id=op.id, field="config.max_tokens")
    if not (math.isfinite(c.temperature) and c.temperature >= 0):
        raise InvalidWorkflowError(
            f"temperature must be a finite number >= 0, got {c.temperature}",
            op_id=op.id, field="config.temperature")
    if not 0 < c.top_p <= 1:
        raise InvalidWorkflowError(f"top_p must be in (0, 1], got {c.top_p}",
                                   op_id=op.id, field="config.top_p")
    if c.top_k < 0:
        raise InvalidWorkflowError(f"top_k must be >= 0, got {c.top_k}",
                                   op_id=op.id, field="config.top_k")
    if any(not s for s in c.stop):
        raise InvalidWorkflowError("stop strings must be non-empty", op_id=op.id, field="config.stop")
    if c.n < 1:
        raise InvalidWorkflowError(f"n must be >= 1, got {c.n}", op_id=op.id, field="config.n")
    if c.n > 1 and c.temperature == 0:
        raise InvalidWorkflowError(
            f"n = {c.n} samples need temperature > 0: greedy decoding gives n identical outputs",
            op_id=op.id, field="config.n")
    if op.mode not in ("auto", "generate", "chat"):
        raise InvalidWorkflowError(f"unknown mode {op.mode!r}", op_id=op.id, field="mode")


def _check_switch(op: SwitchOp, patterns: PatternMatcher | None) -> None:
    if not op.cases and op.default_target is None:
        raise InvalidWorkflowError("a switch needs cases or a default_target", op_id=op.id,
                                   field="cases")
    if op.match not in ("regex", "choice"):
        raise InvalidWorkflowError(f"unknown match kind {op.match!r}", op_id=op.id, field="match")
    if op.match == "regex":
        for i, case in enumerate(op.cases):
            _check_pattern(case.value, patterns, op.id, f"cases[{i}].value")


def _check_pattern(pattern: str, patterns: PatternMatcher | None, op_id: str, field: str) -> None:
    why = patterns.error(pattern) if patterns is not None else None
    if why is not None:
        raise InvalidWorkflowError(f"bad regular expression {pattern[:80]!r}: {why}",
                                   op_id=op_id, field=field)


def _check_loop(op: LoopOp, known: set[str], patterns: PatternMatcher | None) -> None:
    if op.max_iterations < 1:
        raise InvalidWorkflowError(
            "unbounded loop: max_iterations must be >= 1 (loops are unrolled at plan time)",
            op_id=op.id, field="max_iterations")
    if not op.body:
        raise InvalidWorkflowError("a loop needs a body", op_id=op.id, field="body")
    if not op.state:
        raise InvalidWorkflowError("a loop needs a state id", op_id=op.id, field="state")
    inner = {b.id for b in op.body}
    if op.result not in inner:
        raise InvalidWorkflowError(f"result {op.result!r} is not a body operator", op_id=op.id,
                                   field="result")
    clash = (inner | {op.state}) & known
    if clash:
        raise InvalidWorkflowError(f"body ids clash with workflow ids: {sorted(clash)}",
                                   op_id=op.id, field="body")
    _check_iteration_name(op, inner, known)
    if op.stop_regex:
        _check_pattern(op.stop_regex, patterns, op.id, "stop_regex")
    if op.stop_on is not None and op.stop_on not in inner:
        raise InvalidWorkflowError(f"stop_on {op.stop_on!r} is not a body operator",
                                   op_id=op.id, field="stop_on")
    visible = known | inner | {op.state, ITERATION}
    for b in op.body:
        _check_op(b, visible, patterns)
        if isinstance(b, (OutputOp, LoopOp)):
            raise InvalidWorkflowError(f"a loop body may not hold a {b.kind} operator",
                                       op_id=b.id, field="body")


def _check_iteration_name(op: LoopOp, inner: set[str], known: set[str]) -> None:
    """``iteration`` inside a body is the iteration number: no body operator or state may take
    the name, and a body may not read a workflow operator of that name (it would be hidden)."""
    if ITERATION in inner or op.state == ITERATION:
        raise InvalidWorkflowError(
            f"{ITERATION!r} is reserved inside a loop body (the iteration number)",
            op_id=op.id, field="state" if op.state == ITERATION else "body")
    if ITERATION in known and any(ITERATION in b.inputs for b in op.body):
        raise InvalidWorkflowError(
            f"the body reads {{{ITERATION}}}, which inside a loop is the iteration number, and "
            f"the workflow also has an operator {ITERATION!r}: rename that operator",
            op_id=op.id, field="body")


def _check_acyclic(plan: Plan) -> None:
    # NOTE: find_cycle walks every edge with a slow generic DFS; the topological-sort test is
    # several times faster and the common answer is "no cycle".
    if nx.is_directed_acyclic_graph(plan.graph):
        return
    try:
        cycle = nx.find_cycle(plan.graph)
    except nx.NetworkXNoCycle:
        return
    path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
    raise InvalidWorkflowError(
        f"cycle {path}; repeat work with a bounded loop operator instead",
        op_id=cycle[0][1], field="inputs")


def _check_expansion(plan: Plan) -> None:
    """Refuse a plan whose templates expand past MAX_EXPANDED_CHARS (RESOURCE_EXHAUSTED), in
    sizes only: the text itself would be built by the optimizer and the runtime."""
    inlined: dict[str, int] = {}  # constants and text formats: what a reference inlines
    for op_id in plan.topo_order:
        op = plan.by_id[op_id]
        if isinstance(op, ConstantOp):
            size = len(op.text)
        else:
            size = sum(len(seg) if isinstance(seg, str) else
                       inlined.get(seg.op_id, 1) if isinstance(seg, Ref) else 1
                       for template in iter_templates(op) for seg in template)
        if size > MAX_EXPANDED_CHARS:
            raise ResourceExhaustedError(
                f"operator {op_id!r}, field 'template': expands to {size:,} characters through "
                f"the constants and formats it reads, over the limit of {MAX_EXPANDED_CHARS:,}")
        if isinstance(op, ConstantOp) or (isinstance(op, FormatOp) and not op.is_chat):
            inlined[op_id] = size


def _check_types(op: Op, kinds: dict[str, str]) -> None:
    for field_name, ref in _named_refs(op):
        if kinds.get(ref) == NOTHING:
            raise InvalidWorkflowError(f"{ref!r} is an output operator and yields no value",
                                       op_id=op.id, field=field_name)
    if isinstance(op, LlmOp):
        for field_name, ref in _config_refs(op):
            if kinds.get(ref) == CHAT:
                raise InvalidWorkflowError(f"{ref!r} yields a conversation, not text",
                                           op_id=op.id, field=field_name)
        prompt_kind = kinds.get(op.prompt)
        if op.mode == "generate" and prompt_kind == CHAT:
            raise InvalidWorkflowError(
                f"prompt {op.prompt!r} is a conversation; use mode CHAT or a text template",
                op_id=op.id, field="prompt")
    if isinstance(op, FormatOp):
        for i, m in enumerate(op.messages):
            if m.history is not None and kinds.get(m.history) not in (CHAT, ANY):
                raise InvalidWorkflowError(
                    f"history {m.history!r} is not a conversation (an LLM op with "
                    "return_history, or a messages format)", op_id=op.id,
                    field=f"messages[{i}].history")


def _check_rows(plan: Plan, rows: tuple[dict, ...]) -> None:
    for op in plan.ops:
        if not isinstance(op, InputOp):
            continue
        for i, row in enumerate(rows):
            if op.column not in row:
                raise InvalidWorkflowError(f"row {i} has no column {op.column!r}",
                                           op_id=op.id, field=f"rows[{i}].{op.column}")
            value = row[op.column]
            if not isinstance(value, str) and not (
                    isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise InvalidWorkflowError(
                    f"row {i} column {op.column!r} must be a string or a list of strings",
                    op_id=op.id, field=f"rows[{i}].{op.column}")
