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
from helium_trt.runtime.planning import RuntimeCaches
from helium_trt.runtime.single_flight import DEFAULT_TENANT_KEY, FlightKey
from helium_trt.runtime.stats import StatsAccumulator
from helium_trt.runtime.worker_loads import WorkTicket
from helium_trt.scheduler import CallPlan, Schedule, retention_spans
from helium_trt.scheduler.dispatch_cost import StepCosts, choose_worker

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
                 stats: StatsAccumulator, run_id: str, caches: RuntimeCaches | None = None) -> None:
        self._run_id = run_id
        self._engines = list(engines)
        self._schedule = schedule
        self._options = options
        self._stats = stats
        self._caches = caches if caches is not None else RuntimeCaches()
        self._costs = StepCosts()
        # One engine that shares blocks among requests in flight needs no leader to hold
        # siblings. NOTE: several workers keep leaders even then: placement sees a prefix where
        # its leader's prefill put it, and siblings follow. Without leaders, placed while the
        # prefix is still queued everywhere, they spread: Trading x1 (quick) on 2 embedded
        # workers computed 5,736 prefill tokens, as least-loaded call-level did, against
        # 4,614-4,628 with leaders (8,403-8,484 against 5,133-5,358 on 4 workers).
        self._use_leaders = schedule.config.proactive_warming and (
            len(self._engines) > 1 or not all(shares_inflight_prefixes(e) for e in engines))
        self._place_at_dispatch = schedule.config.cache_aware and len(engines) > 1
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
        """Run one LLM call; an identical deterministic call in flight (this run's or another
        of the tenant's) is joined instead when the prompt-result cache is on."""
        plan = self._schedule.calls[call_id]
        if not (self._options.prompt_cache and llm.config.is_deterministic):
            self._stats.note_call(None)
            return await self._call(plan, call_id, item, llm, prompt, on_text)
        key = FlightKey(_tenant_key(self._options), llm.model, prompt, llm.config)
        self._stats.note_call(key)
        outcome, joined = await self._caches.flights.call(
            key, lambda publish: self._call(plan, call_id, item, llm, prompt, publish), on_text)
        if not joined:
            return outcome
        self._stats.num_shared_calls += 1
        self._consume_prefix(plan, item)
        # Nothing was computed for this call: its whole prompt counts as reused.
        return CallOutcome(outcome.text, outcome.num_prompt_tokens, outcome.num_prompt_tokens,
                           outcome.num_output_tokens)

    async def _call(self, plan: CallPlan, call_id: str, item: int, llm: LlmOp,
                    prompt: tuple[int, ...], on_text) -> CallOutcome:
        led = await self._follow_leaders(plan, call_id)
        try:
            num_decode = self._caches.output_lengths.estimate(call_id.rpartition("#")[0],
                                                              llm.config.max_tokens)
            worker, num_uncached = self._place(plan, prompt, num_decode)
            engine = self._engines[worker]
            ticket = self._caches.loads.add(engine, prompt, num_uncached, num_decode,
                                            getattr(self._options, "cache_salt", None))
            try:
                await self._acquire(worker, plan.rank)
                try:
                    request = self._request(call_id, item, llm, prompt, plan)
                    return await self._run(engine, request, on_text, led, ticket)
                finally:
                    self._release(worker)
            finally:
                ticket.done()
        finally:
            _set_all(led)

    def _place(self, plan: CallPlan, prompt: tuple[int, ...], num_decode: int) -> tuple[int, int]:
        """(worker, prompt tokens to compute there): the plan's worker when cache-aware
        scheduling is off (round robin), else the least costly worker now."""
        loads, salt = self._caches.loads, self._salt(prompt)
        if not self._place_at_dispatch:
            engine = self._engines[plan.worker]
            return plan.worker, len(prompt) - loads.num_cached(engine, prompt, salt)
        uncached = [len(prompt) - loads.num_cached(e, prompt, salt) for e in self._engines]
        worker = choose_worker(uncached, num_decode, loads.queues(self._engines),
                               self._costs)
        return worker, uncached[worker]

    def _salt(self, prompt: tuple[int, ...]) -> dict:
        """``num_resident_tokens`` keywords: passed only when the run's blocks are salted."""
        salt = getattr(self._options, "cache_salt", None)
        if salt is None:
            return {}
        return {"cache_salt": salt, "num_public_tokens": self._options.num_public_tokens(prompt)}

    async def _follow_leaders(self, plan, call_id: str) -> list[asyncio.Future]:
        """Wait for the leaders of this call's prefix groups; return the groups it leads."""
        if plan.prefix_id is None or not self._use_leaders:
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
        is_last = self._consume_prefix(plan, item)
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
                                    stop_strings=tuple(c.stop), ignore_eos=c.ignore_eos),
            retention_ranges=_ranges(spans), decode_retention_priority=decode,
            priority=self._options.priority, reuse_prefix=self._options.kv_prefix_reuse,
            cache_salt=self._options.cache_salt,
            num_public_tokens=self._options.num_public_tokens(prompt))

    def _consume_prefix(self, plan: CallPlan, item: int) -> bool:
        """Count one consumer of the call's shared prefix; True once it was the last."""
        if plan.prefix_id is None or item != 0:
            return True
        self._remaining[plan.prefix_id] -= 1
        return self._remaining[plan.prefix_id] <= 0

    async def _run(self, engine: Engine, request: EngineRequest, on_text,
                   led: list[asyncio.Future], ticket: WorkTicket) -> CallOutcome:
        result = None
        async for item in engine.generate(request):
            _set_all(led)  # the first token means the prompt's blocks are cached
            ticket.prefilled()
            if isinstance(item, RequestResult):
                result = item
            else:
                ticket.decoded(len(item.token_ids))
                if on_text is not None and item.text:
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


def shares_inflight_prefixes(engine: Engine) -> bool:
    """The engine's optional capability flag: a request reuses the blocks of a prompt another
    request is still prefilling (vLLM; the embedded engine holds such a request back until the
    blocks exist), so siblings need no prefix leader to hold them."""
    return bool(getattr(engine, "shares_inflight_prefixes", False))


def _tenant_key(options: RunOptions) -> str:
    """The single-flight table's tenant: runs share flights only under one cache salt (the
    server sets it per tenant; none: every run is the one default tenant)."""
    return getattr(options, "cache_salt", None) or DEFAULT_TENANT_KEY


def _set_all(futures: list[asyncio.Future]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _ranges(spans) -> tuple[RetentionRange, ...]:
    return tuple(RetentionRange(s.start, s.end, s.priority) for s in spans)
