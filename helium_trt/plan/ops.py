"""Operator IR: frozen dataclasses, one per operator kind (pure).

A template is a tuple of segments: literal ``str`` or a ``Ref`` to another operator's output
(``Item``/``Index`` inside a map). Values flowing between operators at run time are ``str``,
``list[str]`` (map results, list columns) or a conversation (``list[dict]`` of role/content).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Union


@dataclass(frozen=True, slots=True)
class Ref:
    """Placeholder for another operator's output."""

    op_id: str


@dataclass(frozen=True, slots=True)
class Item:
    """The current element inside a MapOp template."""


@dataclass(frozen=True, slots=True)
class Index:
    """The current element's position inside a MapOp template."""


Segment = Union[str, Ref, Item, Index]
Template = tuple[Segment, ...]


def template_refs(template: Template) -> tuple[str, ...]:
    return tuple(s.op_id for s in template if isinstance(s, Ref))


@dataclass(frozen=True, slots=True)
class GenerationConfig:
    """Generation settings of an LLM operator.

    ``n`` > 1 samples the prompt n times (sample j with seed ``seed + j`` when a seed is set);
    the operator's value is then the list of the samples. ``max_tokens_from`` / ``stop_from``
    name operators whose value (per row, per element of a list) gives that call's max_tokens
    (a whole number as text) or one more stop string; they are resolved per call at run time.
    """

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    n: int = 1
    max_tokens_from: str | None = None
    stop_from: str | None = None

    @property
    def is_deterministic(self) -> bool:
        """Greedy, or sampling with a fixed seed: the same prompt always gives the same text."""
        return self.temperature == 0.0 or self.seed is not None

    @property
    def refs(self) -> tuple[str, ...]:
        """Operators the settings read (``max_tokens_from``, ``stop_from``)."""
        return tuple(r for r in (self.max_tokens_from, self.stop_from) if r is not None)


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message (role + template), or a spliced conversation when ``history`` is set."""

    role: str = "user"
    template: Template = ()
    history: str | None = None

    @property
    def refs(self) -> tuple[str, ...]:
        return (self.history,) if self.history is not None else template_refs(self.template)


@dataclass(frozen=True, slots=True)
class Op:
    """Base of all operators. ``id`` is unique in a plan."""

    id: str

    @property
    def inputs(self) -> tuple[str, ...]:
        """Ids of the operators this one reads, in a stable order."""
        return ()

    kind = "op"


@dataclass(frozen=True, slots=True)
class InputOp(Op):
    column: str = ""
    kind = "input"


@dataclass(frozen=True, slots=True)
class ConstantOp(Op):
    text: str = ""
    kind = "constant"


@dataclass(frozen=True, slots=True)
class FormatOp(Op):
    """Text from a template (``messages`` empty) or a conversation from ``messages``."""

    template: Template = ()
    messages: tuple[Message, ...] = ()
    kind = "format"

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)

    @property
    def inputs(self) -> tuple[str, ...]:
        if self.messages:
            return _dedupe(r for m in self.messages for r in m.refs)
        return _dedupe(template_refs(self.template))


@dataclass(frozen=True, slots=True)
class LlmOp(Op):
    prompt: str = ""
    model: str = ""
    config: GenerationConfig = field(default_factory=GenerationConfig)
    mode: str = "auto"  # "generate", "chat" or "auto" (chat when the prompt is a conversation)
    return_history: bool = False
    kind = "llm"

    @property
    def inputs(self) -> tuple[str, ...]:
        return _dedupe((self.prompt, *self.config.refs))


@dataclass(frozen=True, slots=True)
class ConcatOp(Op):
    parts: tuple[str, ...] = ()
    separator: str = ""
    kind = "concat"

    @property
    def inputs(self) -> tuple[str, ...]:
        return _dedupe(self.parts)


@dataclass(frozen=True, slots=True)
class MapOp(Op):
    list_id: str = ""
    template: Template = ()
    kind = "map"

    @property
    def inputs(self) -> tuple[str, ...]:
        return _dedupe((self.list_id, *template_refs(self.template)))


@dataclass(frozen=True, slots=True)
class SwitchCase:
    value: str
    target: str


@dataclass(frozen=True, slots=True)
class SwitchOp(Op):
    """Yields the first matching case's target (only that branch is computed)."""

    input: str = ""
    match: str = "regex"  # "regex" or "choice"
    cases: tuple[SwitchCase, ...] = ()
    default_target: str | None = None
    kind = "switch"

    @property
    def targets(self) -> tuple[str, ...]:
        tail = (self.default_target,) if self.default_target is not None else ()
        return _dedupe((*(c.target for c in self.cases), *tail))

    @property
    def inputs(self) -> tuple[str, ...]:
        return _dedupe((self.input, *self.targets))


# Inside a loop body, ``{iteration}`` is the iteration number, counted from 1.
ITERATION = "iteration"


@dataclass(frozen=True, slots=True)
class LoopOp(Op):
    """Bounded loop; the unroll rule replaces it by ``max_iterations`` copies of ``body``.

    Body operators read ``state`` (the previous iteration's ``result``, ``init`` at first) and
    ``ITERATION``. After each iteration, ``stop_regex`` is searched in the output of body
    operator ``stop_on`` (None: ``result``) of that iteration; once it matches, the loop's
    value is that iteration's result and no later iteration runs.
    """

    init: str = ""
    state: str = ""
    result: str = ""
    max_iterations: int = 0
    body: tuple[Op, ...] = ()
    stop_regex: str | None = None
    stop_on: str | None = None
    kind = "loop"

    @property
    def inputs(self) -> tuple[str, ...]:
        inner = {op.id for op in self.body} | {self.state, ITERATION}
        outer = (r for op in self.body for r in op.inputs if r not in inner)
        return _dedupe((self.init, *outer))


@dataclass(frozen=True, slots=True)
class ToolCallOp(Op):
    name: str = ""
    args: tuple[tuple[str, str], ...] = ()  # (argument name, operator id), sorted by name
    kind = "tool_call"

    @property
    def inputs(self) -> tuple[str, ...]:
        return _dedupe(op_id for _, op_id in self.args)


@dataclass(frozen=True, slots=True)
class OutputOp(Op):
    input: str = ""
    name: str = ""
    kind = "output"

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.input,)


@dataclass(frozen=True, slots=True)
class CacheFetchOp(Op):
    """An LLM op answered from the prompt-result cache for some rows.

    ``hits`` maps row index -> cached output (sorted by row). Rows without a hit run
    ``fallback`` (the original LLM op); None when every row hit.
    """

    hits: tuple[tuple[int, str], ...] = ()
    fallback: LlmOp | None = None
    kind = "cache_fetch"

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.fallback.inputs if self.fallback is not None else ()


def _dedupe(ids) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


def with_inputs_renamed(op: Op, mapping: dict[str, str]) -> Op:
    """A copy of ``op`` whose references are renamed by ``mapping`` (ids not in it are kept)."""
    def r(op_id):
        return mapping.get(op_id, op_id) if op_id is not None else None

    def rt(template: Template) -> Template:
        return tuple(Ref(r(s.op_id)) if isinstance(s, Ref) else s for s in template)

    if isinstance(op, FormatOp):
        msgs = tuple(replace(m, template=rt(m.template), history=r(m.history)) for m in op.messages)
        return replace(op, template=rt(op.template), messages=msgs)
    if isinstance(op, LlmOp):
        config = op.config
        if config.refs:
            config = replace(config, max_tokens_from=r(config.max_tokens_from),
                             stop_from=r(config.stop_from))
        return replace(op, prompt=r(op.prompt), config=config)
    if isinstance(op, ConcatOp):
        return replace(op, parts=tuple(r(p) for p in op.parts))
    if isinstance(op, MapOp):
        return replace(op, list_id=r(op.list_id), template=rt(op.template))
    if isinstance(op, SwitchOp):
        cases = tuple(SwitchCase(c.value, r(c.target)) for c in op.cases)
        return replace(op, input=r(op.input), cases=cases, default_target=r(op.default_target))
    if isinstance(op, LoopOp):
        body = tuple(with_inputs_renamed(b, mapping) for b in op.body)
        return replace(op, init=r(op.init), body=body)
    if isinstance(op, ToolCallOp):
        return replace(op, args=tuple((k, r(v)) for k, v in op.args))
    if isinstance(op, OutputOp):
        return replace(op, input=r(op.input))
    if isinstance(op, CacheFetchOp) and op.fallback is not None:
        return replace(op, fallback=with_inputs_renamed(op.fallback, mapping))
    return op


def iter_templates(op: Op) -> Iterator[Template]:
    """Every template an operator holds (for constant folding and the radix tree)."""
    if isinstance(op, FormatOp):
        if op.messages:
            yield from (m.template for m in op.messages if m.history is None)
        else:
            yield op.template
    elif isinstance(op, MapOp):
        yield op.template
