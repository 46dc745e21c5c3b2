"""Integration fixtures: one real tritonserver per test session, shared by every Triton test.

By default the server runs model_repo/ (the CPU stand-in ``tensorrt_llm`` on the tiny model) and
records each request's input tensors. scripts/test_gpu_trtllm.sh points the same tests at a GPU
deployment through the environment:

- HELIUM_TEST_TRITON_URL: use a server already running there instead of starting one;
- HELIUM_TEST_TRITON_REPO: start the server on this model repository instead of model_repo/;
- HELIUM_TEST_MODEL_DIR: the Hugging Face directory of the served model (tokenizer, and the
  weights the in-process reference engine loads); default: the tiny model.

Tests that need the stand-in's request record skip against any other deployment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class TritonDeployment:
    """A running Triton server with a tensorrt_llm-contract model, as the tests see it."""

    grpc_url: str
    model_dir: Path
    record_path: Path | None  # None unless the CPU stand-in is recording requests
    log_path: Path | None
    metrics_url: str | None = None  # Triton's Prometheus endpoint, where this session started it

    @property
    def is_standin(self) -> bool:
        return self.record_path is not None

    def recorded_inputs(self, request_id: str) -> dict:
        """The input tensors the stand-in received for ``request_id`` (name -> dtype/shape/values)."""
        if self.record_path is None:
            pytest.skip("only the CPU stand-in records the tensors it receives")
        entries = [json.loads(line) for line in self.record_path.read_text().splitlines()]
        matches = [e["inputs"] for e in entries if e["request_id"] == request_id]
        assert matches, f"the stand-in received no request {request_id!r}"
        return matches[-1]

    def engine_config(self, **overrides):
        from helium_trt.engine.triton.client import TritonEngineConfig

        return TritonEngineConfig(url=self.grpc_url, tokenizer_dir=str(self.model_dir), **overrides)


@pytest.fixture(scope="session")
def long_tiny_model_dir(tmp_path_factory):
    """The tiny model with a 4096-token window, so the example workflows' prompts fit."""
    from helium_trt.engine.embedded.tiny_model import TinyModelConfig, build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_long"),
                            TinyModelConfig(max_position_embeddings=4096))


@pytest.fixture(scope="session")
def triton_model_dir(tiny_model_dir) -> Path:
    return Path(os.environ.get("HELIUM_TEST_MODEL_DIR") or tiny_model_dir)


@pytest.fixture(scope="session")
def triton_server(triton_model_dir, tmp_path_factory):
    """Start tritonserver once for the session (or use $HELIUM_TEST_TRITON_URL); yields a TritonDeployment."""
    pytest.importorskip("tritonclient.grpc")
    url = os.environ.get("HELIUM_TEST_TRITON_URL")
    if url:
        yield TritonDeployment(url, triton_model_dir, None, None)
        return
    from helium_trt.engine.config import MODEL_DIR_ENV
    from helium_trt.engine.triton.trtllm_standin import DTYPE_ENV, RECORD_PATH_ENV
    from helium_trt.errors import EngineUnavailableError
    from helium_trt.server.triton_launcher import TritonLaunchConfig, TritonServer, find_tritonserver

    try:
        install = find_tritonserver()
    except EngineUnavailableError as exc:
        _skip_outside_ci(str(exc))
    if int(np.__version__.split(".")[0]) >= 2:
        _skip_outside_ci(f"numpy {np.__version__}: Triton's Python backend stub needs numpy<2")
    custom_repo = os.environ.get("HELIUM_TEST_TRITON_REPO")
    workdir = tmp_path_factory.mktemp("triton")
    record_path = None if custom_repo else workdir / "requests.jsonl"
    # float32: the tests compare the stand-in's tokens with an in-process float32 engine's.
    env = {MODEL_DIR_ENV: str(triton_model_dir), DTYPE_ENV: "float32"}
    if record_path is not None:
        env[RECORD_PATH_ENV] = str(record_path)
    # NOTE: a short stop timeout: should a client drop a stream early, tritonserver 2.51's Python
    # backend can fail to finalize the decoupled stand-in and waits out its whole exit timeout.
    config = TritonLaunchConfig(model_repo=Path(custom_repo or REPO_ROOT / "model_repo"), env=env,
                                log_path=workdir / "tritonserver.log", stop_timeout_s=8)
    with TritonServer(config, install) as server:
        yield TritonDeployment(server.grpc_url, triton_model_dir, record_path, server.log_path, server.metrics_url)


def _skip_outside_ci(reason: str) -> None:
    """CI installs tritonserver (.ci/run), so there a missing server is a failure, not a skip."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the Triton tests: {reason}")
    pytest.skip(reason)
