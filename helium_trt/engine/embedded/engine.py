"""EmbeddedEngine: the Engine protocol over an in-process CPU model, for asyncio callers.

A background thread runs engine steps (torch releases the GIL inside its kernels); results are
handed to each caller's event loop with ``call_soon_threadsafe``, one call per loop per step.

Any exception on that thread (scheduling, forward pass, postprocessing) fails every in-flight
request at once and makes the engine unhealthy; the thread then rebuilds the engine's state (KV
pool, scheduler, runner) on the weights it already holds, runs a probe request through it, and
reports healthy again, retrying with backoff while that fails. New requests are refused with
EngineUnavailableError meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import AsyncIterator, Sequence as Seq

import torch

from helium_trt.engine.base import (
    EngineHealth,
    EngineInfo,
    EngineRequest,
    RequestResult,
    RetentionRange,
    SamplingConfig,
    TokenDelta,
    WarmResult,
)
from helium_trt.cache.token_radix import UNSCOPED, CacheScope
from helium_trt.engine.config import EngineConfig
from helium_trt.engine.embedded.core import CoreLimits, EngineCore, Event
from helium_trt.engine.embedded.kv_manager import KVManager
from helium_trt.engine.embedded.loader import load_model
from helium_trt.engine.embedded.runner import ModelRunner
from helium_trt.engine.embedded.scheduler import Scheduler, SchedulerConfig
from helium_trt.engine.tokenizer import HFTokenizer
from helium_trt.engine.validation import validate_request
from helium_trt.errors import EngineUnavailableError, InvalidRequestError

log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# Restart attempts after a failure wait this long, doubling up to the cap: a fault that persists
# costs a probe (one tiny forward pass) a second, and an engine whose fault has cleared is back
# within about a second.
RESTART_BACKOFF_S = 0.05
RESTART_BACKOFF_MAX_S = 1.0
PROBE_MAX_STEPS = 8


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """Requests the engine holds right now: running (prefilling or decoding) and waiting."""

    num_running: int
    num_prefilling: int
    num_waiting: int
    max_num_running: int


@dataclass(slots=True)
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue


class EmbeddedEngine:
    """Continuous-batching CPU engine with paged KV, prefix reuse and retention priorities.

    Build with ``EmbeddedEngine(EngineConfig(model_dir=...))``; ``close()`` stops its thread.
    """

    def __init__(self, config: EngineConfig = EngineConfig(), model=None):
        """``model``: an already loaded model to share (weights are read-only; each engine
        allocates its own KV cache), e.g. engines built one after another by the benchmark.

        Loading happens on the engine thread; errors (ModelNotFoundError, MalformedModelError)
        are raised here.
        """
        if config.dtype not in _DTYPES:
            raise InvalidRequestError(f"dtype {config.dtype!r} is not one of {sorted(_DTYPES)}")
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        self.config = config
        self._lock = threading.RLock()
        self._wakeup = threading.Condition(self._lock)
        self._streams: dict[str, _Stream] = {}
        self._closing = False
        self._health = EngineHealth(True)
        self._num_restarts = 0
        self._warm_ids = itertools.count()
        self._probe_ids = itertools.count()
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, args=(model,), name="helium-engine",
                                        daemon=True)
        self._thread.start()
        self._started.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error

    def _build(self, model) -> None:
        # NOTE: every torch op of the engine, loading included, runs on the engine thread. Torch's
        # OpenMP pool belongs to the thread that first computes; computing on a second thread
        # later made a batch-1 decode step ~1.5x slower on 2 cores.
        config = self.config
        model_dir = config.resolved_model_dir()
        loaded = model if model is not None else load_model(model_dir, _DTYPES[config.dtype])
        self.model = loaded.to(_device(config.device))
        self.model.prepare()  # packs the weights now, not in the first request's time
        mc = self.model.config
        self.tokenizer = HFTokenizer.from_dir(model_dir, mc.eos_token_ids)
        num_blocks = config.num_blocks or _blocks_for_budget(config, self.model)
        max_model_len = min(config.max_model_len or mc.max_position_embeddings, mc.max_position_embeddings)
        self.info = EngineInfo(
            model_name=model_dir.name, block_size=config.block_size, num_blocks=num_blocks,
            max_model_len=max_model_len, vocab_size=mc.vocab_size,
            eos_token_ids=self.tokenizer.eos_token_ids,
        )
        self._probe_prompt = tuple(self.tokenizer.encode("Hello")) or (0,)
        self._core = self._new_core()

    def _new_core(self) -> EngineCore:
        """A fresh KV pool, scheduler and runner on the loaded weights (at start, on restart)."""
        config, info = self.config, self.info
        kv = KVManager(info.num_blocks, config.block_size, config.enable_prefix_caching)
        scheduler = Scheduler(SchedulerConfig(config.max_num_seqs, config.max_num_batched_tokens), kv)
        runner = ModelRunner(self.model, info.num_blocks, config.block_size)
        return EngineCore(scheduler, runner, self.tokenizer,
                          CoreLimits(info.max_model_len, self.tokenizer.eos_token_ids), lock=self._lock)

    # ---- Engine protocol -----------------------------------------------------------------------

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]:
        """Validate now (raising InvalidRequestError, or EngineUnavailableError while the engine
        is unhealthy), then stream once iterated."""
        self._check_healthy()
        validate_request(request, self.info, self.model.config.vocab_size)
        return self._stream(request)

    async def warm(self, prompt_token_ids: Seq[int], retention_ranges: Seq[RetentionRange] = (),
                   cache_salt: str | None = None, num_public_tokens: int = 0) -> WarmResult:
        request = EngineRequest(
            request_id=f"__warm-{next(self._warm_ids)}", prompt_token_ids=tuple(prompt_token_ids),
            sampling=SamplingConfig(max_tokens=0), retention_ranges=tuple(retention_ranges),
            cache_salt=cache_salt, num_public_tokens=num_public_tokens,
        )
        result = None
        async for item in self.generate(request):
            result = item
        assert isinstance(result, RequestResult)
        if result.finish_reason == "error":
            raise EngineUnavailableError(f"warm-up failed: {result.error}")
        return WarmResult(result.num_prompt_tokens, result.num_cached_tokens, result.num_computed_tokens)

    async def cancel(self, request_id: str) -> None:
        self._cancel_now(request_id)

    def num_resident_tokens(self, token_ids: Seq[int], cache_salt: str | None = None,
                            num_public_tokens: int = 0) -> int:
        scope = CacheScope(cache_salt, num_public_tokens) if cache_salt is not None else UNSCOPED
        with self._wakeup:
            return self._core.kv.num_resident_tokens(list(token_ids), scope)

    def num_free_blocks(self) -> int:
        """Blocks obtainable without touching a running request (free + evictable cached)."""
        with self._wakeup:
            return self._core.kv.num_obtainable_blocks()

    def num_held_blocks(self) -> int:
        """Blocks referenced by requests (not only by the prefix cache)."""
        return self.info.num_blocks - self.num_free_blocks()

    def load(self) -> EngineLoad:
        with self._wakeup:
            scheduler = self._core.scheduler
            running = scheduler.running
            return EngineLoad(len(running), sum(not seq.is_decoding for seq in running),
                              scheduler.num_waiting, scheduler.config.max_num_seqs)

    def health(self) -> EngineHealth:
        return self._health

    @property
    def num_restarts(self) -> int:
        """Restarts after a failure so far: each started from an empty KV (prefix) cache."""
        return self._num_restarts

    @property
    def num_preemptions(self) -> int:
        """Sequences preempted (and later recomputed) under KV pressure so far."""
        return self._core.scheduler.num_preemptions

    async def close(self) -> None:
        with self._wakeup:
            self._closing = True
            self._health = EngineHealth(False, f"engine {self.info.model_name!r} is closed")
            self._wakeup.notify()
        await asyncio.to_thread(self._thread.join)

    # ---- internals -----------------------------------------------------------------------------

    async def _stream(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]:
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        rid = request.request_id
        with self._wakeup:
            self._check_healthy()
            # NOTE: the stream outlives the core's sequence until its result is delivered; a
            # request reusing the id in between would take over the stream and get that result.
            if self._core.has_request(rid) or rid in self._streams:
                raise InvalidRequestError(f"request {rid!r} is already running")
            self._streams[rid] = stream
            self._core.add(request)
            self._wakeup.notify()
        done = False
        try:
            while not done:
                item = await stream.queue.get()
                done = isinstance(item, RequestResult)
                yield item
        finally:
            if not done:  # the caller stopped listening: free the request's blocks
                self._cancel_now(rid, stream)

    def _check_healthy(self) -> None:
        health = self._health
        if not health.healthy:
            raise EngineUnavailableError(health.reason)

    def _cancel_now(self, request_id: str, stream: _Stream | None = None) -> None:
        """Cancel ``request_id``; with ``stream``, only while the id is still that stream's (it
        may have been reused once the stream's result was delivered). During a step the core
        defers the cancel, and the result comes with that step's events."""
        with self._wakeup:
            if stream is not None and self._streams.get(request_id) is not stream:
                return
            result = self._core.cancel(request_id)
            if result is not None:
                self._deliver([result])

    def _thread_main(self, model) -> None:
        try:
            self._build(model)
        except BaseException as exc:  # handed to the constructor, which raises it
            self._startup_error = exc
            return
        finally:
            self._started.set()
        try:
            self._run_loop()
        except BaseException as exc:  # never end silently: say so, and fail whoever waits
            name = self.info.model_name
            log.critical("engine %r: its thread stopped", name, exc_info=exc)
            with self._wakeup:
                self._health = EngineHealth(False, f"engine {name!r} stopped ({_describe(exc)})")
                self._fail_everything(f"engine {name!r} stopped: {_describe(exc)}")

    def _run_loop(self) -> None:
        with torch.inference_mode():
            while True:
                try:
                    if not self._step_once():
                        return
                except Exception as exc:  # anywhere in the step: fail fast, then restart
                    self._recover(exc)

    def _step_once(self) -> bool:
        """Wait for work and run one step; False once the engine is closing."""
        with self._wakeup:
            while not self._closing and not self._core.has_work():
                self._wakeup.wait()
            if self._closing:
                self._fail_everything(f"engine {self.info.model_name!r} closed")
                return False
        self._deliver(self._core.step())
        return True

    def _recover(self, exc: Exception) -> None:
        """Fail every in-flight request now, then rebuild the engine's state on the loaded
        weights and probe it, retrying with backoff until that works or the engine closes."""
        name, cause = self.info.model_name, _describe(exc)
        failing = f"engine {name!r} is restarting after a failure ({cause})"
        with self._wakeup:
            log.error("engine %r: engine step failed; failing %d in-flight requests and restarting",
                      name, len(self._streams), exc_info=exc)
            self._health = EngineHealth(False, failing)
            self._fail_everything(f"engine {name!r} failed: {cause}")
            # NOTE: drop the failed pool first, so a restart never holds two KV pools at once.
            self._core.runner.kv_cache = None
        delay = RESTART_BACKOFF_S
        for attempt in itertools.count(1):
            with self._wakeup:
                if self._closing:
                    return
            try:
                self._restart()
                log.warning("engine %r: restarted (attempt %d)", name, attempt)
                return
            except Exception as retry_exc:
                log.error("engine %r: restart attempt %d failed; next in %.2f s", name, attempt,
                          delay, exc_info=retry_exc)
                with self._wakeup:
                    self._health = EngineHealth(False, f"{failing}; {attempt} restart attempt(s) "
                                                       f"failed, the last: {_describe(retry_exc)}")
                    self._wakeup.wait(delay)  # close() wakes it
                delay = min(2 * delay, RESTART_BACKOFF_MAX_S)

    def _restart(self) -> None:
        core = self._new_core()
        self._probe(core)
        with self._wakeup:
            self._core = core
            self._num_restarts += 1
            if not self._closing:  # close() may have come during the probe: stay closed
                self._health = EngineHealth(True)

    def _probe(self, core: EngineCore) -> None:
        """One tiny greedy request through ``core``; raises unless it finishes normally."""
        request = EngineRequest(f"__probe-{next(self._probe_ids)}", self._probe_prompt,
                                SamplingConfig(max_tokens=1, ignore_eos=True))
        with self._wakeup:
            core.add(request)
        for _ in range(PROBE_MAX_STEPS):
            for event in core.step():
                if isinstance(event, RequestResult):
                    if event.finish_reason != "length":
                        raise EngineUnavailableError(
                            f"the probe request ended {event.finish_reason!r}: {event.error}")
                    return
        raise EngineUnavailableError(f"the probe request did not finish in {PROBE_MAX_STEPS} steps")

    def _fail_everything(self, message: str) -> None:
        """An "error" result, now, for every request that has a stream (call with the lock)."""
        try:
            results = self._core.abandon_all(message)
        except Exception:  # NOTE: the streams below still get a result, without partial output
            log.exception("engine %r: could not collect the failed requests' output", self.info.model_name)
            results = []
        covered = {r.request_id for r in results}
        results += [RequestResult(rid, (), "", 0, 0, 0, "error", message)
                    for rid in self._streams if rid not in covered]
        self._deliver(results)

    def _deliver(self, events: list[Event]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Event]]] = defaultdict(list)
        with self._wakeup:
            for event in events:
                if isinstance(event, RequestResult):
                    stream = self._streams.pop(event.request_id, None)
                else:
                    stream = self._streams.get(event.request_id)
                if stream is not None:
                    by_loop[stream.loop].append((stream.queue, event))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:
                pass  # the caller's event loop is gone; nobody is listening any more


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _put_all(items: list[tuple[asyncio.Queue, Event]]) -> None:
    for queue, event in items:
        queue.put_nowait(event)


def _device(name: str) -> torch.device:
    """The torch device ``name`` names, checked to exist here (an engine that would fail at its
    first step fails at start instead)."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidRequestError(f"device {name!r} is not a torch device ({exc})") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        raise InvalidRequestError(f"device {name!r}: no such CUDA device here "
                                  f"({count} visible)")
    return device


def _blocks_for_budget(config: EngineConfig, model) -> int:
    c = model.config
    bytes_per_token = c.num_layers * 2 * c.num_kv_heads * c.head_dim * model.dtype.itemsize
    return max(1, config.kv_cache_mb * 2**20 // (bytes_per_token * config.block_size))
