"""Submits LLM calls to engines in the scheduler's order with bounded concurrency.

A call waits for a slot on its engine; when slots free up, the waiting call with the lowest
planned rank goes first (the plan's order kept among ready calls). Retention priorities are
decided at submission: the shared prefix stays high until the last consumer of it is submitted.

Shared prefixes are warmed by a *prefix leader*, not a separate warm-up request: the first
consumer of a warm prefix runs at once and its siblings wait until its prefill is done (its
first token), then reuse everything they share with it. The first consumer of a row within a
group leads that row's siblings the same way, so the row-specific part after the static prefix
is computed once too.

NOTE: measured on the embedded engine (Trading, 1 row), separate warm-ups computed 1,230
tokens but saved only ~270: siblings released together after a warm-up all recomputed the
row part past the static prefix (304 of 337 shared tokens reused), and every warm-up was
queued at t=0 ahead of the calls on the critical path. The engine's own cache would compute
the prefix once anyway if the siblings are not admitted in the same step, which is what
holding them behind a leader guarantees, and the leader's prefill is useful work.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from helium_trt.engine.base import (
    DEFAULT_RETENTION_PRIORITY, Engine, EngineRequest, RequestResult, RetentionRange,
    SamplingConfig,
)
from helium_trt.plan.ops import LlmOp
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.stats import StatsAccumulator
from helium_trt.scheduler import Schedule, retention_spans

# NOTE: kv_prefix_reuse off sends EngineRequest.reuse_prefix=False, which the embedded engine
# honours (no match, no publish); TritonEngine cannot (TensorRT-LLM has no per-request switch),
# so there the reported reuse is the engine's real one. Warming and retention are off too
# (prepare_run); order keeps its own switch.


@dataclass(frozen=True, slots=True)
class CallOutcome:
    text: str
    num_prompt_tokens: int
    num_cached_tokens: int
    num_output_tokens: int


class CallFailed(Exception):
    """An engine call ended in error; the row fails with this message."""


class Dispatcher:
    """One run's LLM calls. ``run_id`` is unique on the server (HeliumCore allocates it) and
    ends every engine request id, so two runs of one workflow never share a request, its
    stream or its result."""

    def __init__(self, engines: Sequence[Engine], schedule: Schedule, options: RunOptions,
                 stats: StatsAccumulator, run_id: str) -> None:
        self._run_id = run_id
        self._engines = list(engines)
        self._schedule = schedule
        self._options = options
        self._stats = stats
        self._free = [max(1, options.max_inflight)] * len(engines)
        self._waiting: list[list] = [[] for _ in engines]
        self._seq = itertools.count()
        self._ids = itertools.count()
        self._remaining = Counter(p.prefix_id for p in schedule.calls.values()
                                  if p.prefix_id is not None)
        # Prefix groups (prefix id, and prefix id + row) -> set once their leader's prefill is done.
        self._prefilled: dict[tuple, asyncio.Future] = {}

    async def call(self, call_id: str, item: int, llm: LlmOp, prompt: tuple[int, ...],
                   on_text: Callable[[str], None] | None) -> CallOutcome:
        plan = self._schedule.calls[call_id]
        led = await self._follow_leaders(plan, call_id)
        worker = plan.worker
        try:
            await self._acquire(worker, plan.rank)
        except BaseException:
            _set_all(led)
            raise
        try:
            request = self._request(call_id, item, llm, prompt, plan)
            return await self._run(self._engines[worker], request, on_text, led)
        finally:
            _set_all(led)
            self._release(worker)

    async def _follow_leaders(self, plan, call_id: str) -> list[asyncio.Future]:
        """Wait for the leaders of this call's prefix groups; return the groups it leads."""
        if plan.prefix_id is None or not self._schedule.config.proactive_warming:
            return []
        row = call_id.rpartition("#")[2]  # runtime.calls.call_id: op_id#row
        led: list[asyncio.Future] = []
        for key in ((plan.prefix_id,), (plan.prefix_id, row)):
            future = self._prefilled.get(key)
            if future is None:
                led.append(self._prefilled.setdefault(
                    key, asyncio.get_running_loop().create_future()))
            elif not led:
                await asyncio.shield(future)
        return led

    def _request(self, call_id, item, llm: LlmOp, prompt, plan) -> EngineRequest:
        is_last = True
        if plan.prefix_id is not None and item == 0:
            self._remaining[plan.prefix_id] -= 1
            is_last = self._remaining[plan.prefix_id] <= 0
        spans, decode = retention_spans(plan.shared_len, is_last, self._schedule.config)
        if llm.return_history and decode is not None:
            # The next round's prompt starts with this whole conversation: keep it at default.
            spans = tuple(s if s.end is not None else type(s)(s.start, None,
                          DEFAULT_RETENTION_PRIORITY) for s in spans)
            decode = DEFAULT_RETENTION_PRIORITY
        c = llm.config
        return EngineRequest(
            request_id=f"{call_id}.{item}.{next(self._ids)}@{self._run_id}",
            prompt_token_ids=prompt,
            sampling=SamplingConfig(max_tokens=c.max_tokens, temperature=c.temperature,
                                    top_p=c.top_p, top_k=c.top_k, seed=c.seed,
                                    stop_strings=tuple(c.stop)),
            retention_ranges=_ranges(spans), decode_retention_priority=decode,
            priority=self._options.priority, reuse_prefix=self._options.kv_prefix_reuse)

    async def _run(self, engine: Engine, request: EngineRequest, on_text,
                   led: list[asyncio.Future]) -> CallOutcome:
        result = None
        async for item in engine.generate(request):
            _set_all(led)  # the first token means the prompt's blocks are cached
            if isinstance(item, RequestResult):
                result = item
            elif on_text is not None and item.text:
                on_text(item.text)
        if result is None or result.finish_reason in ("error", "cancelled"):
            reason = result.error if result is not None and result.error else "no result"
            raise CallFailed(f"engine call failed: {reason}")
        computed, cached = result.num_computed_tokens, result.num_cached_tokens
        self._stats.record_call(request.prompt_token_ids, computed, cached,
                                len(result.output_token_ids), result.output_token_ids)
        return CallOutcome(result.text, result.num_prompt_tokens, cached,
                           len(result.output_token_ids))

    async def _acquire(self, worker: int, rank: int) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting[worker], (rank, next(self._seq), future))
        # Let every call that becomes ready in this loop iteration queue up before choosing.
        asyncio.get_running_loop().call_soon(self._grant, worker)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(worker)
            raise

    def _release(self, worker: int) -> None:
        self._free[worker] += 1
        self._grant(worker)

    def _grant(self, worker: int) -> None:
        waiting = self._waiting[worker]
        while waiting and self._free[worker] > 0:
            _, _, future = heapq.heappop(waiting)
            if future.cancelled():
                continue
            self._free[worker] -= 1
            future.set_result(None)


def _set_all(futures: list[asyncio.Future]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _ranges(spans) -> tuple[RetentionRange, ...]:
    return tuple(RetentionRange(s.start, s.end, s.priority) for s in spans)
