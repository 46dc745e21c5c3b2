"""The Triton `helium` model with a `tenants_file` (serve --auth-tokens' format) on a real
tritonserver: a request must name a listed tenant, and that tenant's quotas apply as on the gRPC
service. Its own server: the session's shared one runs model_repo/ as it is (no tenants file)."""

from __future__ import annotations

import shutil

import pytest

from auth_helpers import TOKEN_A, finished, one_call_request, write_tokens
from triton_helpers import stream_through_helium as _stream

grpcclient = pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def triton_with_tenants(triton_server, triton_model_dir, tmp_path_factory):
    """tritonserver on a copy of model_repo/ whose helium model reads a tenants file."""
    if not triton_server.is_standin:
        pytest.skip("starts its own server on model_repo/'s CPU stand-in")
    from conftest import REPO_ROOT
    from helium_trt.engine.config import MODEL_DIR_ENV
    from helium_trt.engine.triton.trtllm_standin import DTYPE_ENV
    from helium_trt.server.triton_launcher import TritonLaunchConfig, TritonServer

    workdir = tmp_path_factory.mktemp("triton_quotas")
    tenants = write_tokens(workdir / "tenants.yaml", {
        "capped": {"tokens": [TOKEN_A], "max_priority": 0}})
    repo = workdir / "model_repo"
    shutil.copytree(REPO_ROOT / "model_repo", repo,
                    ignore=shutil.ignore_patterns("__pycache__"))
    config = repo / "helium" / "config.pbtxt"
    empty = 'key: "tenants_file", value: { string_value: "" }'
    assert empty in config.read_text()
    config.write_text(config.read_text().replace(
        empty, f'key: "tenants_file", value: {{ string_value: "{tenants}" }}'))
    launch = TritonLaunchConfig(model_repo=repo, log_path=workdir / "tritonserver.log",
                                env={MODEL_DIR_ENV: str(triton_model_dir), DTYPE_ENV: "float32"},
                                stop_timeout_s=8)
    with TritonServer(launch) as server:
        yield server.grpc_url


def test_a_listed_tenant_runs_within_its_quotas(triton_with_tenants):
    events = _stream(triton_with_tenants, one_call_request("Be brief.", "Hi", priority=0),
                     "capped")
    assert finished(events).output_tokens >= 1
    with pytest.raises(Exception) as info:
        _stream(triton_with_tenants, one_call_request("Be brief.", "Hi", priority=1), "capped")
    message = str(info.value)
    assert "PermissionDeniedError" in message and "options.priority" in message
    assert "(0)" in message  # the tenant's highest priority, as the gRPC service says it


def test_a_tenant_the_file_does_not_list_is_refused(triton_with_tenants):
    for tenant in ("someone-else", None):  # leaving the parameter out escapes nothing
        with pytest.raises(Exception) as info:
            _stream(triton_with_tenants, one_call_request("Be brief.", "Hi"), tenant)
        message = str(info.value)
        assert "PermissionDeniedError" in message and "parameters.tenant" in message
        assert "tenants_file" in message
