"""TritonEngine: the Engine protocol over Triton's gRPC streaming API, for any model speaking the
tensorrtllm_backend contract (TensorRT-LLM on a GPU node, or the CPU stand-in in model_repo/).

Text never crosses the wire: the tokenizer is loaded locally from a model directory
(tokenizer.json), as tensorrtllm_backend's preprocessing model does, and the LLM model sees token
ids only. Each request gets its own gRPC stream, because cancelling the stream is how Triton
cancels a request (and how TensorRT-LLM frees its KV blocks); engine/triton/grpc_transport.py holds that
transport, with its idle timeout and its one reconnect-and-retry. Stop strings are matched here
on the decoded text, the same way the embedded engine matches them; stop token ids and extra EOS
ids travel as TensorRT-LLM stop words.

Health: a call that finds the server unreachable (no answer within the idle timeout, or
UNAVAILABLE again after a reconnect) marks the engine unhealthy. A background probe then checks
that the server and model are ready on a fresh channel, at once and then backing off to once a
second, until one succeeds; while they fail, every call in flight ends with the error. A new
call meanwhile asks for a probe and waits for it: it goes ahead as soon as the server answers
again (so the first request after a restart succeeds), and raises EngineUnavailableError
otherwise, at once for a server that refuses connections and within the probe timeout for one
that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Protocol, Sequence

import numpy as np

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
from helium_trt.engine.output_text import OutputText
from helium_trt.engine.tokenizer import HFTokenizer
from helium_trt.engine.triton.trtllm_contract import request_to_tensors, response_to_update
from helium_trt.engine.validation import validate_request
from helium_trt.errors import EngineUnavailableError, InvalidRequestError

# TensorRT-LLM's default tokens_per_block when the model config does not say.
DEFAULT_TRTLLM_BLOCK_SIZE = 32
DEFAULT_IDLE_TIMEOUT_S = 60.0
# Health probes after a failure: the first at once, then backing off to one a second.
_FIRST_PROBE_DELAY_S = 0.1
_MAX_PROBE_DELAY_S = 1.0


@dataclass(frozen=True, slots=True)
class TritonEngineConfig:
    """Where the model is and what the client must know about it.

    ``block_size`` / ``num_blocks`` None read the model's ``tokens_per_block`` / ``num_blocks`` (or
    ``max_tokens_in_paged_kv_cache``) config parameters, else TensorRT-LLM's default block size and
    room for one full-length sequence. ``max_model_len`` None reads max_position_embeddings from
    ``tokenizer_dir``/config.json.

    Over gRPC (``connect``), ``idle_timeout_s`` fails a call once the server has sent nothing
    for that long (None: wait forever); ``request_timeout_s`` is an optional deadline for a
    whole call (over BLS, the Triton request timeout).
    """

    url: str
    tokenizer_dir: str
    model_name: str = "tensorrt_llm"
    block_size: int | None = None
    num_blocks: int | None = None
    max_model_len: int | None = None
    request_timeout_s: float | None = None
    idle_timeout_s: float | None = DEFAULT_IDLE_TIMEOUT_S


class TritonEngine:
    """Build with ``await TritonEngine.connect(config)``; use from that event loop only."""

    def __init__(self, config: TritonEngineConfig, transport: Transport, info: EngineInfo,
                 tokenizer: HFTokenizer, end_id: int | None, pad_id: int):
        self.config = config
        self.info = info
        self.tokenizer = tokenizer
        self._transport = transport
        self._end_id = end_id
        self._pad_id = pad_id
        self._extra_stop_ids = tuple(t for t in info.eos_token_ids if t != end_id)
        self._active: set[str] = set()
        self._cancelled: set[str] = set()
        self._closed = False
        self._unreachable: str | None = None  # why the server is unreachable, until a probe works
        self._failed: dict[str, str] = {}  # in-flight requests ended because of that -> why
        self._probe_task: asyncio.Task | None = None
        self._probe_waiters: list[asyncio.Future] = []  # calls waiting for the next probe
        self._probe_now = asyncio.Event()
        # Warm-up ids carry a random tag: several clients may share one Triton server.
        tag = uuid.uuid4().hex[:8]
        self._warm_ids = (f"{tag}-{n}" for n in itertools.count())
        self._ledger = _PrefixLedger(info.block_size, info.num_blocks)

    @classmethod
    async def connect(cls, config: TritonEngineConfig) -> TritonEngine:
        """Check the server and model are ready; raises EngineUnavailableError / ModelNotFoundError."""
        from helium_trt.engine.triton.grpc_transport import (
            GrpcTransport, closed_on_failure, open_client, probe_timeout_s,
        )

        client = await open_client(config)
        async with closed_on_failure(client, config.url):
            model_config = await client.get_model_config(config.model_name, as_json=True,
                                                         client_timeout=probe_timeout_s(config))
        params = model_config["config"].get("parameters", {})
        return cls.over(config, GrpcTransport(client, config), params)

    @classmethod
    def over(cls, config: TritonEngineConfig, transport: Transport, params: dict) -> TritonEngine:
        """An engine over any transport; ``params`` are the LLM model's config parameters
        (``{"tokens_per_block": {"string_value": "32"}, ...}``) for block size and pool size."""
        tokenizer_dir = Path(config.tokenizer_dir)
        model_json = _read_json(tokenizer_dir / "config.json")
        tokenizer = HFTokenizer.from_dir(tokenizer_dir, _as_ids(model_json.get("eos_token_id")))
        info = _engine_info(config, params, model_json, tokenizer)
        end_id = _special_id(tokenizer, tokenizer_dir, "eos_token", info.eos_token_ids[0] if info.eos_token_ids else None)
        pad_id = _special_id(tokenizer, tokenizer_dir, "pad_token", model_json.get("pad_token_id"))
        return cls(config, transport, info, tokenizer, end_id, pad_id if pad_id is not None else (end_id or 0))

    # ---- Engine protocol -----------------------------------------------------------------------

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]:
        """Validate now (raising InvalidRequestError), then stream once iterated (raising
        EngineUnavailableError first when the server is unreachable and a probe confirms it)."""
        validate_request(request, self.info, self.info.vocab_size)
        return self._stream(request)

    async def warm(self, prompt_token_ids: Sequence[int],
                   retention_ranges: Sequence[RetentionRange] = (), cache_salt: str | None = None,
                   num_public_tokens: int = 0) -> WarmResult:
        """Prefill ``prompt_token_ids``; TensorRT-LLM needs one output token, which is dropped.
        ``cache_salt`` is ignored: the tensorrt_llm model takes no salt (EngineRequest)."""
        request = EngineRequest(
            request_id=f"__warm-{next(self._warm_ids)}", prompt_token_ids=tuple(prompt_token_ids),
            sampling=SamplingConfig(max_tokens=1, ignore_eos=True), retention_ranges=tuple(retention_ranges),
        )
        result = None
        async for item in self.generate(request):
            result = item
        if result.finish_reason == "error":
            raise EngineUnavailableError(f"warm-up failed: {result.error}")
        return WarmResult(result.num_prompt_tokens, result.num_cached_tokens, result.num_computed_tokens)

    async def cancel(self, request_id: str) -> None:
        if request_id in self._active:
            self._cancelled.add(request_id)
            await self._transport.cancel(request_id)

    def num_resident_tokens(self, token_ids: Sequence[int], cache_salt: str | None = None,
                            num_public_tokens: int = 0) -> int:
        """Estimate: leading full blocks this client has sent (Triton does not expose the cache);
        unsalted, as TensorRT-LLM's cache is behind the tensorrt_llm model."""
        return self._ledger.num_resident_tokens(token_ids)

    def num_free_blocks(self) -> int:
        """Estimate: configured blocks minus those this client believes it filled."""
        return max(0, self.info.num_blocks - len(self._ledger))

    def health(self) -> EngineHealth:
        """Unhealthy once closed, and from a call that found the server unreachable until a
        probe finds it ready again."""
        if self._closed:
            return EngineHealth(False, f"engine {self.info.model_name!r} at {self.config.url} is closed")
        if self._unreachable is not None:
            return EngineHealth(False, self._unreachable)
        return EngineHealth(True)

    async def close(self) -> None:
        self._closed = True
        if self._probe_task is not None:
            self._probe_task.cancel()
            await asyncio.gather(self._probe_task, return_exceptions=True)
        _resolve(self._probe_waiters, f"engine {self.info.model_name!r} at {self.config.url} is closed")
        for request_id in list(self._active):
            await self.cancel(request_id)
        await self._transport.close()

    # ---- internals -----------------------------------------------------------------------------

    async def _stream(self, request: EngineRequest) -> AsyncIterator[TokenDelta | RequestResult]:
        rid = request.request_id
        state = _StreamState(OutputText(self.tokenizer, request.sampling.stop_strings))
        await self._wait_reachable()
        if rid in self._active:  # the transport's tables are keyed by request id too
            raise InvalidRequestError(f"request {rid!r} is already running")
        self._active.add(rid)
        try:
            async for delta in self._receive(request, state):
                yield delta
        finally:
            self._active.discard(rid)
            if state.finish_reason is None:
                await self._transport.cancel(rid)  # the caller stopped listening: free the request
        flushed = state.text.flush()
        if flushed:
            yield TokenDelta(rid, (), flushed)
        self._cancelled.discard(rid)
        self._failed.pop(rid, None)
        if state.finish_reason != "error":
            self._ledger.add(request.prompt_token_ids)
        yield self._result(request, state)

    async def _receive(self, request: EngineRequest, state: _StreamState) -> AsyncIterator[TokenDelta]:
        rid = request.request_id
        tensors = request_to_tensors(request, self._end_id, self._pad_id, self._extra_stop_ids)
        try:
            async for outputs, final in self._transport.stream(rid, tensors):
                update = response_to_update(outputs)
                if update.num_reused_blocks is not None:
                    state.num_reused_blocks = update.num_reused_blocks
                if update.token_ids:
                    state.token_ids.extend(update.token_ids)
                    text = state.text.update(state.token_ids)
                    yield TokenDelta(rid, update.token_ids, text.delta)
                    if text.stopped:
                        state.finish_reason = "stop"
                        await self._transport.cancel(rid)
                        return
                if final:
                    # Keep reading until the server closes the stream: closing the channel
                    # while the RPC is still open cancels it server-side.
                    state.finish_reason = self._natural_finish(request, state.token_ids)
            if state.finish_reason is None:
                state.fail("the stream ended before the final response")
        except asyncio.CancelledError:  # grpc.aio ends a cancelled call's reads this way
            if rid not in self._cancelled and rid not in self._failed:
                raise
            self._end_early(rid, state, None)
        except TransportError as exc:
            if exc.unreachable:
                self._mark_unreachable(str(exc))
            self._end_early(rid, state, exc)

    def _end_early(self, rid: str, state: _StreamState, exc: TransportError | None) -> None:
        """A stream cut short: failed with its server, cancelled, or failed on its own."""
        failed = self._failed.pop(rid, None)
        if failed is not None:
            state.fail(failed)
        elif rid in self._cancelled or (exc is not None and exc.cancelled):
            state.finish_reason = "cancelled"
        else:
            state.fail(str(exc))

    def _mark_unreachable(self, reason: str) -> None:
        """Unhealthy from now until a probe finds the server ready (one probe task at a time)."""
        if self._closed:
            return
        self._unreachable = reason
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.create_task(self._probe_until_ready())

    async def _wait_reachable(self) -> None:
        """While unhealthy: ask for a probe and wait for one that starts after asking."""
        if self._unreachable is None or self._closed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._probe_waiters.append(waiter)
        self._probe_now.set()
        reason = await waiter
        if reason is not None:
            raise EngineUnavailableError(reason)

    async def _probe_until_ready(self) -> None:
        """Probe at once, then when a call asks or after a delay backing off to a second. While
        the server does not answer, end every call in flight with that error (each would wait
        out its own timeout otherwise)."""
        delay = _FIRST_PROBE_DELAY_S
        while True:
            waiters, self._probe_waiters = self._probe_waiters, []
            self._probe_now.clear()
            reason = await self._transport.probe()
            if reason is None:
                self._unreachable = None
                _resolve(waiters + self._probe_waiters, None)
                self._probe_waiters = []
                return
            self._unreachable = reason
            _resolve(waiters, reason)
            for rid in list(self._active):
                if rid not in self._failed and rid not in self._cancelled:
                    self._failed[rid] = f"{reason} (the server stopped answering during the call)"
                    await self._transport.cancel(rid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._probe_now.wait(), delay)
            delay = min(2 * delay, _MAX_PROBE_DELAY_S)

    def _natural_finish(self, request: EngineRequest, token_ids: list[int]) -> str:
        s = request.sampling
        if token_ids and token_ids[-1] in (set(s.stop_token_ids) | set(self._extra_stop_ids)):
            return "stop"
        return "length" if len(token_ids) >= s.max_tokens else "stop"

    def _result(self, request: EngineRequest, state: _StreamState) -> RequestResult:
        num_prompt = len(request.prompt_token_ids)
        num_cached = min(num_prompt, (state.num_reused_blocks or 0) * self.info.block_size)
        return RequestResult(
            request_id=request.request_id, output_token_ids=tuple(state.token_ids), text=state.text.text,
            num_prompt_tokens=num_prompt, num_cached_tokens=num_cached,
            num_computed_tokens=num_prompt - num_cached,
            finish_reason=state.finish_reason or "error", error=state.error,
        )


class TransportError(Exception):
    """The LLM model answered with an error, or the stream broke: ``cancelled`` when cancelled,
    ``unreachable`` when the server did not answer (the engine then probes it)."""

    def __init__(self, message: str, *, cancelled: bool = False, unreachable: bool = False):
        super().__init__(message)
        self.cancelled = cancelled
        self.unreachable = unreachable


class Transport(Protocol):
    """How request tensors reach a tensorrt_llm-contract model: Triton's gRPC API from outside the
    server (GrpcTransport), or BLS from a Python-backend model inside it (engine/triton/bls.py)."""

    def stream(self, request_id: str, tensors: dict[str, np.ndarray]
               ) -> AsyncIterator[tuple[dict[str, np.ndarray], bool]]:
        """Yields (output tensors, is final response); raises TransportError."""

    async def cancel(self, request_id: str) -> None: ...

    async def probe(self) -> str | None:
        """None when the server and model answer ready, else why not (after an unreachable
        TransportError only)."""

    async def close(self) -> None: ...


@dataclass(slots=True)
class _StreamState:
    text: OutputText
    token_ids: list[int] = field(default_factory=list)
    num_reused_blocks: int | None = None
    finish_reason: str | None = None
    error: str | None = None

    def fail(self, message: str) -> None:
        self.finish_reason, self.error = "error", message


class _PrefixLedger:
    """Full blocks of prompts sent to the server, most recent last, at most ``capacity`` of them.

    NOTE: an estimate. The server evicts by its own policy; what it reports back per request
    (reused blocks) corrects the accounting of that request, not this view.
    """

    def __init__(self, block_size: int, capacity: int):
        self._block_size = block_size
        self._capacity = capacity
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def add(self, token_ids: Sequence[int]) -> None:
        for key in self._keys(token_ids):
            self._blocks[key] = None
            self._blocks.move_to_end(key)
        while len(self._blocks) > self._capacity:
            self._blocks.popitem(last=False)

    def num_resident_tokens(self, token_ids: Sequence[int]) -> int:
        num_blocks = 0
        for key in self._keys(token_ids):
            if key not in self._blocks:
                break
            num_blocks += 1
        return num_blocks * self._block_size

    def _keys(self, token_ids: Sequence[int]) -> list[int]:
        keys, key, bs = [], 0, self._block_size
        for start in range(0, len(token_ids) - bs + 1, bs):
            key = hash((key, tuple(token_ids[start:start + bs])))
            keys.append(key)
        return keys


def _engine_info(config: TritonEngineConfig, params: dict, model_json: dict, tokenizer: HFTokenizer) -> EngineInfo:
    def param(key: str) -> int | None:
        value = params.get(key, {}).get("string_value", "").strip()
        return int(value) if value.lstrip("-").isdigit() and int(value) > 0 else None

    block_size = config.block_size or param("tokens_per_block") or DEFAULT_TRTLLM_BLOCK_SIZE
    max_model_len = config.max_model_len or model_json.get("max_position_embeddings") or 2048
    max_kv_tokens = param("max_tokens_in_paged_kv_cache")
    num_blocks = (config.num_blocks or param("num_blocks") or (max_kv_tokens and max_kv_tokens // block_size)
                  or -(-max_model_len // block_size))
    return EngineInfo(
        model_name=config.model_name, block_size=block_size, num_blocks=num_blocks,
        max_model_len=max_model_len, vocab_size=model_json.get("vocab_size") or tokenizer.vocab_size,
        eos_token_ids=tokenizer.eos_token_ids,
    )


def _special_id(tokenizer: HFTokenizer, tokenizer_dir: Path, key: str, fallback) -> int | None:
    token = _read_json(tokenizer_dir / "tokenizer_config.json").get(key)
    if isinstance(token, dict):  # AddedToken serialized as a dict
        token = token.get("content")
    token_id = tokenizer.token_to_id(token) if isinstance(token, str) else None
    return token_id if token_id is not None else (int(fallback) if fallback is not None else None)


def _as_ids(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def _resolve(waiters: list[asyncio.Future], reason: str | None) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(reason)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
