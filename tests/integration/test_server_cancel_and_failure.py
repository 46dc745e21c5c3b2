"""Cancel storms and engine failures seen through a real gRPC server on 127.0.0.1 (the tiny
model). The server runs in this process (``start_server`` on a loop in a background thread) so a
test can make the engine's forward pass raise; the clients are ordinary gRPC clients.

- hundreds of runs cancelled at random points by several client threads: every run nobody
  cancelled keeps its row, and no KV block is held afterwards (Stats);
- an injected engine failure: the in-flight runs get UNAVAILABLE error events naming the
  operator and the engine within a second, health says NOT_SERVING while the fault lasts and
  SERVING again (and runs succeed) once it is gone;
- an engine that never comes back: `helium-trt serve` exits with status 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import grpc
import pytest
import torch
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helium_trt.api.convert import rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc, workflow_pb2
from helium_trt.engine.config import EngineConfig
from helium_trt.engine.embedded.engine import EmbeddedEngine
from helium_trt.engine.embedded.runner import ModelRunner
from helium_trt.server.core import HeliumCore
from helium_trt.server.grpc_service import SERVICE_NAME, start_server
from helium_trt.server.health import HealthPolicy
from helium_trt.server.tenants import tenant_named

NO_RESULT_CACHE = service_pb2.Optimizations(disable_prompt_cache=True)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Served:
    address: str
    engine: EmbeddedEngine
    core: HeliumCore
    call: Callable  # runs a coroutine on the server's loop and returns its result


@contextlib.contextmanager
def in_process_server(model_dir, policy: HealthPolicy = HealthPolicy(), on_give_up=None,
                      dtype: str = "float32"):
    """``start_server`` over one EmbeddedEngine, on an event loop in a background thread (bf16
    with one torch thread: the native kernels' configuration)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-server-loop", daemon=True)
    thread.start()

    def call(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    async def start():
        engine = EmbeddedEngine(EngineConfig(model_dir=str(model_dir), num_blocks=256,
                                             max_num_batched_tokens=256, dtype=dtype,
                                             num_threads=1 if dtype == "bfloat16" else None))
        core = HeliumCore([engine])
        server, port = await start_server(core, "127.0.0.1:0", health_policy=policy,
                                          on_give_up=on_give_up)
        return core, server, port

    core, server, port = call(start())
    try:
        yield Served(f"127.0.0.1:{port}", core.engines[0], core, call)
    finally:
        call(server.stop(grace=1.0))
        call(core.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class ForwardFault:
    """While ``on``, every forward pass raises (the restarted engine's too, so the restart probe
    fails and the engine stays down until ``on`` is False again)."""

    def __init__(self, monkeypatch, delay_s: float = 0.0):
        self.on = False
        real = ModelRunner.run

        def run(runner, sched):
            if self.on:
                raise RuntimeError("injected forward-pass fault")
            time.sleep(delay_s)  # a bigger model's step: runs stay in flight long enough
            return real(runner, sched)

        monkeypatch.setattr(ModelRunner, "run", run)


def _one_call(max_tokens: int) -> workflow_pb2.Workflow:
    return json_format.ParseDict({"name": "one-call", "ops": [
        {"id": "q", "input": {}},
        {"id": "p", "format": {"template": "Answer briefly: {q}"}},
        {"id": "a", "llm": {"prompt": "p", "config": {"max_tokens": max_tokens}}},
        {"id": "answer", "output": {"input": "a"}},
    ]}, workflow_pb2.Workflow())


def _request(text: str, max_tokens: int, **options) -> service_pb2.RunRequest:
    return service_pb2.RunRequest(workflow=_one_call(max_tokens), rows=rows_to_proto([{"q": text}]),
                                  options=service_pb2.RunOptions(optimizations=NO_RESULT_CACHE,
                                                                 **options))


def _kinds(events) -> list[str]:
    return [e.WhichOneof("event") for e in events]


def _errors(events) -> list[service_pb2.Error]:
    return [e.error for e in events if e.WhichOneof("event") == "error"]


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5).status


def _wait_health(address: str, status: int, timeout_s: float) -> float:
    """Seconds until both health services report ``status``."""
    started = time.monotonic()
    while not all(_health(address, s) == status for s in ("", SERVICE_NAME)):
        assert time.monotonic() - started < timeout_s, \
            f"health never became {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
        time.sleep(0.02)
    return time.monotonic() - started


def _kv_blocks_held(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.HeliumServiceStub(channel)
        return stub.Stats(service_pb2.StatsRequest(), timeout=5).kv_blocks_held


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cancel_storm_over_grpc_loses_no_uncancelled_row_and_frees_every_block(
        tiny_model_dir, caplog, monkeypatch, dtype):
    """In bfloat16 the engine runs the native prefill, decode and fused kernels (where the CPU
    has them): counted, so the storm is known to have gone through them."""
    from helium_trt.engine.embedded import native

    kernel_calls = {"prefill": 0, "decode": 0}
    for kind, cls in (("prefill", native.PagedPrefill), ("decode", native.PagedDecode)):
        def counted(self, *args, _call=cls.__call__, _kind=kind):
            kernel_calls[_kind] += 1
            return _call(self, *args)
        monkeypatch.setattr(cls, "__call__", counted)
    num_runs, num_clients = 300, 8
    threads = torch.get_num_threads()
    with caplog.at_level(logging.ERROR), in_process_server(tiny_model_dir, dtype=dtype) as served:
        def client(index: int) -> list[tuple[bool, list]]:
            rng = random.Random(index)
            outcomes = []
            with grpc.insecure_channel(served.address) as channel:
                stub = service_pb2_grpc.HeliumServiceStub(channel)
                for n in range(index, num_runs, num_clients):
                    call = stub.Run(_request(f"question {n}", 4, stream_tokens=True), timeout=60)
                    cancel_after = rng.choice((None, 0, 1, 2, 3, 5, "timer"))
                    if cancel_after == 0:
                        call.cancel()
                    elif cancel_after == "timer":
                        threading.Timer(rng.random() * 0.03, call.cancel).start()
                    events = []
                    try:
                        for event in call:
                            events.append(event)
                            if len(events) == cancel_after:
                                call.cancel()
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.CANCELLED, exc
                        outcomes.append((True, events))
                        continue
                    outcomes.append((False, events))
            return outcomes

        with ThreadPoolExecutor(num_clients) as pool:
            outcomes = [o for batch in pool.map(client, range(num_clients)) for o in batch]
        deadline = time.monotonic() + 5
        while (held := _kv_blocks_held(served.address)) and time.monotonic() < deadline:
            time.sleep(0.05)  # the last cancels reach the engine after the clients returned

    assert len(outcomes) == num_runs
    completed = [events for cancelled, events in outcomes if not cancelled]
    assert 0 < len(completed) < num_runs  # some were cancelled, some were not
    for events in completed:
        assert not _errors(events), _errors(events)
        assert _kinds(events).count("row_output") == 1 and _kinds(events)[-1] == "run_stats"
    torch.set_num_threads(threads)
    assert held == 0
    assert "engine step failed" not in caplog.text
    if dtype == "bfloat16" and native.paged_prefill() is not None:
        assert kernel_calls["prefill"] > 0 and kernel_calls["decode"] > 0, kernel_calls


def test_an_engine_failure_fails_runs_at_once_and_health_follows_the_engine(
        tiny_model_dir, monkeypatch):
    fault = ForwardFault(monkeypatch, delay_s=0.01)
    with in_process_server(tiny_model_dir) as served:
        name = served.engine.info.model_name
        _wait_health(served.address, SERVING, 30.0)
        first_tokens = threading.Barrier(5)

        def long_run(n: int):
            events = []
            with grpc.insecure_channel(served.address) as channel:
                stub = service_pb2_grpc.HeliumServiceStub(channel)
                for event in stub.Run(_request(f"story {n}", 200, stream_tokens=True), timeout=30):
                    events.append(event)
                    if _kinds(events).count("token_delta") == 1 and event.HasField("token_delta"):
                        first_tokens.wait(10)
            if "token_delta" not in _kinds(events):
                first_tokens.wait(10)  # ended without a token: let the others go on
            return events

        with ThreadPoolExecutor(4) as pool:
            runs = [pool.submit(long_run, n) for n in range(4)]
            first_tokens.wait(10)  # every run is decoding
            fault.on = True
            results = [r.result(30) for r in runs]
            _wait_health(served.address, NOT_SERVING, 30.0)

        num_failed = 0
        for events in results:
            if not _errors(events):  # it ended (EOS) before the fault
                assert "row_output" in _kinds(events)
                continue
            num_failed += 1
            (error,) = _errors(events)
            assert error.code == service_pb2.ERROR_CODE_UNAVAILABLE and error.op_id == "a"
            assert "operator 'a'" in error.message and f"engine {name!r} failed" in error.message
            assert "injected forward-pass fault" in error.message
            # at once: mid-way through its 200 tokens, not after them
            assert _kinds(events).count("token_delta") < 200
        assert num_failed >= 1

        # While the fault lasts the engine cannot come back: runs fail fast (an error event, not
        # the deadline a run waiting for the engine would reach), health stays down.
        with grpc.insecure_channel(served.address) as channel:
            events = list(service_pb2_grpc.HeliumServiceStub(channel).Run(
                _request("while down", 3), timeout=10))
        (error,) = _errors(events)
        assert error.code == service_pb2.ERROR_CODE_UNAVAILABLE
        assert "operator 'a'" in error.message and f"engine {name!r}" in error.message
        assert _health(served.address, "") == NOT_SERVING

        fault.on = False
        _wait_health(served.address, SERVING, 30.0)
        with grpc.insecure_channel(served.address) as channel:
            events = list(service_pb2_grpc.HeliumServiceStub(channel).Run(
                _request("after the fault", 3), timeout=30))
        assert not _errors(events) and "row_output" in _kinds(events)
        assert _kv_blocks_held(served.address) == 0


def _kept(name: str, text: str) -> workflow_pb2.Workflow:
    """A one-call workflow whose prompt starts with a static prefix of several KV blocks."""
    return json_format.ParseDict({"name": name, "ops": [
        {"id": "q", "input": {}},
        {"id": "p", "format": {"template": text * 3 + "{q}"}},
        {"id": "a", "llm": {"prompt": "p", "config": {"max_tokens": 2}}},
        {"id": "answer", "output": {"input": "a"}},
    ]}, workflow_pb2.Workflow())


def test_kept_prefixes_are_warm_again_after_the_engine_restarts(tiny_model_dir, monkeypatch,
                                                                   caplog):
    """Warm(keep=true) registrations (the default tenant's over gRPC, tenant a's through the
    core) and a public workflow: after a failure the engine restarts with an empty KV cache,
    and the core warms all three again, each in its own cache scope."""
    caplog.set_level(logging.WARNING)
    fault = ForwardFault(monkeypatch)
    tenant = tenant_named("a")
    kept = {"default": _kept("kept-default", "The default tenant's standing brief. "),
            "a": _kept("kept-a", "Tenant a keeps this long instruction warm. "),
            "public": _kept("kept-public", "Everyone shares this operator's preamble. ")}
    with in_process_server(tiny_model_dir) as served:
        core, engine = served.core, served.engine
        with grpc.insecure_channel(served.address) as channel:
            service_pb2_grpc.HeliumServiceStub(channel).Warm(
                service_pb2.WarmRequest(workflow=kept["default"], keep=True), timeout=30)
        served.call(core.warm(service_pb2.WarmRequest(workflow=kept["a"], keep=True), tenant))
        served.call(core.publish([kept["public"]]))
        salts = {"default": None, "a": tenant.cache_salt, "public": None}

        def resident() -> dict[str, int]:
            found = {}
            for key, workflow in kept.items():
                ((_, tokens),) = core._static_prefixes(workflow)
                scope = {} if salts[key] is None else {"cache_salt": salts[key]}
                found[key] = engine.num_resident_tokens(tokens, **scope)
            return found

        warm = resident()
        assert min(warm.values()) >= 32, warm
        fault.on = True
        with grpc.insecure_channel(served.address) as channel:
            events = list(service_pb2_grpc.HeliumServiceStub(channel).Run(
                _request("trip the fault", 2), timeout=30))
        assert _errors(events)
        _wait_health(served.address, NOT_SERVING, 30.0)
        fault.on = False
        _wait_health(served.address, SERVING, 30.0)
        deadline = time.monotonic() + 30
        while "re-warmed 3 kept prefix(es)" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.05)
        assert engine.num_restarts == 1
        assert resident() == warm
        # Tenant a's prefix is warm only in its own scope, as it was before the failure.
        ((_, tokens),) = core._static_prefixes(kept["a"])
        assert engine.num_resident_tokens(tokens) < 16


def test_an_engine_that_stays_down_makes_the_watcher_give_up(tiny_model_dir, monkeypatch):
    fault = ForwardFault(monkeypatch)
    reasons: list[str] = []
    gave_up = threading.Event()

    def on_give_up(reason: str) -> None:
        reasons.append(reason)
        gave_up.set()

    policy = HealthPolicy(give_up_after_s=0.5)
    with in_process_server(tiny_model_dir, policy, on_give_up) as served:
        fault.on = True
        with grpc.insecure_channel(served.address) as channel:
            list(service_pb2_grpc.HeliumServiceStub(channel).Run(_request("x", 3), timeout=10))
        assert gave_up.wait(30)
    (reason,) = reasons
    assert "0.5 s" in reason and served.engine.info.model_name in reason


def test_serve_exits_with_status_3_when_the_engine_never_comes_back(
        tiny_model_dir, tmp_path, monkeypatch, capsys):
    from helium_trt.server.cli import main

    fault = ForwardFault(monkeypatch)
    fault.on = True
    port_file = tmp_path / "port"

    def client():
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        with grpc.insecure_channel(address) as channel:
            list(service_pb2_grpc.HeliumServiceStub(channel).Run(_request("x", 3), timeout=10))

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    started = time.monotonic()
    status = main(["serve", "--address", "127.0.0.1:0", "--model", str(tiny_model_dir),
                   "--kv-cache-blocks", "64", "--unhealthy-exit", "0.5",
                   "--port-file", str(port_file)])
    thread.join(10)
    assert status == 3 and time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert "giving up, exiting with status 3" in err and "unhealthy for 0.5 s" in err
    assert "injected forward-pass fault" in err
