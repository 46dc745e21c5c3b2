"""CPU stand-in for the ``tensorrt_llm`` model: the embedded engine behind the tensorrtllm_backend contract.

Triton-free on purpose: model_repo/tensorrt_llm/1/model.py awaits ``StandInServer.serve`` with each
request's tensors and a ResponseSink; this module drives EmbeddedEngine and streams response
tensors back the way the TensorRT-LLM backend does (the final
response carries the last tokens and, when asked, the perf and token-count outputs). Every request's input
tensors can be appended to a JSON-lines record so tests can check what actually arrived.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import threading
from dataclasses import dataclass
from typing import Mapping, Protocol

import numpy as np

from helium_trt.engine.base import RequestResult, TokenDelta
from helium_trt.engine.config import MODEL_DIR_ENV, EngineConfig
from helium_trt.engine.triton.trtllm_contract import (
    ParsedRequest,
    perf_tensors,
    tensors_to_request,
    tokens_to_tensors,
)
from helium_trt.engine.triton.trtllm_metrics import TrtllmGauges, engine_stats
from helium_trt.errors import EngineUnavailableError, HeliumError, RequestCancelledError

log = logging.getLogger(__name__)

RECORD_PATH_ENV = "HELIUM_TRITON_RECORD_PATH"
DTYPE_ENV = "HELIUM_TRITON_DTYPE"
THREADS_ENV = "HELIUM_TRITON_THREADS"


class ResponseSink(Protocol):
    """Where one request's responses go (the Triton response sender, or a fake in tests)."""

    def send(self, tensors: Mapping[str, np.ndarray] | None, final: bool) -> None: ...

    def send_error(self, error: HeliumError) -> None:
        """Send ``error`` as the request's final response."""

    def is_cancelled(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class StandInConfig:
    """Engine settings from the model's config.pbtxt parameters, with environment overrides.

    ``dtype`` and ``num_threads`` None take the defaults of `helium-trt serve` (engine.cpu).
    """

    model_dir: str | None = None
    block_size: int = 16
    num_blocks: int | None = None
    max_num_batched_tokens: int = 512
    default_exclude_input: bool = True
    record_path: str | None = None
    dtype: str | None = None
    num_threads: int | None = None

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], environ: Mapping[str, str]) -> StandInConfig:
        """``$HELIUM_MODEL_DIR`` beats the ``model_dir`` parameter; ``$HELIUM_TRITON_RECORD_PATH``
        beats ``request_record_path``, ``$HELIUM_TRITON_DTYPE`` ``dtype``, and
        ``$HELIUM_TRITON_THREADS`` ``threads``. Empty values mean "not set"."""
        def param(key: str) -> str | None:
            value = params.get(key, "").strip()
            return value or None

        num_blocks = param("num_blocks")
        num_threads = environ.get(THREADS_ENV) or param("threads")
        return cls(
            model_dir=environ.get(MODEL_DIR_ENV) or param("model_dir"),
            block_size=int(param("tokens_per_block") or 16),
            num_blocks=int(num_blocks) if num_blocks else None,
            max_num_batched_tokens=int(param("max_num_batched_tokens") or 512),
            default_exclude_input=(param("exclude_input_in_output") or "true").lower() == "true",
            record_path=environ.get(RECORD_PATH_ENV) or param("request_record_path"),
            dtype=environ.get(DTYPE_ENV) or param("dtype"),
            num_threads=int(num_threads) if num_threads else None,
        )

    def engine_config(self) -> EngineConfig:
        from helium_trt.engine.embedded.cpu import resolve_dtype, resolve_num_threads

        return EngineConfig(model_dir=self.model_dir, block_size=self.block_size,
                            num_blocks=self.num_blocks, max_num_batched_tokens=self.max_num_batched_tokens,
                            dtype=resolve_dtype(self.dtype),
                            num_threads=resolve_num_threads(self.num_threads))


class StandInServer:
    """Serves tensorrt_llm-contract requests on an engine (EmbeddedEngine unless one is given)."""

    def __init__(self, config: StandInConfig, engine=None, gauges: TrtllmGauges | None = None):
        """``gauges``: where to publish the TensorRT-LLM backend's KV-cache block and request
        metrics (the model adapter binds them to Triton's metrics), refreshed after every step."""
        if engine is None:
            from helium_trt.engine.embedded.engine import EmbeddedEngine

            engine = EmbeddedEngine(config.engine_config())
        self.config = config
        self.engine = engine
        self._record_lock = threading.Lock()
        self._anonymous_ids = itertools.count()
        self._gauges = gauges
        self._num_reused_blocks = 0
        self._publish_metrics()

    async def serve(self, tensors: Mapping[str, np.ndarray], request_id: str, sink: ResponseSink) -> None:
        """Serve one request to completion on the running event loop; errors go to ``sink``.

        Any event loop works (the engine hands results to the loop that iterates its stream), so
        the Python backend's own loop runs this from an ``async def execute``.
        """
        request_id = request_id or f"__standin-{next(self._anonymous_ids)}"
        self._record(request_id, tensors)
        try:
            parsed = tensors_to_request(tensors, request_id, self.engine.tokenizer.decode,
                                        self.config.default_exclude_input)
            if parsed.is_stop:
                await self.engine.cancel(request_id)
                sink.send(None, final=True)
                return
            stream = self.engine.generate(parsed.request)  # validates now: raises on bad input
        except HeliumError as exc:
            sink.send_error(exc)
            return
        try:
            await self._relay(stream, parsed, sink)
        except Exception as exc:  # never leave a Triton request without its final response
            log.exception("stand-in request %s failed", request_id)
            sink.send_error(EngineUnavailableError(f"stand-in failed: {exc}"))
        finally:
            self._publish_metrics()  # a cancelled or failed request has released its blocks

    def close(self) -> None:
        asyncio.run(self.engine.close())

    # ---- internals -----------------------------------------------------------------------------

    async def _relay(self, stream, parsed: ParsedRequest, sink: ResponseSink) -> None:
        """Stream tokens, holding back the latest ones so the final response carries them."""
        request = parsed.request
        held: list[int] = []
        emitted: list[int] = []
        cancel_sent = False
        async for item in stream:
            self._observe_step(item)
            if isinstance(item, TokenDelta):
                new = [t for t in item.token_ids if t != parsed.end_id]
                if parsed.streaming and held and new:
                    sink.send(tokens_to_tensors(held), final=False)
                    held = []
                held.extend(new)
                emitted.extend(new)
                if not cancel_sent and sink.is_cancelled():
                    cancel_sent = True
                    await self.engine.cancel(request.request_id)
                continue
            if item.finish_reason == "error":
                sink.send_error(EngineUnavailableError(f"request {request.request_id!r}: {item.error}"))
                return
            if item.finish_reason == "cancelled" and cancel_sent:
                sink.send_error(RequestCancelledError(f"request {request.request_id!r} was cancelled"))
                return
            sink.send(self._final_tensors(parsed, held, emitted, item), final=True)

    def _observe_step(self, item: TokenDelta | RequestResult) -> None:
        """Each stream item comes from one engine step: count reused blocks, refresh the gauges."""
        if isinstance(item, RequestResult):
            self._num_reused_blocks += item.num_cached_tokens // self.engine.info.block_size
        self._publish_metrics()

    def _publish_metrics(self) -> None:
        if self._gauges is None:
            return
        try:
            self._gauges.publish(*engine_stats(self.engine, self._num_reused_blocks))
        except Exception:  # NOTE: metrics never fail a request; they stop at the first failure
            log.exception("stand-in metrics failed; not publishing them any more")
            self._gauges = None

    def _final_tensors(self, parsed: ParsedRequest, held: list[int], emitted: list[int],
                       result: RequestResult) -> dict[str, np.ndarray]:
        if parsed.streaming:
            tokens = held
        else:
            tokens = ([] if parsed.exclude_input else list(parsed.request.prompt_token_ids)) + emitted
        tensors = tokens_to_tensors(tokens)
        tensors.update(perf_tensors(_without_end(result, parsed), self.config.block_size, parsed))
        return tensors

    def _record(self, request_id: str, tensors: Mapping[str, np.ndarray]) -> None:
        if not self.config.record_path:
            return
        entry = {"request_id": request_id, "inputs": {
            name: {"dtype": str(np.asarray(value).dtype), "shape": list(np.shape(value)),
                   "values": np.asarray(value).tolist()}
            for name, value in tensors.items()
        }}
        with self._record_lock, open(self.config.record_path, "a") as out:
            out.write(json.dumps(entry) + "\n")


def _without_end(result: RequestResult, parsed: ParsedRequest) -> RequestResult:
    """The result as TensorRT-LLM counts it: the end token is not an output token."""
    tokens = tuple(t for t in result.output_token_ids if t != parsed.end_id)
    return dataclasses.replace(result, output_token_ids=tokens)
