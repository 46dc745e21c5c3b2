"""GrpcTransport: TritonEngine's way to a tensorrt_llm-contract model over Triton's gRPC API, from
outside the server, with the two guards a remote server needs.

- An idle timeout (``TritonEngineConfig.idle_timeout_s``; `helium-trt serve --engine-timeout`):
  a call whose server sends nothing for that long is cancelled (Triton then frees the request
  and TensorRT-LLM its KV blocks) and fails with an error naming the URL. Idle rather than total,
  so a long generation that keeps streaming never trips it while a frozen server (SIGSTOP, a hung
  GPU) is caught within one timeout. NOTE: the wait for a call's first response (queueing and
  prefill on the server) counts as idle too, so the timeout must exceed the longest queue wait a
  loaded server imposes; ``request_timeout_s`` remains the optional deadline of a whole call.
- One reconnect and retry: a call that fails at the connection level (UNAVAILABLE) before any
  response came back is sent once more on a fresh channel. After a tritonserver restart the old
  channel is broken or waiting out its reconnect backoff, so the first request after a restart
  failed. A call that already streamed something back is never resent: its tokens would repeat.
  Every client gets a subchannel of its own: gRPC shares connections between channels to one
  address by default, and a "fresh" channel then inherited the old one's backoff (its first
  call failed with "Connection refused" against a server listening again).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
from tritonclient.utils import InferenceServerException

from helium_trt.engine.triton.client import TransportError, TritonEngineConfig
from helium_trt.errors import EngineUnavailableError, HeliumError, ModelNotFoundError

_FINAL_FLAG = "triton_final_response"
# Readiness checks (connect, reconnect, health probes) wait at most this long, or the idle
# timeout when that is shorter: a frozen server accepts connections and never answers.
MAX_PROBE_TIMEOUT_S = 10.0


async def open_client(config: TritonEngineConfig):
    """A client to ``config.url`` whose server and model answer ready; raises
    EngineUnavailableError (no answer, not ready) or ModelNotFoundError (no such model)."""
    timeout = probe_timeout_s(config)
    client = grpcclient_aio.InferenceServerClient(config.url, channel_args=_CHANNEL_ARGS)
    async with closed_on_failure(client, config.url):
        if not await client.is_server_ready(client_timeout=timeout):
            raise EngineUnavailableError(f"Triton at {config.url} is not ready")
        if not await client.is_model_ready(config.model_name, client_timeout=timeout):
            raise ModelNotFoundError(f"Triton at {config.url} has no ready model {config.model_name!r}")
    return client


@contextlib.asynccontextmanager
async def closed_on_failure(client, url: str):
    """Close ``client`` when the body raises; a Triton error becomes EngineUnavailableError
    naming ``url``."""
    try:
        yield
    except InferenceServerException as exc:
        await client.close()
        raise EngineUnavailableError(f"Triton at {url}: {exc.message()}") from exc
    except BaseException:
        await client.close()
        raise


def _channel_args() -> list[tuple[str, int]]:
    """tritonclient's default channel options, plus a subchannel pool local to the channel."""
    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.use_local_subchannel_pool", 1),
    ]


_CHANNEL_ARGS = _channel_args()


def probe_timeout_s(config: TritonEngineConfig) -> float:
    return min(config.idle_timeout_s or MAX_PROBE_TIMEOUT_S, MAX_PROBE_TIMEOUT_S)


class GrpcTransport:
    """One tritonclient gRPC stream per request: cancelling the stream is how Triton cancels a
    request (and how TensorRT-LLM frees its KV blocks)."""

    def __init__(self, client, config: TritonEngineConfig):
        self._client = client
        self._config = config
        self._calls: dict[str, tuple[object, object]] = {}  # request id -> (client, call)
        self._open: set[str] = set()  # request ids whose stream runs (also while reconnecting)
        self._cancelled: set[str] = set()
        self._retired: list = []  # replaced clients, closed once no call uses them
        self._reconnecting = asyncio.Lock()

    async def stream(self, request_id: str, tensors: dict[str, np.ndarray]
                     ) -> AsyncIterator[tuple[dict[str, np.ndarray], bool]]:
        message = {"model_name": self._config.model_name, "inputs": _infer_inputs(tensors),
                   "request_id": request_id}
        self._open.add(request_id)
        try:
            for attempt in (1, 2):
                client = self._client
                call = client.stream_infer(_once(message), stream_timeout=self._config.request_timeout_s)
                self._calls[request_id] = (client, call)
                received = False
                try:
                    async for response in self._responses(call, request_id):
                        received = True
                        yield response
                    return
                except _Unavailable as exc:
                    if request_id in self._cancelled:
                        raise TransportError(str(exc), cancelled=True) from exc
                    if received or attempt == 2:
                        raise TransportError(str(exc), unreachable=True) from exc
                finally:
                    self._calls.pop(request_id, None)
                await self._reconnect(client)
                if request_id in self._cancelled:
                    raise TransportError(f"request {request_id!r} was cancelled", cancelled=True)
        finally:
            self._open.discard(request_id)
            self._cancelled.discard(request_id)
            await self._close_retired()

    async def cancel(self, request_id: str) -> None:
        if request_id in self._open:
            self._cancelled.add(request_id)  # also stops a retry that has not started yet
        entry = self._calls.get(request_id)
        if entry is not None:
            entry[1].cancel()

    async def probe(self) -> str | None:
        """None once a fresh client finds the server and model ready (it then replaces the
        current one), else why not."""
        try:
            await self._reconnect(None)
        except TransportError as exc:
            return str(exc)
        return None

    async def close(self) -> None:
        for client in [self._client, *self._retired]:
            await client.close()
        self._retired.clear()

    # ---- internals -----------------------------------------------------------------------------

    async def _responses(self, call, request_id: str):
        """(output tensors, is final) per response; raises TransportError, or _Unavailable for a
        connection-level failure."""
        url, timeout = self._config.url, self._config.idle_timeout_s
        while True:
            try:
                async with asyncio.timeout(timeout):
                    result, error = await anext(call)
            except StopAsyncIteration:
                return
            except TimeoutError:
                call.cancel()
                raise TransportError(
                    f"Triton at {url} sent nothing for {timeout:g} s on request {request_id!r} "
                    "(engine timeout); the request was cancelled", unreachable=True) from None
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                message = f"Triton at {url}: {code.name}: {exc.details()}"
                if code == grpc.StatusCode.UNAVAILABLE:
                    raise _Unavailable(message) from exc
                raise TransportError(message, cancelled=code == grpc.StatusCode.CANCELLED) from exc
            if error is not None:
                raise TransportError(error.message())
            response = result.get_response()
            outputs = {o.name: result.as_numpy(o.name) for o in response.outputs}
            yield outputs, response.parameters[_FINAL_FLAG].bool_param

    async def _reconnect(self, failed_client) -> None:
        """Replace the client with a fresh one whose server answers ready, unless another call
        already replaced ``failed_client``; raises TransportError(unreachable) when none answers."""
        async with self._reconnecting:
            if failed_client is not None and self._client is not failed_client:
                return
            try:
                client = await open_client(self._config)
            except HeliumError as exc:
                raise TransportError(str(exc), unreachable=True) from exc
            self._retired.append(self._client)
            self._client = client

    async def _close_retired(self) -> None:
        in_use = {id(client) for client, _ in self._calls.values()}
        idle = [c for c in self._retired if id(c) not in in_use]
        self._retired = [c for c in self._retired if id(c) in in_use]
        for client in idle:
            await client.close()


class _Unavailable(Exception):
    """The server could not be reached for a call (gRPC UNAVAILABLE): worth one retry."""


async def _once(message: dict):
    yield message


def _infer_inputs(tensors: dict[str, np.ndarray]) -> list:
    inputs = []
    for name, array in tensors.items():
        tensor = grpcclient.InferInput(name, list(array.shape), grpcclient.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs
