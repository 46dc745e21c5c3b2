"""TritonEngine against a tritonserver that freezes or restarts: the idle timeout fails a call on a
frozen server within the timeout, naming the URL; the engine is unhealthy until the server
answers again, and the first call after that succeeds; `helium-trt serve --engine-timeout` does
the same for a run's row while gRPC health says NOT_SERVING; the first request after a restart
succeeds through one reconnect and retry.

These tests stop and restart a server, so they run their own small one (the stand-in
``tensorrt_llm`` model alone) instead of the session's shared server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from helium_trt.api.convert import rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc, workflow_pb2
from helium_trt.engine.base import EngineRequest, SamplingConfig
from helium_trt.engine.triton.client import TritonEngine, TritonEngineConfig
from helium_trt.errors import EngineUnavailableError
from engine_helpers import collect

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
IDLE_TIMEOUT_S = 2.0
# Generous liveness bounds, not timings: a loaded 2-core CI machine is slow.
TIMEOUT_MARGIN_S = 8.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class OwnServer:
    """This module's tritonserver; ``start_again`` replaces ``server`` with one on the same ports."""

    server: object
    model_dir: Path

    @property
    def url(self) -> str:
        return self.server.grpc_url

    @property
    def pid(self) -> int:
        return self.server._process.pid  # the launcher keeps the child private; tests signal it

    def config(self) -> TritonEngineConfig:
        return TritonEngineConfig(url=self.url, tokenizer_dir=str(self.model_dir),
                                  idle_timeout_s=IDLE_TIMEOUT_S)

    def stop(self) -> None:
        self.server.stop()

    def start_again(self) -> None:
        """A new server on the stopped one's ports."""
        from dataclasses import replace

        from helium_trt.server.triton_launcher import TritonServer

        old = self.server
        config = replace(old.config, grpc_port=old.grpc_port, http_port=old.http_port)
        self.server = TritonServer(config, old.install).start()


@pytest.fixture(scope="module")
def own_server(triton_server, triton_model_dir, tmp_path_factory):
    """A tritonserver serving only the stand-in tensorrt_llm model (skips like the shared one)."""
    if not triton_server.is_standin:
        pytest.skip("these tests freeze and restart a server of their own (the CPU stand-in)")
    from helium_trt.engine.config import MODEL_DIR_ENV
    from helium_trt.server.triton_launcher import TritonLaunchConfig, TritonServer

    workdir = tmp_path_factory.mktemp("triton_faults")
    repo = workdir / "repo"
    repo.mkdir()
    (repo / "tensorrt_llm").symlink_to(REPO_ROOT / "model_repo" / "tensorrt_llm")
    config = TritonLaunchConfig(model_repo=repo, env={MODEL_DIR_ENV: str(triton_model_dir)},
                                log_path=workdir / "tritonserver.log", stop_timeout_s=8)
    own = OwnServer(TritonServer(config).start(), triton_model_dir)
    try:
        yield own
    finally:
        os.kill(own.pid, signal.SIGCONT)  # never leave a stopped server behind
        own.server.stop()


def long_request(engine, request_id: str, max_tokens: int = 900) -> EngineRequest:
    prompt = tuple(engine.tokenizer.encode("Name three primary colors."))
    return EngineRequest(request_id, prompt, SamplingConfig(max_tokens=max_tokens, ignore_eos=True))


def test_frozen_server_fails_the_call_in_time_and_the_engine_heals(own_server):
    async def body():
        engine = await TritonEngine.connect(own_server.config())
        try:
            frozen_at, items = None, []
            try:
                async for item in engine.generate(long_request(engine, "frozen-1")):
                    if frozen_at is None:  # mid-call: the first tokens are back
                        os.kill(own_server.pid, signal.SIGSTOP)
                        frozen_at = time.monotonic()
                    items.append(item)
                waited = time.monotonic() - frozen_at
                result, health = items[-1], engine.health()
                asked = time.monotonic()  # a new call waits for one probe, then fails
                with pytest.raises(EngineUnavailableError, match=own_server.url):
                    await collect(engine, long_request(engine, "while-frozen", 4))
                refused_after = time.monotonic() - asked
            finally:
                os.kill(own_server.pid, signal.SIGCONT)
            _, after = await collect(engine, long_request(engine, "after-thaw", 4))
            return result, waited, health, refused_after, after, engine.health()
        finally:
            await engine.close()

    result, waited, health, refused_after, after, healed = asyncio.run(body())
    assert result.finish_reason == "error" and len(result.output_token_ids) > 0  # it was mid-call
    assert own_server.url in result.error and "engine timeout" in result.error
    assert waited < IDLE_TIMEOUT_S + TIMEOUT_MARGIN_S
    assert not health.healthy and own_server.url in health.reason
    assert refused_after < IDLE_TIMEOUT_S + TIMEOUT_MARGIN_S
    # The first call after the server thaws goes ahead (its probe finds the server ready).
    assert after.finish_reason == "length" and len(after.output_token_ids) == 4
    assert healed.healthy


def _run_one(address: str, text: str, max_tokens: int) -> list:
    workflow = json_format.ParseDict({"name": "one-call", "ops": [
        {"id": "q", "input": {}},
        {"id": "p", "format": {"template": "Answer briefly: {q}"}},
        {"id": "a", "llm": {"prompt": "p", "config": {"max_tokens": max_tokens}}},
        {"id": "answer", "output": {"input": "a"}},
    ]}, workflow_pb2.Workflow())
    request = service_pb2.RunRequest(
        workflow=workflow, rows=rows_to_proto([{"q": text}]),
        options=service_pb2.RunOptions(optimizations=service_pb2.Optimizations(
            disable_prompt_cache=True)))
    with grpc.insecure_channel(address) as channel:
        return list(service_pb2_grpc.HeliumServiceStub(channel).Run(request, timeout=120))


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="helium.v1.HeliumService"), timeout=5).status


def _wait_health(address: str, status: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while _health(address) != status:
        assert time.monotonic() < deadline, \
            f"health never became {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
        time.sleep(0.05)


def test_served_engine_timeout_fails_the_row_and_health_follows(own_server, tmp_path):
    from serve_helpers import serve

    with serve(own_server.model_dir, tmp_path, "--engine", "triton", "--url", own_server.url,
               "--engine-timeout", str(IDLE_TIMEOUT_S)) as served:
        assert _health(served.address) == SERVING
        os.kill(own_server.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            events = _run_one(served.address, "What is the capital of France?", 4)
            waited = time.monotonic() - started
            errors = [(service_pb2.ErrorCode.Name(e.error.code), e.error.message)
                      for e in events if e.WhichOneof("event") == "error"]
            _wait_health(served.address, NOT_SERVING, 5)  # the server polls its engines
        finally:
            os.kill(own_server.pid, signal.SIGCONT)
        _wait_health(served.address, SERVING, 30)
        after = _run_one(served.address, "Name three primary colors.", 4)
    assert len(errors) == 1 and errors[0][0] == "ERROR_CODE_UNAVAILABLE", errors
    assert "operator 'a'" in errors[0][1] and own_server.url in errors[0][1]
    assert waited < IDLE_TIMEOUT_S + TIMEOUT_MARGIN_S
    assert [e.WhichOneof("event") for e in after].count("row_output") == 1


def test_first_request_after_a_restart_succeeds(own_server):
    async def body():
        engine = await TritonEngine.connect(own_server.config())
        try:
            _, before = await collect(engine, long_request(engine, "before-restart", 4))

            await asyncio.to_thread(own_server.stop)
            # A check on the engine's channel while the server is down leaves the channel in
            # reconnect backoff: the state in which the first request after a restart failed
            # with UNAVAILABLE. (Fault injection: a check, so the engine's health is untouched.)
            with pytest.raises(InferenceServerException):
                await engine._transport._client.is_server_ready(client_timeout=2)
            await asyncio.to_thread(own_server.start_again)
            _, after = await collect(engine, long_request(engine, "after-restart", 4))
            return before, after, engine.health()
        finally:
            await engine.close()

    before, after, health = asyncio.run(body())
    assert before.finish_reason == "length"
    assert after.finish_reason == "length", after.error
    assert after.output_token_ids == before.output_token_ids  # greedy: the same tokens, once
    assert health.healthy
