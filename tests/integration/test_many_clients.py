"""Many clients on one real `helium-trt serve` process (tiny model, 127.0.0.1): runs of the same
workflow never share an engine request, a stream or a result, and every run completes."""

from __future__ import annotations

import asyncio
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


def _panel(max_tokens: int = 3) -> workflow_pb2.Workflow:
    """Two experts share a static system prompt over the row's report; a writer reads both."""
    system = "You are one of two analysts preparing notes on a company report. " * 2
    ops = [{"id": "report", "input": {}}]
    for name, focus in (("growth", "revenue and growth"), ("risk", "costs and risks")):
        ops += [
            {"id": f"{name}_p", "format": {"messages": [
                {"role": "ROLE_SYSTEM", "template": f"{system}Focus on {focus}."},
                {"role": "ROLE_USER", "template": "{report}"}]}},
            {"id": name, "llm": {"prompt": f"{name}_p", "config": {"max_tokens": max_tokens}}}]
    ops += [
        {"id": "writer_p", "format": {"template": "Notes: {growth} | {risk}\nSummary:"}},
        {"id": "writer", "llm": {"prompt": "writer_p", "config": {"max_tokens": max_tokens}}},
        {"id": "summary", "output": {"input": "writer"}}]
    return json_format.ParseDict({"name": "panel", "ops": ops}, workflow_pb2.Workflow())


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


async def _run_all_at_once(address: str, requests) -> list[list[service_pb2.RunEvent]]:
    """Every request from its own client (channel) at once."""
    async def one(request):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = service_pb2_grpc.HeliumServiceStub(channel)
            return [event async for event in stub.Run(request, timeout=300)]

    return await asyncio.gather(*(one(r) for r in requests))


def _kv_blocks_of(events, block_size: int = 16) -> int:
    """KV blocks the run's LLM calls need, each call on its own (prompt and output; a shared
    prefix counts in every call that reads it)."""
    return sum(-(-(e.op_finished.prompt_tokens + e.op_finished.output_tokens) // block_size)
               for e in events if e.WhichOneof("event") == "op_finished")


def test_two_hundred_clients_on_a_quarter_of_the_working_set(roomy_server, tiny_model_dir,
                                                              tmp_path):
    requests = [service_pb2.RunRequest(
        workflow=_panel(), rows=rows_to_proto([{"report": (
            f"Report {i}: revenue rose {i % 17}% in region {i % 7}; costs fell {i % 5}%.")}]),
        options=service_pb2.RunOptions(optimizations=NO_RESULT_CACHE)) for i in range(200)]
    # The reference: one request at a time, on a pool that holds them all.
    alone = [_run(roomy_server.address, r) for r in requests]
    # The working set: every run's calls resident at once; the pool holds a quarter of it.
    working_set = sum(_kv_blocks_of(events) for events in alone)
    num_blocks = working_set // 4
    with serve(tiny_model_dir, tmp_path, "--kv-cache-blocks", str(num_blocks)) as tight:
        together = asyncio.run(_run_all_at_once(tight.address, requests))
        with grpc.insecure_channel(tight.address) as channel:
            stats = service_pb2_grpc.HeliumServiceStub(channel).Stats(service_pb2.StatsRequest())
    assert stats.kv_blocks_total == num_blocks and stats.kv_blocks_held == 0
    expected = [_rows_and_errors(events) for events in alone]
    assert all(rows and not errors for rows, errors in expected)
    got = [_rows_and_errors(events) for events in together]
    assert sum(1 for g, e in zip(got, expected) if g != e) == 0, \
        [(i, g) for i, (g, e) in enumerate(zip(got, expected)) if g != e][:5]
