"""Triton adapter for the CPU stand-in of the ``tensorrt_llm`` model (Python backend, decoupled).

Reads the config parameters and request tensors, hands them to
helium_trt.engine.triton.trtllm_standin, sends what it returns and maps helium errors to TritonError.
Binds the TensorRT-LLM backend's KV-cache block and request gauges to Triton's custom metrics.
"""

import gc
import json
import os

import triton_python_backend_utils as pb_utils

from helium_trt.engine.triton.trtllm_metrics import TrtllmGauges
from helium_trt.engine.triton.trtllm_standin import StandInConfig, StandInServer
from helium_trt.errors import (
    EngineUnavailableError,
    InvalidRequestError,
    ModelNotFoundError,
    RequestCancelledError,
    ResourceExhaustedError,
)

# TritonError's code names; pb_utils only gains TritonError once the stub has started.
_ERROR_CODES = (
    (InvalidRequestError, "INVALID_ARG"),
    (ResourceExhaustedError, "UNAVAILABLE"),
    (ModelNotFoundError, "NOT_FOUND"),
    (RequestCancelledError, "CANCELLED"),
    (EngineUnavailableError, "UNAVAILABLE"),
)


def _gauge_family(name, description):
    return pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.GAUGE)


class _Sink:
    """One request's response sender, as the package's ResponseSink."""

    def __init__(self, request):
        self._sender = request.get_response_sender()

    def send(self, tensors, final):
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        if not tensors:
            self._sender.send(flags=flags)
            return
        outputs = [pb_utils.Tensor(name, array) for name, array in tensors.items()]
        self._sender.send(pb_utils.InferenceResponse(output_tensors=outputs), flags=flags)

    def send_error(self, error):
        name = next((code for kind, code in _ERROR_CODES if isinstance(error, kind)), "INTERNAL")
        triton_error = pb_utils.TritonError(f"{type(error).__name__}: {error}", getattr(pb_utils.TritonError, name))
        self._sender.send(pb_utils.InferenceResponse(error=triton_error),
                          flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def is_cancelled(self):
        return self._sender.is_cancelled()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        gauges = TrtllmGauges(_gauge_family, args["model_name"], args["model_version"])
        self._server = StandInServer(StandInConfig.from_parameters(params, os.environ), gauges=gauges)

    async def execute(self, requests):
        # NOTE: async: for a decoupled model the stub runs this on its own event loop and keeps
        # taking requests, so requests batch continuously in the engine. Sending responses from a
        # thread of our own instead raced with the stub (model unload hung now and then).
        for request in requests:
            tensors = {tensor.name(): tensor.as_numpy() for tensor in request.inputs()}
            await self._server.serve(tensors, request.request_id(), _Sink(request))
        return None

    def finalize(self):
        self._server.close()
        # NOTE: drop the metric families now, while the stub is alive: freed later, in the stub's
        # own destructor, they segfault it (Triton python_backend's metrics-at-shutdown bug, fixed
        # upstream after 2.51).
        self._server = None
        gc.collect()
