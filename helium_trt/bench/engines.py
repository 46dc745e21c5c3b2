"""Engine wrappers for the benchmark: a recorder of every call, the OpWise admission gate, and
a load balancer in front of several workers (the call-level baselines' round robin and least
loaded).

Each wraps any Engine and forwards the protocol; the runtime sees an ordinary engine.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import AsyncIterator, Mapping, Sequence

from helium_trt.engine.base import (
    Engine, EngineHealth, EngineRequest, RequestResult, RetentionRange, TokenDelta, WarmResult,
)


def op_of(request_id: str) -> str:
    """The operator id in a runtime request id ``{op_id}#{row}.{item}.{n}``."""
    return request_id.split("#", 1)[0]


class _Forwarding:
    def __init__(self, engine: Engine) -> None:
        self.inner = engine
        self.info = engine.info
        self.tokenizer = engine.tokenizer
        self.shares_inflight_prefixes = getattr(engine, "shares_inflight_prefixes", False)

    async def warm(self, prompt_token_ids: Sequence[int],
                   retention_ranges: Sequence[RetentionRange] = ()) -> WarmResult:
        return await self.inner.warm(prompt_token_ids, retention_ranges)

    async def cancel(self, request_id: str) -> None:
        await self.inner.cancel(request_id)

    def num_resident_tokens(self, token_ids: Sequence[int]) -> int:
        return self.inner.num_resident_tokens(token_ids)

    def num_free_blocks(self) -> int:
        return self.inner.num_free_blocks()

    def health(self) -> EngineHealth:
        return self.inner.health()

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class CallLog:
    """What the engines were asked and did: prompts, prefill and decode tokens, warm-ups, and
    how many calls each worker got (``RecordingEngine.worker``)."""

    prompts: list[tuple[int, ...]] = field(default_factory=list)
    outputs: list[tuple[int, ...]] = field(default_factory=list)  # token ids, one per prompt
    num_computed: int = 0
    num_cached: int = 0
    num_decoded: int = 0
    num_warm_computed: int = 0
    num_calls: int = 0
    worker_calls: dict[int, int] = field(default_factory=dict)


class RecordingEngine(_Forwarding):
    """Counts every call's prompt and prefill tokens as the engine reports them."""

    def __init__(self, engine: Engine, log: CallLog, worker: int = 0) -> None:
        super().__init__(engine)
        self.log = log
        self.worker = worker

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]:
        return self._record(request, self.inner.generate(request))

    async def _record(self, request, stream) -> AsyncIterator[TokenDelta | RequestResult]:
        async for item in stream:
            if isinstance(item, RequestResult):
                self.log.num_calls += 1
                self.log.worker_calls[self.worker] = self.log.worker_calls.get(self.worker, 0) + 1
                self.log.prompts.append(tuple(request.prompt_token_ids))
                self.log.outputs.append(tuple(item.output_token_ids))
                self.log.num_computed += item.num_computed_tokens
                self.log.num_cached += item.num_cached_tokens
                self.log.num_decoded += len(item.output_token_ids)
            yield item

    async def warm(self, prompt_token_ids: Sequence[int],
                   retention_ranges: Sequence[RetentionRange] = ()) -> WarmResult:
        result = await self.inner.warm(prompt_token_ids, retention_ranges)
        self.log.num_warm_computed += result.num_computed_tokens
        return result


class OpWiseGate(_Forwarding):
    """Admits LLM calls one operator at a time: all of an operator's calls (every row) run
    together, and the next operator starts only when the engine is idle.

    The next operator is the earliest in ``op_order`` among the calls waiting once the engine
    has gone idle and the runtime has had ``settle_s`` to submit what became ready.
    """

    def __init__(self, engine: Engine, op_order: Sequence[str], settle_s: float = 0.005) -> None:
        super().__init__(engine)
        self._rank: Mapping[str, int] = {op: i for i, op in enumerate(op_order)}
        self._settle_s = settle_s
        self._waiting: dict[str, list[asyncio.Future]] = {}
        self._current: str | None = None
        self._num_running = 0
        self._picking = False

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]:
        return self._gated(request)

    async def _gated(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]:
        op_id = op_of(request.request_id)
        if op_id != self._current or self._picking:
            future = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(op_id, []).append(future)
            self._schedule_pick()
            await future
        self._num_running += 1
        try:
            async for item in self.inner.generate(request):
                yield item
        finally:
            self._num_running -= 1
            if self._num_running == 0:
                self._current = None
                self._schedule_pick()

    def _schedule_pick(self) -> None:
        if self._num_running == 0 and self._current is None and not self._picking:
            self._picking = True
            asyncio.get_running_loop().call_later(self._settle_s, self._pick)

    def _pick(self) -> None:
        self._picking = False
        if self._num_running or not self._waiting:
            return
        op_id = min(self._waiting, key=lambda o: self._rank.get(o, math.inf))
        self._current = op_id
        for future in self._waiting.pop(op_id):
            if not future.done():
                future.set_result(None)


ROUND_ROBIN = "round-robin"
LEAST_LOADED = "least-loaded"


class Balancer:
    """Several workers behind one engine, as a load balancer in front of N servers shows them
    to a workflow-unaware client: each call goes to the next worker (round robin) or to the one
    with the fewest calls in flight (least loaded, the lowest index among equals)."""

    def __init__(self, engines: Sequence[Engine], policy: str) -> None:
        if policy not in (ROUND_ROBIN, LEAST_LOADED):
            raise ValueError(f"unknown balancing policy {policy!r}")
        self.engines = list(engines)
        self.policy = policy
        self.info = self.engines[0].info
        self.tokenizer = self.engines[0].tokenizer
        self._in_flight = [0] * len(self.engines)
        self._next = 0
        self._owner: dict[str, int] = {}

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]:
        if self.policy == ROUND_ROBIN:
            worker, self._next = self._next, (self._next + 1) % len(self.engines)
        else:
            worker = min(range(len(self.engines)), key=lambda w: (self._in_flight[w], w))
        stream = self.engines[worker].generate(request)
        self._in_flight[worker] += 1  # counted from submission, as a balancer sees it
        self._owner[request.request_id] = worker
        return self._tracked(request.request_id, worker, stream)

    async def _tracked(self, request_id: str, worker: int, stream):
        try:
            async for item in stream:
                yield item
        finally:
            self._in_flight[worker] -= 1
            self._owner.pop(request_id, None)

    async def warm(self, prompt_token_ids: Sequence[int],
                   retention_ranges: Sequence[RetentionRange] = ()) -> WarmResult:
        results = [await e.warm(prompt_token_ids, retention_ranges) for e in self.engines]
        return WarmResult(results[0].num_prompt_tokens, sum(r.num_cached_tokens for r in results),
                          sum(r.num_computed_tokens for r in results))

    async def cancel(self, request_id: str) -> None:
        worker = self._owner.get(request_id)
        if worker is not None:
            await self.engines[worker].cancel(request_id)

    def num_resident_tokens(self, token_ids: Sequence[int]) -> int:
        return max(e.num_resident_tokens(token_ids) for e in self.engines)

    def num_free_blocks(self) -> int:
        return sum(e.num_free_blocks() for e in self.engines)

    def health(self) -> EngineHealth:
        return next((h for h in (e.health() for e in self.engines) if not h.healthy),
                    EngineHealth(True))

    async def close(self) -> None:
        for engine in self.engines:
            await engine.close()
