"""Synchronous engine core: schedule -> run -> postprocess, one step at a time.

Owns the sequences, the scheduler, the KV manager and the model runner. Thread-safe through
``lock``: the lock is held while scheduling and postprocessing but not during the forward pass,
so requests can be added, cancelled and cache state queried while the model computes.

Cancellation takes effect between steps only: a cancel that arrives while a forward pass is in
flight is recorded and applied right after that step's postprocess. Applied at once, it would
empty a block table the running step is reading (the step then failed for the whole batch,
or wrote a decode's KV into block 0, someone else's block).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from helium_trt.engine.base import EngineRequest, RequestResult, TokenDelta, Tokenizer
from helium_trt.engine.embedded.kv_manager import KVManager
from helium_trt.engine.output_text import OutputText
from helium_trt.engine.embedded.runner import ModelRunner, StepResult
from helium_trt.engine.embedded.scheduler import Scheduler, SchedulerOutput
from helium_trt.engine.embedded.sequence import Sequence, SeqStatus


@dataclass(frozen=True, slots=True)
class CoreLimits:
    max_model_len: int
    eos_token_ids: tuple[int, ...]


Event = TokenDelta | RequestResult


class EngineCore:
    def __init__(self, scheduler: Scheduler, runner: ModelRunner, tokenizer: Tokenizer, limits: CoreLimits,
                 lock: threading.RLock | None = None):
        self.scheduler = scheduler
        self.kv: KVManager = scheduler.kv
        self.runner = runner
        self.tokenizer = tokenizer
        self.limits = limits
        # Re-entrant: the asyncio side delivers events while still holding it in a few places.
        self.lock = lock if lock is not None else threading.RLock()
        self._seqs: dict[str, Sequence] = {}
        self._texts: dict[str, OutputText] = {}
        self._num_arrivals = 0
        self._in_step = False  # a forward pass is running outside the lock
        self._deferred_cancels: dict[str, None] = {}  # ordered set of request ids

    # ---- called with ``lock`` held -------------------------------------------------------------

    def has_request(self, request_id: str) -> bool:
        return request_id in self._seqs

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def add(self, request: EngineRequest) -> None:
        seq = Sequence.from_request(request, self._num_arrivals)
        self._num_arrivals += 1
        self._seqs[request.request_id] = seq
        self._texts[request.request_id] = OutputText(self.tokenizer, request.sampling.stop_strings)
        self.scheduler.add(seq)

    def cancel(self, request_id: str) -> RequestResult | None:
        """The request's final result, or None when it is unknown or a step is in flight: then
        its result comes from that step's ``step()`` call, after the step."""
        seq = self._seqs.get(request_id)
        if seq is None:
            return None
        if self._in_step:
            self._deferred_cancels[request_id] = None
            return None
        return self._finish(seq, "cancelled")

    def abandon_all(self, message: str) -> list[RequestResult]:
        """An "error" result for every request, touching neither the queues nor the KV pool:
        for a core about to be dropped, whose state may be inconsistent after a failure."""
        results = []
        for seq in self._seqs.values():
            text = self._texts.get(seq.request_id)
            num_cached = seq.num_cached_tokens or 0
            results.append(RequestResult(
                seq.request_id, tuple(seq.output_token_ids), text.text if text else "",
                seq.num_prompt_tokens, num_cached, seq.num_prompt_tokens - num_cached, "error",
                message))
        self._seqs.clear()
        self._texts.clear()
        return results

    # ---- the step ------------------------------------------------------------------------------

    def step(self) -> list[Event]:
        """One scheduling step and forward pass; returns the events to deliver."""
        with self.lock:
            sched = self.scheduler.schedule(time.monotonic())
            if sched.is_empty:
                return []
            if not (sched.prefills or sched.decodes):
                # Only warm-ups whose prompt was fully cached, or rejections: nothing to compute.
                return self._postprocess(sched, StepResult({}), time.monotonic())
            self._in_step = True
        # NOTE: an exception from here on leaves this core's state undefined (half-written KV,
        # half-updated queues): it propagates, and the owner fails every request and builds a
        # fresh core (EmbeddedEngine._recover).
        result = self.runner.run(sched)
        with self.lock:
            self._in_step = False
            events = self._postprocess(sched, result, time.monotonic())
            return events + self._apply_deferred_cancels()

    def _apply_deferred_cancels(self) -> list[Event]:
        events: list[Event] = []
        for request_id in self._deferred_cancels:
            seq = self._seqs.get(request_id)
            if seq is not None:  # not finished by the step itself
                events.append(self._finish(seq, "cancelled"))
        self._deferred_cancels.clear()
        return events

    def _postprocess(self, sched: SchedulerOutput, result: StepResult, now: float) -> list[Event]:
        events: list[Event] = []
        for copy in sched.block_copies:
            self.kv.release_copy(copy)
        for seq in sched.finished_on_admission:
            events.append(self._finish(seq, "length"))
        for seq in sched.rejected:
            needed = self.kv.num_blocks_for(len(seq.token_ids))
            events.append(self._finish(seq, "error", (
                f"resource exhausted: request {seq.request_id!r} needs {needed} KV blocks and "
                f"only {self.kv.num_obtainable_blocks()} can be obtained with nothing else running")))
        for chunk in sched.prefills:
            seq = chunk.seq
            if seq.status is not SeqStatus.RUNNING:
                continue  # cancelled while the step ran
            completes = chunk.completes_prompt
            seq.num_computed_tokens += chunk.num_tokens
            if completes and seq.is_warm_only:
                self.kv.cache_full_blocks(seq, now)
                events.append(self._finish(seq, "length"))
            elif completes:
                events.extend(self._append_token(seq, result.sampled[id(seq)], now))
            else:
                self.kv.cache_full_blocks(seq, now)
        for seq in sched.decodes:
            if seq.status is SeqStatus.RUNNING:
                seq.num_computed_tokens += 1
                events.extend(self._append_token(seq, result.sampled[id(seq)], now))
        return events

    def _append_token(self, seq: Sequence, token_id: int, now: float) -> list[Event]:
        seq.token_ids.append(token_id)
        self.kv.cache_full_blocks(seq, now)
        sampling = seq.request.sampling
        text = self._texts[seq.request_id]
        update = text.update(seq.output_token_ids)
        events: list[Event] = [TokenDelta(seq.request_id, (token_id,), update.delta)]
        reason = None
        if token_id in sampling.stop_token_ids or (
                not sampling.ignore_eos and token_id in self.limits.eos_token_ids):
            reason = "stop"
        elif update.stopped:
            reason = "stop"
        elif seq.num_output_tokens >= sampling.max_tokens or len(seq.token_ids) >= self.limits.max_model_len:
            reason = "length"
        if reason is not None:
            flushed = text.flush()
            if flushed:
                events.append(TokenDelta(seq.request_id, (), flushed))
            events.append(self._finish(seq, reason))
        return events

    def _finish(self, seq: Sequence, reason: str, error: str | None = None) -> RequestResult:
        self.scheduler.remove(seq)
        self._seqs.pop(seq.request_id, None)
        text = self._texts.pop(seq.request_id)
        num_cached = seq.num_cached_tokens or 0
        return RequestResult(
            request_id=seq.request_id,
            output_token_ids=tuple(seq.output_token_ids),
            text=text.text,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_cached_tokens=num_cached,
            num_computed_tokens=seq.num_prompt_tokens - num_cached,
            finish_reason=reason,
            error=error,
        )
