"""LLM calls of a plan: which (operator, row) pairs run, their token-level specs for the scheduler,
and their prompts' token ids.

A prompt's ids are the tokenizer's encoding of the whole rendered prompt, as the model's own
preprocessing makes them (``PromptTokenizer``: the engine tokenizer's ``encode_prompt``, data
kept data). What every row's call of an operator shares is its static prefix's *stable* tokens:
the leading tokens of that encoding that no continuation can change, so the prefix a warm-up
computes is a token prefix of every prompt that starts with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Mapping, Sequence

from helium_trt.cache.trt import common_prefix_len
from helium_trt.errors import ResourceExhaustedError
from helium_trt.optimizer.known_prompts import RenderedPrompts, known_prompt
from helium_trt.optimizer.plan_values import RowValues, row_independent_values
from helium_trt.plan.chat import ChatFormat, mark_data, unmark
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    CacheFetchOp, ConcatOp, ConstantOp, FormatOp, InputOp, LlmOp, Op, Ref, Template,
)
from helium_trt.plan.prompt import (
    is_chat_prompt, prompt_templates, render_call, static_prefix,
)
from helium_trt.scheduler import CallSpec, OutputLengths
from helium_trt.runtime.cancel import CancelToken
from helium_trt.runtime.static_tokens import StaticTokens
from helium_trt.runtime.values import utf8_size_over
from helium_trt.scheduler.prefix_index import pack

UNKNOWN_TEXT_TOKENS = 32  # estimate for a run-time placeholder not produced by an LLM call
_MAX_MEMO = 65536
# Operators whose values plan time can compute from rows (optimizer.plan_values).
_PLAN_TIME_KINDS = (InputOp, ConstantOp, FormatOp, ConcatOp)
_UNRENDERED = object()


def call_id(op_id: str, row: int) -> str:
    return f"{op_id}#{row}"


def llm_of(op: Op) -> LlmOp | None:
    """The LLM call an operator makes (a cache fetch's fallback for rows without a hit)."""
    if isinstance(op, LlmOp):
        return op
    if isinstance(op, CacheFetchOp):
        return op.fallback
    return None


class PromptTokenizer:
    """One run's prompt encoding over an engine tokenizer, memoized across its calls.

    ``encode_prompt`` takes a rendered prompt with its data marked (plan.chat) and returns the
    tokenizer's encoding of the whole text; ``stable_prefix`` the leading tokens of a prefix's
    encoding that no continuation can change. A tokenizer with only ``encode`` gets the whole
    unmarked text encoded (its data is not kept from becoming control tokens).

    With ``max_bytes`` (the server's --max-prompt-bytes), a prompt longer than that is refused
    with ResourceExhaustedError before it is encoded. ``static`` keeps the ids of static text
    (``static_prefix``, ``encode``) across runs (runtime.static_tokens); without it they are
    kept for this run only.
    """

    def __init__(self, tokenizer, max_bytes: int | None = None,
                 static: StaticTokens | None = None) -> None:
        self._tokenizer = tokenizer
        self._max_bytes = max_bytes
        self._whole = hasattr(tokenizer, "encode_prompt")
        self._static = static if static is not None else StaticTokens(tokenizer)
        # The engine tokenizer's memo of text between control tokens.
        self._chunks: dict = self._static.chunks()
        self._prefixes: dict[str, tuple[int, ...]] = {}

    def encode_prompt(self, text: str) -> tuple[int, ...]:
        self._check_size(text)
        if not self._whole:
            return tuple(self._tokenizer.encode(unmark(text)))
        memo = self._chunks if len(self._chunks) < _MAX_MEMO else None
        return tuple(self._tokenizer.encode_prompt(text, memo))

    def stable_prefix(self, text: str) -> tuple[int, ...]:
        found = self._prefixes.get(text)
        if found is None:
            self._check_size(text)
            if self._whole:
                memo = self._chunks if len(self._chunks) < _MAX_MEMO else None
                found = tuple(self._tokenizer.stable_prefix(text, memo))
            else:  # NOTE: without the tokenizer's help, the last token may change: leave it out
                found = tuple(self._tokenizer.encode(unmark(text)))[:-1]
            if len(self._prefixes) < _MAX_MEMO:
                self._prefixes[text] = found
        return found

    def static_prefix(self, text: str) -> tuple[int, ...]:
        """``stable_prefix`` of text every request of the workflow holds (a template's literal
        text before its first value), kept in the static memo."""
        self._check_size(text)  # as stable_prefix would, whatever an earlier run's limit
        found = self._static.prefix(text)
        if found is None:
            num_chunks = len(self._chunks)
            found = self.stable_prefix(text)
            self._static.add_prefix(text, found, islice(self._chunks.items(), num_chunks, None))
        return found

    def _check_size(self, text: str) -> None:
        if self._max_bytes is None:
            return
        num_bytes = utf8_size_over([text], self._max_bytes)
        if num_bytes is not None:
            raise ResourceExhaustedError(
                f"the prompt is {num_bytes:,} bytes, over the server's limit of "
                f"{self._max_bytes:,} bytes per prompt (refused before tokenizing)")

    def encode(self, text: str) -> tuple[int, ...]:
        """Ids of plain static ``text`` on its own (estimates), kept in the static memo."""
        found = self._static.text(text)
        if found is None:
            found = tuple(self._tokenizer.encode(text))
            self._static.add_text(text, found)
        return found


@dataclass(frozen=True, slots=True)
class PlannedCalls:
    """The plan's LLM calls: scheduler specs (plan order, row by row) and prompt templates.

    ``packed`` holds each call's known tokens as the scheduler's ``pack`` gives them, built from
    its operator's packed head and its own tail (the scheduler would pack every prompt whole).
    ``chat`` names the operators whose prompt is a conversation.
    """

    specs: dict[str, CallSpec]
    templates: dict[str, Template]
    packed: dict[str, bytes] = field(default_factory=dict)
    chat: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _OpPrompt:
    """What every row's call of one operator shares, worked out once per plan."""

    llm: LlmOp
    is_chat: bool
    template: Template
    head_text: str  # the literal text before the first placeholder
    head: tuple[int, ...]  # its stable tokens
    packed_head: bytes  # ``pack(head)``
    first: int  # index in ``template`` of the first placeholder
    may_be_known: bool  # no LLM call, tool, map or switch upstream: plan time may know it all
    unknown_from: tuple[int, ...]  # estimated tokens of template[first + i:]
    num_decode_tokens: int
    rendered: Mapping[int, str | None]  # rows' known prompts the cache lookup rendered already


def render_prompt(calls: PlannedCalls, op_id: str, values: Mapping[str, object], prompt_value,
                  fmt: ChatFormat) -> str:
    """One call's rendered prompt with its data marked (``unmark`` gives the model's text)."""
    return render_call(op_id in calls.chat, calls.templates[op_id], values, prompt_value, fmt,
                       op_id)


def plan_calls(plan: Plan, rows: Sequence[dict], fmt: ChatFormat, tok: PromptTokenizer,
               lengths: OutputLengths, model: str | None = None,
               cancel: CancelToken | None = None,
               rendered: Mapping[str, RenderedPrompts] | None = None) -> PlannedCalls:
    """The calls of ``plan``'s LLM operators (only those on ``model`` when given: each served
    model plans its own calls with its own format and tokenizer). A set ``cancel`` stops it
    with PlanningCancelled before the next prompt is rendered and tokenized. ``rendered``: the
    known prompts the optimizer's cache lookup rendered (OptimizeContext.rendered_prompts),
    used where they were rendered from this plan's operator, template and format."""
    cancel = cancel if cancel is not None else CancelToken()
    rendered = rendered or {}
    llm_ops = {op.id: llm for op in plan.ops
               if (llm := llm_of(op)) is not None and (model is None or llm.model == model)}
    both = {op_id: prompt_templates(plan, llm, fmt) for op_id, llm in llm_ops.items()}
    templates = {op_id: plain for op_id, (plain, _) in both.items()}
    run_time = {op.id for op in plan.ops if not isinstance(op, _PLAN_TIME_KINDS)}
    # The scheduler's static prefixes and estimates see through spliced histories and maps.
    prompts = {op_id: _op_prompt(plan, llm, both[op_id][1], tok, lengths,
                                 not plan.nearest_upstream(op_id, run_time), fmt,
                                 rendered.get(op_id))
               for op_id, llm in llm_ops.items()}
    llm_ids = set(llm_ops)
    deps = {op_id: plan.nearest_upstream(op_id, llm_ids) for op_id in llm_ids}
    llm_order = [op_id for op_id in plan.topo_order if op_id in llm_ops]
    hit_rows = {op.id: set(dict(op.hits)) for op in plan.ops if isinstance(op, CacheFetchOp)}
    specs: dict[str, CallSpec] = {}
    packed: dict[str, bytes] = {}
    shared, orders, data_marks = row_independent_values(plan, fmt), {}, {}
    for row_index, row in enumerate(rows):
        values, marks = RowValues(plan, row, fmt, shared, orders), {}
        suffix = call_id("", row_index)  # call_id(op_id, row) is op_id + suffix
        for op_id in llm_order:
            if row_index in hit_rows.get(op_id, ()):
                continue
            prompt, cid = prompts[op_id], op_id + suffix
            # Per call, not per row: one call's prompt may take a second to tokenize (1 MB).
            cancel.check("at operator %r, row %d of %d", op_id, row_index, len(rows))
            try:
                known, num_unknown = _known_tokens(op_id, row_index, prompt, values, marks,
                                                   fmt, tok, data_marks)
            except ResourceExhaustedError as exc:
                raise ResourceExhaustedError(f"operator {op_id!r}, row {row_index}: {exc}") \
                    from None
            static_len = common_prefix_len(prompt.head, known)
            specs[cid] = CallSpec(cid, op_id, row_index, known, num_unknown,
                                  prompt.num_decode_tokens,
                                  tuple([dep + suffix for dep in deps[op_id]]), static_len)
            packed[cid] = (prompt.packed_head + pack(known[static_len:])
                           if static_len == len(prompt.head) else pack(known))
    if any(hit_rows.values()):
        # Dependencies on cache-fetch hits are already satisfied.
        specs = {cid: _drop_missing(s, specs) for cid, s in specs.items()}
    chat = frozenset(op_id for op_id, p in prompts.items() if p.is_chat)
    return PlannedCalls(specs, templates, packed, chat)


def _op_prompt(plan: Plan, llm: LlmOp, template: Template, tok: PromptTokenizer,
               lengths: OutputLengths, may_be_known: bool, fmt: ChatFormat,
               rendered: RenderedPrompts | None) -> _OpPrompt:
    first = next((i for i, seg in enumerate(template) if not isinstance(seg, str)),
                 len(template))
    head_text = static_prefix(template)
    head = tok.static_prefix(head_text) if head_text else ()
    rest = template[first:]
    unknown_from = [0] * (len(rest) + 1)
    for i in range(len(rest) - 1, -1, -1):
        unknown_from[i] = unknown_from[i + 1] + _estimate(plan, rest[i], lengths, tok)
    is_chat = is_chat_prompt(plan, llm)
    by_row = rendered.rows_for(llm, is_chat, template, fmt) if rendered is not None else None
    return _OpPrompt(llm, is_chat, template, head_text, head, pack(head),
                     first, may_be_known, tuple(unknown_from),
                     lengths.estimate(llm.id, llm.config.max_tokens), by_row or {})


def _known_tokens(op_id: str, row: int, prompt: _OpPrompt, values: RowValues,
                  marks: dict[str, str], fmt: ChatFormat, tok: PromptTokenizer,
                  data_marks: dict[str, str]) -> tuple[tuple[int, ...], int]:
    """(known tokens, estimated unknown tokens) of one row's call: the whole prompt's encoding
    when plan time knows all of it, else the stable tokens of what it knows up to the first
    placeholder without a value. ``marks`` memoizes the row's values marked as data by op id,
    ``data_marks`` the run's by text."""
    marked = None
    if prompt.may_be_known:
        marked = prompt.rendered.get(row, _UNRENDERED)
        if marked is _UNRENDERED:
            marked = known_prompt(prompt.llm, prompt.is_chat, prompt.template, values, fmt,
                                  op_id, data_marks)
    if marked is not None:
        return tok.encode_prompt(marked), 0
    text = [prompt.head_text]
    rest = prompt.template[prompt.first:]
    for i, seg in enumerate(rest):
        if isinstance(seg, str):
            text.append(seg)
            continue
        value = values.get(seg.op_id) if isinstance(seg, Ref) else None
        if not isinstance(value, str):  # a conversation is rendered whole, or not at all
            break
        marked = marks.get(seg.op_id)
        if marked is None:
            marked = marks[seg.op_id] = mark_data(value, fmt)
        text.append(marked)
    else:
        i = len(rest)
    known = tok.stable_prefix("".join(text)) if len(text) > 1 else prompt.head
    return known, prompt.unknown_from[i]


def _estimate(plan: Plan, seg, lengths: OutputLengths, tok: PromptTokenizer) -> int:
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
