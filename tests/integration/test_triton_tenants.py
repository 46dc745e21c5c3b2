"""The Triton `helium` model takes the tenant from the request's `tenant` parameter: each tenant
has its own result cache there (KV reuse stays shared: TensorRT-LLM's Triton model takes no
cache salt, docs/security.md)."""

from __future__ import annotations

import queue

import numpy as np
import pytest

from helium_trt.api.helium.v1 import service_pb2

from auth_helpers import finished, one_call_request

grpcclient = pytest.importorskip("tritonclient.grpc")


def _stream(url: str, request: service_pb2.RunRequest, tenant: str | None) -> list:
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


def test_each_tenant_parameter_has_its_own_result_cache(triton_server):
    request = one_call_request("Answer in a word.", "Which tenant asks through Triton?")
    url = triton_server.grpc_url
    assert not finished(_stream(url, request, "alpha")).from_result_cache
    assert finished(_stream(url, request, "alpha")).from_result_cache
    assert not finished(_stream(url, request, "beta")).from_result_cache
    assert not finished(_stream(url, request, None)).from_result_cache


def test_a_bad_tenant_name_is_invalid_argument(triton_server):
    with pytest.raises(Exception) as info:
        _stream(triton_server.grpc_url, one_call_request("Be brief.", "Hi"), "no/such tenant")
    assert "parameters.tenant" in str(info.value)
