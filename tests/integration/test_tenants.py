"""Tenants on a real `helium-trt serve` process on 127.0.0.1 (tiny model, bearer tokens): one
tenant cannot see another's cached results, cached-token counts or Stats; the operator's public
workflow is shared; quotas refuse with the right codes."""

from __future__ import annotations

import queue
import time

import grpc
import pytest
import yaml

from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc

from auth_helpers import TOKEN_A, TOKEN_B, bearer, finished, one_call_request, write_tokens
from serve_helpers import serve

TOKEN_C = "token-of-tenant-c-with-quotas"
TOKEN_D = "token-of-tenant-d-fresh-one"  # sends nothing but the other tenant's prompt
SECRET = "Zebra protocol: the vault code of the north office is 7-4-1-9, never tell. " * 2
PUBLIC = "You are the help desk of Example Corp; answer politely and in one line. " * 2
NO_RESULT_CACHE = {"optimizations": service_pb2.Optimizations(disable_prompt_cache=True)}


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tenants")
    tokens = write_tokens(workdir / "tokens.yaml", {
        "a": {"tokens": [TOKEN_A]}, "b": {"tokens": [TOKEN_B]}, "d": {"tokens": [TOKEN_D]},
        "c": {"tokens": [TOKEN_C], "max_concurrent_runs": 1, "max_registered_workflows": 1,
              "max_priority": 5}})
    public = workdir / "public.yaml"
    public.write_text(yaml.safe_dump(_message_dict(one_call_request(PUBLIC, "x", name="desk"))))
    with serve(tiny_model_dir, workdir, "--kv-cache-blocks", "256", "--auth-tokens", str(tokens),
               "--public-workflow", str(public)) as served:
        with grpc.insecure_channel(served.address) as channel:
            yield served, service_pb2_grpc.HeliumServiceStub(channel)


def _message_dict(request: service_pb2.RunRequest) -> dict:
    from google.protobuf import json_format

    return {"workflow": json_format.MessageToDict(request.workflow)}


def _run(stub, token: str, request) -> list:
    return list(stub.Run(request, metadata=bearer(token), timeout=60))


def _stats(stub, token: str) -> service_pb2.StatsResponse:
    return stub.Stats(service_pb2.StatsRequest(), metadata=bearer(token), timeout=10)


def test_one_tenants_cached_result_is_not_anothers(server):
    served, stub = server
    request = one_call_request("Answer in a word.", "Which color is the sky of tenant a?")
    assert not finished(_run(stub, TOKEN_A, request)).from_result_cache
    assert finished(_run(stub, TOKEN_A, request)).from_result_cache
    b_before = _stats(stub, TOKEN_B)
    assert not finished(_run(stub, TOKEN_B, request)).from_result_cache
    b_after, a_after = _stats(stub, TOKEN_B), _stats(stub, TOKEN_A)
    assert b_after.result_cache_hits == b_before.result_cache_hits == 0
    assert b_after.num_runs == b_before.num_runs + 1
    assert a_after.result_cache_hits >= 1 and a_after.num_runs >= 2


def test_explain_tells_a_tenant_nothing_of_anothers_results(server):
    served, stub = server
    request = one_call_request("Answer in a word.", "Is the moon cheese, says tenant a?")
    _run(stub, TOKEN_A, request)

    def fetched(token: str) -> list:
        explained = stub.Explain(service_pb2.ExplainRequest(request=request),
                                 metadata=bearer(token), timeout=60)
        rule = [r for r in explained.rules if r.rule == "fetch_cached_results"]
        return list(rule[0].changed) + list(rule[0].added) if rule else []

    assert fetched(TOKEN_A) and not fetched(TOKEN_B)


def test_cached_tokens_tell_nothing_of_anothers_prompt(server):
    served, stub = server
    request = one_call_request(SECRET, "What is the vault code?", **NO_RESULT_CACHE)
    first_a = finished(_run(stub, TOKEN_A, request))
    assert first_a.prompt_tokens > 64
    assert finished(_run(stub, TOKEN_D, request)).cached_tokens == 0
    assert finished(_run(stub, TOKEN_D, request)).cached_tokens >= first_a.prompt_tokens - 16
    assert finished(_run(stub, TOKEN_A, request)).cached_tokens >= first_a.prompt_tokens - 16


def test_the_public_workflows_prefix_is_shared_and_the_row_part_is_not(server):
    served, stub = server
    request = one_call_request(PUBLIC, "Where is my parcel number 55?", **NO_RESULT_CACHE)
    b_first = finished(_run(stub, TOKEN_B, request)).cached_tokens
    a_first = finished(_run(stub, TOKEN_A, request)).cached_tokens
    b_again = finished(_run(stub, TOKEN_B, request)).cached_tokens
    assert b_first >= 32 and b_first % 16 == 0  # whole blocks of the public prefix
    assert a_first == b_first  # the public part only: nothing of b's row part
    assert b_again > b_first  # b's own row part is cached for b


def test_a_priority_above_the_tenants_limit_is_permission_denied(server):
    served, stub = server
    with pytest.raises(grpc.RpcError) as info:
        _run(stub, TOKEN_C, one_call_request("Be brief.", "Hi", priority=6))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "options.priority" in info.value.details() and "(5)" in info.value.details()
    assert _run(stub, TOKEN_C, one_call_request("Be brief.", "Hi", priority=5))[-1].HasField(
        "run_stats")


def test_registrations_past_the_tenants_quota_are_refused(server):
    served, stub = server

    def warm(name: str):
        workflow = one_call_request(PUBLIC + name, "x", name=name).workflow
        return stub.Warm(service_pb2.WarmRequest(workflow=workflow, keep=True),
                         metadata=bearer(TOKEN_C), timeout=60)

    warm("first")
    with pytest.raises(grpc.RpcError) as info:
        warm("second")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_registered_workflows: 1" in info.value.details()
    warm("first")  # the same registration again is not a new one
    assert _stats(stub, TOKEN_C).num_registered_workflows == 1
    assert _stats(stub, TOKEN_A).num_registered_workflows == 0


def test_runs_past_the_tenants_concurrency_are_refused(server):
    served, stub = server
    ops = one_call_request("Be brief.", "Hi").workflow
    held = service_pb2.RunRequest(workflow=ops)
    held.workflow.ops.add(id="ask", tool_call={"name": "lookup", "args": {"query": "q"}})
    held.workflow.ops.add(id="ask_out", output={"input": "ask"})
    held.rows.add().update({"q": "Hi"})
    outbox: queue.Queue = queue.Queue()
    outbox.put(service_pb2.SessionMessage(run=held))
    session = stub.Session(iter(outbox.get, None), metadata=bearer(TOKEN_C), timeout=60)
    try:
        assert any(e.WhichOneof("event") == "tool_call" for e in session)  # the run waits
        with pytest.raises(grpc.RpcError) as info:
            _run(stub, TOKEN_C, one_call_request("Be brief.", "Hi"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_concurrent_runs: 1" in info.value.details()
        _run(stub, TOKEN_A, one_call_request("Be brief.", "Hi"))  # other tenants are not held
    finally:
        session.cancel()
        outbox.put(None)
    deadline = time.monotonic() + 10
    while True:  # the cancelled run leaves; then c may run again
        try:
            _run(stub, TOKEN_C, one_call_request("Be brief.", "Hi"))
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert time.monotonic() < deadline
            time.sleep(0.1)
