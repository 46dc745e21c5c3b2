"""Many clients on one real `helium-trt serve` process (tiny model, 127.0.0.1): runs of the same
workflow never share an engine request, a stream or a result, and every run completes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from google.protobuf import json_format

from helium_trt.api.convert import rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc, workflow_pb2

from serve_helpers import serve

NO_RESULT_CACHE = service_pb2.Optimizations(disable_prompt_cache=True)


def _one_llm_op(max_tokens: int = 4) -> workflow_pb2.Workflow:
    return json_format.ParseDict({"name": "one-call", "ops": [
        {"id": "q", "input": {}},
        {"id": "p", "format": {"template": "Answer briefly: {q}"}},
        {"id": "a", "llm": {"prompt": "p", "config": {"max_tokens": max_tokens}}},
        {"id": "answer", "output": {"input": "a"}},
    ]}, workflow_pb2.Workflow())


def _run(address: str, request: service_pb2.RunRequest) -> list[service_pb2.RunEvent]:
    with grpc.insecure_channel(address) as channel:
        return list(service_pb2_grpc.HeliumServiceStub(channel).Run(request, timeout=120))


def _rows_and_errors(events) -> tuple[dict[int, dict[str, str]], list[str]]:
    rows = {e.row_output.row: dict(e.row_output.outputs) for e in events
            if e.WhichOneof("event") == "row_output"}
    return rows, [e.error.message for e in events if e.WhichOneof("event") == "error"]


@pytest.fixture(scope="module")
def roomy_server(tiny_model_dir, tmp_path_factory):
    with serve(tiny_model_dir, tmp_path_factory.mktemp("roomy"), "--kv-cache-mb", "16") as served:
        yield served


def test_eight_clients_running_one_workflow_each_get_their_own_answer(roomy_server):
    requests = [service_pb2.RunRequest(
        workflow=_one_llm_op(), rows=rows_to_proto([{"q": f"What is {i} plus {i}?"}]),
        options=service_pb2.RunOptions(optimizations=NO_RESULT_CACHE)) for i in range(8)]
    alone = [_rows_and_errors(_run(roomy_server.address, r)) for r in requests]
    assert all(not errors for _, errors in alone)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda r: _rows_and_errors(_run(roomy_server.address, r)),
                                 requests))
    assert together == alone


def _cancel_after_first_event(address: str, request: service_pb2.RunRequest) -> None:
    with grpc.insecure_channel(address) as channel:
        call = service_pb2_grpc.HeliumServiceStub(channel).Run(request, timeout=120)
        next(call)
        call.cancel()


def test_cancelled_and_deadlined_runs_log_nothing(roomy_server):
    # Each cancelled or deadlined run used to log "_GatheringFuture exception was never
    # retrieved" with a traceback (2.2 MB per 1,000 cancels).
    def request(i: int, **options) -> service_pb2.RunRequest:
        return service_pb2.RunRequest(
            workflow=_one_llm_op(max_tokens=200), rows=rows_to_proto([{"q": f"Count to {i}."}] * 2),
            options=service_pb2.RunOptions(optimizations=NO_RESULT_CACHE, **options))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: _cancel_after_first_event(roomy_server.address, request(i)),
                      range(12)))
        deadlined = list(pool.map(lambda i: _rows_and_errors(_run(
            roomy_server.address, request(i, deadline_ms=20 + i))), range(8)))
    assert all(errors for _, errors in deadlined)
    _run(roomy_server.address, request(99, deadline_ms=1))  # the server is still serving
    log = roomy_server.log()
    for sign in ("never retrieved", "Traceback", "destroyed but it is pending"):
        assert sign not in log, log[-3000:]
