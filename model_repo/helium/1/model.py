"""Triton adapter for `helium` (Python backend, decoupled): bytes in, event bytes out.

Everything but Triton's objects lives in helium_trt.server.triton_model.
"""

import asyncio
import json

import numpy as np
import triton_python_backend_utils as pb_utils

from helium_trt.errors import (
    HeliumError, InvalidWorkflowError, ModelNotFoundError, PermissionDeniedError,
)
from helium_trt.server.triton_model import from_triton_args


def _triton_error(exc):
    # NOTE: Triton has no PERMISSION_DENIED: a refusal the caller must change its request for
    # is INVALID_ARG (the message keeps the class name); UNAVAILABLE would invite a retry.
    if isinstance(exc, (InvalidWorkflowError, PermissionDeniedError)):
        code = pb_utils.TritonError.INVALID_ARG
    elif isinstance(exc, ModelNotFoundError):
        code = pb_utils.TritonError.NOT_FOUND
    elif isinstance(exc, HeliumError):
        code = pb_utils.TritonError.UNAVAILABLE
    else:
        code = pb_utils.TritonError.INTERNAL
    return pb_utils.TritonError(f"{type(exc).__name__}: {exc}", code)


class TritonPythonModel:
    def initialize(self, args):
        self._model = from_triton_args(pb_utils, args, json.loads(args["model_config"]))

    async def execute(self, requests):
        # NOTE: async: the stub runs a decoupled model's execute on its own event loop and keeps
        # taking requests, so concurrent workflows share the engine (and its KV cache).
        await asyncio.gather(*(self._serve(request) for request in requests))
        return None

    async def _serve(self, request):
        sender = request.get_response_sender()

        def send(event_bytes):
            tensor = pb_utils.Tensor("event", np.array([event_bytes], dtype=np.object_))
            sender.send(pb_utils.InferenceResponse(output_tensors=[tensor]))

        try:
            payload = pb_utils.get_input_tensor_by_name(request, "request").as_numpy().reshape(-1)[0]
            # The tenant names whose result cache the run uses; Triton does not authenticate
            # it, so Triton must be reachable only by trusted clients (docs/security.md).
            tenant = json.loads(request.parameters() or "{}").get("tenant")
            await self._model.serve(bytes(payload), send, sender.is_cancelled, tenant)
        except Exception as exc:  # every failure goes back to the client, never kills the stub
            sender.send(pb_utils.InferenceResponse(error=_triton_error(exc)),
                        flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
