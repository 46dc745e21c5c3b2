"""Streams a helium.v1.RunRequest through Triton's `helium` model, as a Triton client would."""

from __future__ import annotations

import queue

import numpy as np
import pytest

from helium_trt.api.helium.v1 import service_pb2

grpcclient = pytest.importorskip("tritonclient.grpc")


def stream_through_helium(url: str, request: service_pb2.RunRequest,
                          tenant: str | None = None) -> list:
    """Every RunEvent the helium model streams for ``request``, sent with the ``tenant`` request
    parameter when given (raises on a Triton error)."""
    received: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    try:
        tensor = grpcclient.InferInput("request", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([request.SerializeToString()], dtype=np.object_))
        client.async_stream_infer("helium", [tensor], enable_empty_final_response=True,
                                  parameters={"tenant": tenant} if tenant else None)
        events = []
        while True:
            result, error = received.get(timeout=120)
            if error is not None:
                raise error
            response = result.get_response()
            if response.outputs:
                event = service_pb2.RunEvent()
                event.ParseFromString(result.as_numpy("event").reshape(-1)[0])
                events.append(event)
            if response.parameters["triton_final_response"].bool_param:
                return events
    finally:
        client.stop_stream()
        client.close()
