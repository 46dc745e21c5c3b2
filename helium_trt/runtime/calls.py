"""LLM calls of a plan: which (operator, row) pairs run, their token-level specs for the scheduler,
and segment-by-segment tokenization of prompts.

Prompts are tokenized one segment at a time (each literal and each substituted value on its
own) and concatenated, so a static prefix has the same tokens in every call that shares it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from helium_trt.optimizer.plan_values import RowValues
from helium_trt.plan.chat import ChatFormat
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import CacheFetchOp, LlmOp, Op, Ref, Template
from helium_trt.plan.prompt import llm_prompt_template
from helium_trt.scheduler import CallSpec, OutputLengths
from helium_trt.scheduler.prefix_index import pack

UNKNOWN_TEXT_TOKENS = 32  # estimate for a run-time placeholder not produced by an LLM call


def call_id(op_id: str, row: int) -> str:
    return f"{op_id}#{row}"


def llm_of(op: Op) -> LlmOp | None:
    """The LLM call an operator makes (a cache fetch's fallback for rows without a hit)."""
    if isinstance(op, LlmOp):
        return op
    if isinstance(op, CacheFetchOp):
        return op.fallback
    return None


class SegmentTokenizer:
    """Encodes prompt segments one by one; literal segments are memoized."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._memo: dict[str, tuple[int, ...]] = {}

    def encode(self, text: str) -> tuple[int, ...]:
        found = self._memo.get(text)
        if found is None:
            found = tuple(self._tokenizer.encode(text))
            if len(self._memo) < 65536:
                self._memo[text] = found
        return found

    def encode_segments(self, segments: Sequence[str]) -> tuple[int, ...]:
        out: list[int] = []
        for seg in segments:
            out.extend(self.encode(seg))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class PlannedCalls:
    """The plan's LLM calls: scheduler specs (plan order, row by row) and prompt templates.

    ``packed`` holds each call's known tokens as the scheduler's ``pack`` gives them, built from
    its operator's packed head and its own tail (the scheduler would pack every prompt whole).
    """

    specs: dict[str, CallSpec]
    templates: dict[str, Template]
    packed: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _OpPrompt:
    """What every row's call of one operator shares, worked out once per plan."""

    head: tuple[int, ...]  # tokens of the literal segments before the first placeholder
    packed_head: bytes  # ``pack(head)``
    # From the first placeholder on: a literal's tokens, or a placeholder's operator id.
    parts: tuple[tuple[int, ...] | str, ...]
    unknown_from: tuple[int, ...]  # estimated tokens of parts[i:], when parts[i] has no value
    num_decode_tokens: int


class _RowTokens:
    """Tokens of one row's plan-time values, each encoded once however many calls read it."""

    def __init__(self, values: RowValues, tok: SegmentTokenizer) -> None:
        self._values, self._tok = values, tok
        self._memo: dict[str, tuple[int, ...] | None] = {}

    def of(self, op_id: str) -> tuple[int, ...] | None:
        if op_id in self._memo:
            return self._memo[op_id]
        text = self._values.text_of(op_id)
        found = self._memo[op_id] = None if text is None else self._tok.encode(text)
        return found


def plan_calls(plan: Plan, rows: Sequence[dict], fmt: ChatFormat, tok: SegmentTokenizer,
               lengths: OutputLengths) -> PlannedCalls:
    llm_ops = {op.id: llm_of(op) for op in plan.ops if llm_of(op) is not None}
    templates = {op_id: llm_prompt_template(plan, llm, fmt) for op_id, llm in llm_ops.items()}
    prompts = {op_id: _op_prompt(plan, op_id, templates[op_id], tok, lengths)
               for op_id in llm_ops}
    llm_ids = set(llm_ops)
    deps = {op_id: plan.nearest_upstream(op_id, llm_ids) for op_id in llm_ids}
    llm_order = [op_id for op_id in plan.topo_order if op_id in llm_ops]
    hit_rows = {op.id: set(dict(op.hits)) for op in plan.ops if isinstance(op, CacheFetchOp)}
    specs: dict[str, CallSpec] = {}
    packed: dict[str, bytes] = {}
    for row_index, row in enumerate(rows):
        row_tokens = _RowTokens(RowValues(plan, row, fmt), tok)
        suffix = call_id("", row_index)  # call_id(op_id, row) is op_id + suffix
        for op_id in llm_order:
            if row_index in hit_rows.get(op_id, ()):
                continue
            prompt, cid = prompts[op_id], op_id + suffix
            spec = specs[cid] = _spec(op_id, row_index, prompt, row_tokens, cid,
                                      tuple([dep + suffix for dep in deps[op_id]]))
            packed[cid] = prompt.packed_head + pack(spec.known_tokens[len(prompt.head):])
    if any(hit_rows.values()):
        # Dependencies on cache-fetch hits are already satisfied.
        specs = {cid: _drop_missing(s, specs) for cid, s in specs.items()}
    return PlannedCalls(specs, templates, packed)


def _op_prompt(plan: Plan, op_id: str, template: Template, tok: SegmentTokenizer,
               lengths: OutputLengths) -> _OpPrompt:
    first = next((i for i, seg in enumerate(template) if not isinstance(seg, str)),
                 len(template))
    head = tok.encode_segments(template[:first])
    rest = template[first:]
    parts = tuple(tok.encode(seg) if isinstance(seg, str) else seg.op_id for seg in rest)
    unknown_from = [0] * (len(rest) + 1)
    for i in range(len(rest) - 1, -1, -1):
        unknown_from[i] = unknown_from[i + 1] + _estimate(plan, rest[i], lengths, tok)
    llm = llm_of(plan.by_id[op_id])
    return _OpPrompt(head, pack(head), parts, tuple(unknown_from),
                     lengths.estimate(op_id, llm.config.max_tokens))


def _spec(op_id: str, row: int, prompt: _OpPrompt, row_tokens: _RowTokens, cid: str,
          deps: tuple[str, ...]) -> CallSpec:
    """The call's known tokens: the operator's head, then parts until one has no value."""
    tail: list[int] = []
    num_unknown = 0
    for i, part in enumerate(prompt.parts):
        if isinstance(part, str):
            part = row_tokens.of(part)
            if part is None:
                num_unknown = prompt.unknown_from[i]
                break
        tail.extend(part)
    return CallSpec(cid, op_id, row, prompt.head + tuple(tail), num_unknown,
                    prompt.num_decode_tokens, deps, len(prompt.head))


def _estimate(plan: Plan, seg, lengths: OutputLengths, tok: SegmentTokenizer) -> int:
    if isinstance(seg, str):
        return len(tok.encode(seg))
    llm = llm_of(plan.by_id.get(seg.op_id)) if isinstance(seg, Ref) else None
    if llm is not None:
        return lengths.estimate(seg.op_id, llm.config.max_tokens)
    return UNKNOWN_TEXT_TOKENS


def _drop_missing(spec: CallSpec, specs: dict[str, CallSpec]) -> CallSpec:
    kept = tuple(d for d in spec.deps if d in specs)
    if kept == spec.deps:
        return spec
    return CallSpec(spec.call_id, spec.op_id, spec.row, spec.known_tokens,
                    spec.num_unknown_tokens, spec.num_decode_tokens, kept, spec.static_len)
