"""The Triton `helium` model takes the tenant from the request's `tenant` parameter: each tenant
has its own result cache there (KV reuse stays shared: TensorRT-LLM's Triton model takes no
cache salt, docs/security.md)."""

from __future__ import annotations

import pytest

from auth_helpers import finished, one_call_request
from triton_helpers import stream_through_helium as _stream


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
