"""Submits LLM calls to engines in the scheduler's order with bounded concurrency.

A call waits for a slot on its engine; when slots free up, the waiting call with the lowest
planned rank goes first (the plan's order kept among ready calls). Calls whose shared prefix is
on the warm list wait for that warm-up. Retention priorities are decided at submission: the
shared prefix stays high until the last consumer of it is submitted.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter
from dataclasses import dataclass, fields
from typing import Callable, Sequence

from helium_trt.engine.base import (
    DEFAULT_RETENTION_PRIORITY, Engine, EngineRequest, RequestResult, RetentionRange,
    SamplingConfig,
)
from helium_trt.errors import EngineUnavailableError
from helium_trt.plan.ops import LlmOp
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.stats import StatsAccumulator
from helium_trt.scheduler import Schedule, retention_spans, warm_spans

# NOTE: the Engine protocol has no per-request switch for prefix reuse. When an engine's
# EngineRequest grows a ``cache_salt`` field we send a fresh salt per call; until then a run
# with kv_prefix_reuse off is *accounted* as reuse-free (every prompt token counted computed)
# and warming and retention priorities are off too (prepare_run); order keeps its own switch.
_HAS_SALT = "cache_salt" in {f.name for f in fields(EngineRequest)}


@dataclass(frozen=True, slots=True)
class CallOutcome:
    text: str
    num_prompt_tokens: int
    num_cached_tokens: int
    num_output_tokens: int


class CallFailed(Exception):
    """An engine call ended in error; the row fails with this message."""


class Dispatcher:
    def __init__(self, engines: Sequence[Engine], schedule: Schedule, options: RunOptions,
                 stats: StatsAccumulator) -> None:
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
        self._warmed: dict[int, asyncio.Future] = {}

    def start_warming(self) -> None:
        """Prefill every warm prefix on its worker (concurrently; failures only log as misses)."""
        for prefix in self._schedule.warm:
            self._warmed[prefix.prefix_id] = asyncio.ensure_future(self._warm(prefix))

    async def finish_warming(self) -> None:
        """Wait for warm-ups whose consumers all came from the result cache."""
        await asyncio.gather(*self._warmed.values(), return_exceptions=True)

    async def _warm(self, prefix) -> None:
        engine = self._engines[prefix.worker]
        spans = _ranges(warm_spans(prefix, self._schedule.config))
        try:
            result = await engine.warm(prefix.tokens, spans)
        except EngineUnavailableError:
            return
        self._stats.warm_computed += result.num_computed_tokens

    async def call(self, call_id: str, item: int, llm: LlmOp, prompt: tuple[int, ...],
                   on_text: Callable[[str], None] | None) -> CallOutcome:
        plan = self._schedule.calls[call_id]
        if plan.prefix_id in self._warmed:
            await asyncio.shield(self._warmed[plan.prefix_id])
        worker = plan.worker
        await self._acquire(worker, plan.rank)
        try:
            request = self._request(call_id, item, llm, prompt, plan)
            return await self._run(self._engines[worker], request, on_text)
        finally:
            self._release(worker)

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
        extra = {"cache_salt": f"nosalt-{next(self._ids)}"} \
            if _HAS_SALT and not self._options.kv_prefix_reuse else {}
        return EngineRequest(
            request_id=f"{call_id}.{item}.{next(self._ids)}", prompt_token_ids=prompt,
            sampling=SamplingConfig(max_tokens=c.max_tokens, temperature=c.temperature,
                                    top_p=c.top_p, top_k=c.top_k, seed=c.seed,
                                    stop_strings=tuple(c.stop)),
            retention_ranges=_ranges(spans), decode_retention_priority=decode,
            priority=self._options.priority, **extra)

    async def _run(self, engine: Engine, request: EngineRequest, on_text) -> CallOutcome:
        result = None
        async for item in engine.generate(request):
            if isinstance(item, RequestResult):
                result = item
            elif on_text is not None and item.text:
                on_text(item.text)
        if result is None or result.finish_reason in ("error", "cancelled"):
            reason = result.error if result is not None and result.error else "no result"
            raise CallFailed(f"engine call failed: {reason}")
        computed, cached = result.num_computed_tokens, result.num_cached_tokens
        if not self._options.kv_prefix_reuse and not _HAS_SALT:
            computed, cached = result.num_prompt_tokens, 0
        self._stats.record_call(request.prompt_token_ids, computed, cached,
                                len(result.output_token_ids))
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


def _ranges(spans) -> tuple[RetentionRange, ...]:
    return tuple(RetentionRange(s.start, s.end, s.priority) for s in spans)
