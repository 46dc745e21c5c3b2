"""BlsTransport: TritonEngine's transport from inside a Triton Python-backend model (BLS).

The `helium` model drives the LLM model in the same server through Business Logic Scripting.
The Python backend's module (``triton_python_backend_utils``) exists only inside the stub, so
the caller passes it in; nothing here imports it.

NOTE: decoupled BLS (``exec(decoupled=True)``) returns a blocking response iterator; each
``next`` runs in a worker thread so the model's event loop keeps serving every other call.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import numpy as np

from helium_trt.engine.triton.client import TransportError
from helium_trt.engine.triton.trtllm_contract import KV_REUSED_BLOCKS, OUTPUT_IDS, SEQUENCE_LENGTH

_DONE = object()
_OUTPUTS = (OUTPUT_IDS, SEQUENCE_LENGTH, KV_REUSED_BLOCKS)


class BlsTransport:
    """Streams tensors to ``model_name`` with ``pb_utils.InferenceRequest(...).exec(decoupled=True)``."""

    def __init__(self, pb_utils, model_name: str, timeout_s: float | None = None):
        self._pb = pb_utils
        self._model_name = model_name
        self._timeout_ms = int(timeout_s * 1000) if timeout_s else 0
        self._iterators: dict[str, object] = {}
        self._cancelled: set[str] = set()

    async def stream(self, request_id: str, tensors: dict[str, np.ndarray]
                     ) -> AsyncIterator[tuple[dict[str, np.ndarray], bool]]:
        pb = self._pb
        request = pb.InferenceRequest(
            model_name=self._model_name, request_id=request_id,
            inputs=[pb.Tensor(name, array) for name, array in tensors.items()],
            requested_output_names=list(_OUTPUTS), timeout=self._timeout_ms)
        responses = await asyncio.to_thread(request.exec, decoupled=True)
        self._iterators[request_id] = responses
        try:
            while (response := await asyncio.to_thread(next, responses, _DONE)) is not _DONE:
                if response.has_error():
                    raise TransportError(response.error().message(),
                                         cancelled=request_id in self._cancelled)
                outputs = {t.name(): t.as_numpy() for t in response.output_tensors()}
                if outputs:
                    yield outputs, False
            yield {}, True  # the iterator ends after the response flagged final
        finally:
            self._iterators.pop(request_id, None)
            self._cancelled.discard(request_id)

    async def cancel(self, request_id: str) -> None:
        responses = self._iterators.get(request_id)
        cancel = getattr(responses, "cancel", None)
        if cancel is not None:
            self._cancelled.add(request_id)
            cancel()

    async def probe(self) -> str | None:
        """Always ready: the model is in this server, and this transport never reports it
        unreachable."""
        return None

    async def close(self) -> None:
        for request_id in list(self._iterators):
            await self.cancel(request_id)
