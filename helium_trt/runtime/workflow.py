"""Runs an optimized plan for all rows of a request on one or more engines, streaming events.

Each row is evaluated on demand from its outputs: an operator runs as soon as the inputs it
needs exist, and a switch computes only the branch it chooses. LLM calls go through the
Dispatcher (scheduler order, bounded concurrency, prefix leaders, retention). A failure ends only its
row; the other rows finish.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import AsyncIterator, Awaitable, Callable, Sequence

from helium_trt.engine.base import Engine
from helium_trt.errors import EngineUnavailableError, HeliumError, InvalidRequestError
from helium_trt.errors import InvalidWorkflowError, ResourceExhaustedError
from helium_trt.plan.graph import Plan
from helium_trt.plan.ops import (
    CacheFetchOp, ConcatOp, ConstantOp, FormatOp, InputOp, LlmOp, MapOp, OutputOp, Ref,
    SwitchOp, ToolCallOp,
)
from helium_trt.plan.chat import unmark
from helium_trt.plan.prompt import value_text
from helium_trt.runtime import values as V
from helium_trt.runtime.calls import call_id, render_prompt
from helium_trt.runtime.cancel import run_cancellable
from helium_trt.runtime.dispatch import CallFailed, Dispatcher
from helium_trt.runtime.events import (
    Event, OpFinished, OpStarted, RowOutput, RunError, TokenDelta,
)
from helium_trt.runtime.generation import resolve_config, sample_configs
from helium_trt.runtime.models import ModelSet
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.planning import PreparedRun, RuntimeCaches, prepare_run, prompt_over_limit
from helium_trt.runtime.stats import StatsAccumulator


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str
    name: str
    args: dict[str, str]
    op_id: str
    row: int


class ToolError(HeliumError):
    """A tool failed (raised by a tool callback); the row fails with its message."""


ToolCallback = Callable[[ToolCall], Awaitable[str]]


async def run_workflow(plan: Plan, engines: Sequence[Engine] | ModelSet, *,
                       rows: Sequence[dict] | None = None, options: RunOptions = RunOptions(),
                       caches: RuntimeCaches | None = None,
                       tools: ToolCallback | None = None,
                       run_id: str | None = None) -> AsyncIterator[Event]:
    """Plan, optimize, schedule and run ``plan`` over ``rows`` (default: ``plan.rows``).

    ``engines`` are one model's workers, or a ModelSet: each LLM operator runs on the model its
    ``model`` names (empty: the default), and an unknown name raises ModelNotFoundError before
    any event. ``run_id`` (default: a fresh uuid) must be unique among the runs sharing
    ``engines``: every engine request id and tool call id of the run ends with it.

    Yields OpStarted / TokenDelta (with ``options.stream_tokens``) / OpFinished / RowOutput /
    RunError per row, and RunStats last. Raises InvalidWorkflowError before any event when the
    workflow or its rows are invalid.
    """
    start = time.perf_counter()
    rows = tuple(rows if rows is not None else plan.rows)
    caches = caches if caches is not None else RuntimeCaches()
    # NOTE: off the event loop: planning tokenizes every prompt it knows (the tokenizer releases
    # the GIL on long texts), so other requests' RPCs keep answering meanwhile. A run cancelled
    # while planning (client cancel, deadline, shutdown) stops its planning at the next prompt.
    prepared = await run_cancellable(planning_executor(), prepare_run, plan, rows, engines,
                                     options, caches)
    stats = StatsAccumulator(num_rows=len(rows), planning_ms=prepared.planning_ms,
                             num_ops_before=len(plan.ops), num_ops_after=len(prepared.optimized.plan))
    queue: asyncio.Queue = asyncio.Queue()
    run_id = run_id or uuid.uuid4().hex[:12]
    # One dispatcher per model: a call is only ever placed on a worker of its own model.
    dispatchers = {name: Dispatcher(m.engines, m.schedule, options, stats, run_id, caches)
                   for name, m in prepared.models.items()}
    run = _Run(prepared, dispatchers, options, caches, stats, queue.put_nowait, tools, run_id)
    row_tasks = [asyncio.ensure_future(_RowRun(run, i, row).execute()) for i, row in enumerate(rows)]
    done = asyncio.ensure_future(asyncio.gather(*row_tasks))
    done.add_done_callback(lambda gathered: _retrieve(gathered) or queue.put_nowait(None))
    try:
        while (event := await queue.get()) is not None:
            yield event
        await done
        yield stats.finish((time.perf_counter() - start) * 1000.0)
    finally:
        for task in row_tasks:
            task.cancel()


_planning_pool: ThreadPoolExecutor | None = None
_planning_pool_lock = threading.Lock()


def planning_executor() -> ThreadPoolExecutor:
    """The threads runs are planned in, shared by every run of the process.

    NOTE: a pool of its own, as many threads as asyncio's default executor has: big requests'
    planning (tens of seconds at the server's row limits) then never queues the default
    executor's work behind it (Explain, static prefixes, tokenizing a long prompt of a running
    call), and takes no concurrency from planning either. It is not made smaller: a small plan
    behind a few big ones would wait for them instead of sharing the CPU.
    """
    global _planning_pool
    with _planning_pool_lock:
        if _planning_pool is None:
            _planning_pool = ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4),
                                                thread_name_prefix="helium-planning")
        return _planning_pool


def _retrieve(future: asyncio.Future) -> None:
    """Mark ``future``'s exception as seen. A run closed early (client cancel, deadline) cancels
    its rows, and their gather then ends with a CancelledError nobody awaits: asyncio logged
    "exception was never retrieved" with a traceback for every such run."""
    if not future.cancelled():
        future.exception()


@dataclass
class _Run:
    prepared: PreparedRun
    dispatchers: dict[str, Dispatcher]  # by model name
    options: RunOptions
    caches: RuntimeCaches
    stats: StatsAccumulator
    emit: Callable[[Event], None]
    tools: ToolCallback | None
    run_id: str

    @property
    def plan(self) -> Plan:
        return self.prepared.optimized.plan


class _RowFailed(Exception):
    def __init__(self, op_id: str, code: str, message: str):
        super().__init__(message)
        self.op_id, self.code, self.message = op_id, code, message


class _RowRun:
    """One row's demand-driven evaluation: each operator's value is one memoized task."""

    def __init__(self, run: _Run, row: int, values: dict) -> None:
        self.ctx, self.row, self.inputs = run, row, values
        self.tasks: dict[str, asyncio.Future] = {}

    async def execute(self) -> None:
        plan = self.ctx.plan
        try:
            results = await asyncio.gather(*(self.value(o.id) for o in plan.outputs))
        except _RowFailed as exc:
            self._cancel_pending()
            self.ctx.stats.num_rows_failed += 1
            self.ctx.emit(RunError(exc.code, exc.message, exc.op_id, self.row))
            return
        outputs = {(o.name or o.id): V.output_text(v) for o, v in zip(plan.outputs, results)}
        self.ctx.emit(RowOutput(self.row, outputs))

    def value(self, op_id: str) -> asyncio.Future:
        task = self.tasks.get(op_id)
        if task is None:
            task = self.tasks[op_id] = asyncio.ensure_future(self._guarded(op_id))
        return task

    def _cancel_pending(self) -> None:
        for task in self.tasks.values():
            task.cancel()

    async def _guarded(self, op_id: str):
        try:
            return await self._compute(self.ctx.plan.by_id[op_id])
        except (_RowFailed, asyncio.CancelledError):
            raise
        except InvalidWorkflowError as exc:
            raise _RowFailed(op_id, "INVALID_ARGUMENT", str(exc)) from exc
        except ResourceExhaustedError as exc:
            raise _RowFailed(op_id, "RESOURCE_EXHAUSTED", f"operator {op_id!r}: {exc}") from exc
        except (InvalidRequestError, ToolError) as exc:
            code = "INVALID_ARGUMENT" if isinstance(exc, InvalidRequestError) else "UNAVAILABLE"
            raise _RowFailed(op_id, code, f"operator {op_id!r}: {exc}") from exc
        except (CallFailed, EngineUnavailableError) as exc:
            raise _RowFailed(op_id, "UNAVAILABLE", f"operator {op_id!r}: {exc}") from exc
        except Exception as exc:  # a bug must not take the other rows down
            raise _RowFailed(op_id, "INTERNAL", f"operator {op_id!r}: {exc!r}") from exc

    async def _gather(self, op_ids) -> dict[str, object]:
        op_ids = tuple(dict.fromkeys(op_ids))
        found = await asyncio.gather(*(self.value(i) for i in op_ids))
        return dict(zip(op_ids, found))

    async def _compute(self, op):
        fmt, limit = self.ctx.prepared.chat_format, self.ctx.options.max_prompt_bytes
        if isinstance(op, InputOp):
            if op.column not in self.inputs:
                raise InvalidWorkflowError(f"row {self.row} has no column {op.column!r}",
                                           op_id=op.id, field="column")
            return self.inputs[op.column]
        if isinstance(op, ConstantOp):
            return op.text
        if isinstance(op, FormatOp):
            return V.eval_format(op, await self._gather(op.inputs), fmt, limit)
        if isinstance(op, ConcatOp):
            return V.eval_concat(op, await self._gather(op.inputs), fmt, limit)
        if isinstance(op, MapOp):
            return V.eval_map(op, await self._gather(op.inputs), fmt, limit)
        if isinstance(op, SwitchOp):
            chosen = V.choose_branch(op, value_text(await self.value(op.input), fmt))
            return await self.value(chosen)
        if isinstance(op, OutputOp):
            return await self.value(op.input)
        if isinstance(op, ToolCallOp):
            return await self._tool(op)
        if isinstance(op, CacheFetchOp):
            return await self._cache_fetch(op)
        if isinstance(op, LlmOp):
            return await self._llm(op.id, op)
        raise InvalidWorkflowError(f"operator kind {op.kind!r} cannot run (loops are unrolled "
                                   "by the optimizer)", op_id=op.id)

    async def _cache_fetch(self, op: CacheFetchOp):
        hits = dict(op.hits)
        if self.row not in hits:
            return await self._llm(op.id, op.fallback)
        self.ctx.stats.num_result_cache_hits += 1
        self.ctx.emit(OpStarted(op.id, self.row))
        self.ctx.emit(OpFinished(op.id, self.row, hits[self.row], from_result_cache=True))
        return hits[self.row]

    async def _tool(self, op: ToolCallOp) -> str:
        args = await self._gather(v for _, v in op.args)
        if self.ctx.tools is None:
            raise ToolError(f"tool {op.name!r} needs a tool callback (run it over the Session "
                            "RPC, which forwards tool calls to the client)")
        self.ctx.emit(OpStarted(op.id, self.row))
        text_args = {k: V.output_text(args[v]) for k, v in op.args}
        # One call per (operator, row): the value tasks are memoized.
        tool_call_id = f"{call_id(op.id, self.row)}@{self.ctx.run_id}"
        timeout_s = self.ctx.options.tool_call_timeout_s
        try:
            async with asyncio.timeout(timeout_s) as waited:
                result = await self.ctx.tools(ToolCall(tool_call_id, op.name, text_args, op.id,
                                                       self.row))
        except TimeoutError:
            if not waited.expired():
                raise
            raise _RowFailed(op.id, "DEADLINE_EXCEEDED", (
                f"operator {op.id!r}: tool call {tool_call_id!r} ({op.name}) got no result "
                f"within {timeout_s:g} s")) from None
        self.ctx.emit(OpFinished(op.id, self.row, result))
        return result

    async def _llm(self, op_id: str, llm: LlmOp):
        template = self.ctx.prepared.calls.templates[op_id]
        refs = [s.op_id for s in template if isinstance(s, Ref)]
        values = await self._gather((*refs, *llm.config.refs))
        prompt_value = await self.value(llm.prompt)
        self.ctx.emit(OpStarted(op_id, self.row))
        started = time.perf_counter()
        n = V.num_elements(op_id, values)
        elements = [(values, prompt_value)] if n is None else [
            (V.element_values(values, i), _element(prompt_value, i)) for i in range(n)]
        # One call per element and sample; element i's samples are items i*n .. i*n + n - 1.
        calls = [(sample, element_values, element_prompt)
                 for element_values, element_prompt in elements
                 for sample in self._samples(llm, element_values)]
        if len(calls) == 1 and n is None:
            results = [await self._one_call(op_id, *calls[0], 0)]
        else:
            results = await asyncio.gather(*(self._one_call(op_id, *call, item)
                                             for item, call in enumerate(calls)))
        outputs = [r[0] for r in results]
        value = outputs[0] if n is None and llm.config.n == 1 else outputs
        self.ctx.emit(OpFinished(
            op_id, self.row, V.output_text(value),
            prompt_tokens=sum(r[1] for r in results), cached_tokens=sum(r[2] for r in results),
            output_tokens=sum(r[3] for r in results),
            from_result_cache=all(r[4] for r in results),
            latency_ms=(time.perf_counter() - started) * 1000.0))
        return value

    def _samples(self, llm: LlmOp, values: dict) -> list[LlmOp]:
        """``llm`` with one element's generation settings resolved, once per sample."""
        config = resolve_config(llm, values, self.ctx.plan.by_id, self.row)
        return [llm if c == llm.config else replace(llm, config=c) for c in sample_configs(config)]

    async def _one_call(self, op_id: str, llm: LlmOp, values: dict, prompt_value, item: int):
        """(output value, prompt tokens, cached tokens, output tokens, from result cache)."""
        run = self.ctx
        model = run.prepared.models[llm.model]  # its own chat format, tokenizer and workers
        marked = render_prompt(model.calls, op_id, values, prompt_value, model.chat_format)
        text = unmark(marked)
        use_cache = run.options.prompt_cache and llm.config.is_deterministic
        found = run.caches.prompt_cache.lookup(llm.model, text, llm.config) if use_cache else None
        if found is not None:
            run.stats.num_result_cache_hits += 1
            return _with_history(llm, prompt_value, found), 0, 0, 0, True
        prompt = await _encode_prompt(model.tokenizer, marked)
        limit = run.options.max_prompt_tokens
        if limit is not None and len(prompt) > limit:
            raise ResourceExhaustedError(prompt_over_limit(len(prompt), limit))
        on_text = (lambda delta: run.emit(TokenDelta(op_id, self.row, delta, item))) \
            if run.options.stream_tokens else None
        outcome = await run.dispatchers[llm.model].call(call_id(op_id, self.row), item, llm,
                                                        prompt, on_text)
        run.caches.output_lengths.observe(op_id, outcome.num_output_tokens)
        if use_cache:
            run.caches.prompt_cache.store(llm.model, text, llm.config, outcome.text)
        return (_with_history(llm, prompt_value, outcome.text), outcome.num_prompt_tokens,
                outcome.num_cached_tokens, outcome.num_output_tokens, False)


# Prompts longer than this are tokenized in a worker thread (the tokenizer releases the GIL on
# long texts): ~1 ms of encoding inline, while the hop costs ~0.05 ms (measured, SmolLM2).
INLINE_ENCODE_CHARS = 2048


async def _encode_prompt(tokenizer, marked: str) -> tuple[int, ...]:
    if len(marked) <= INLINE_ENCODE_CHARS:
        return tokenizer.encode_prompt(marked)
    return await asyncio.to_thread(tokenizer.encode_prompt, marked)


def _element(value, index: int):
    return value[index] if V.is_text_list(value) else value


def _with_history(llm: LlmOp, prompt_value, reply: str):
    """The reply, or with ``return_history`` the conversation including it."""
    if not llm.return_history:
        return reply
    conversation = list(prompt_value) if V.is_conversation(prompt_value) else \
        [{"role": "user", "content": V.output_text(prompt_value)}]
    return conversation + [{"role": "assistant", "content": reply}]
