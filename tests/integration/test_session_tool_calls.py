"""Session tool calls never hang a stream: a real `helium-trt serve` process (tiny model) and
clients that never answer, answer an unknown call id, or half-close with a call pending."""

from __future__ import annotations

import asyncio
import queue
import time

import grpc
import pytest
from google.protobuf import json_format

from helium_trt.api.convert import rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc, workflow_pb2
from helium_trt.server.core import HeliumCore, ServerLimits

from runtime_helpers import make_engine
from serve_helpers import serve

ROWS = [{"q": "Where is Ohio?"}, {"q": "Where is Utah?"}]
_CLOSE = object()


def _tool_workflow() -> workflow_pb2.Workflow:
    return json_format.ParseDict({"name": "lookup", "ops": [
        {"id": "q", "input": {}},
        {"id": "lookup", "tool_call": {"name": "search", "args": {"query": "q"}}},
        {"id": "p", "format": {"template": "Facts: {lookup}\nAnswer:"}},
        {"id": "a", "llm": {"prompt": "p", "config": {"max_tokens": 3}}},
        {"id": "facts", "output": {"input": "lookup"}},
        {"id": "answer", "output": {"input": "a"}},
    ]}, workflow_pb2.Workflow())


def _request(**options) -> service_pb2.RunRequest:
    return service_pb2.RunRequest(workflow=_tool_workflow(), rows=rows_to_proto(ROWS),
                                  options=service_pb2.RunOptions(**options))


class SessionClient:
    """One Session stream; ``send`` queues a message, ``close`` half-closes the client side."""

    def __init__(self, address: str, request: service_pb2.RunRequest, timeout: float = 60):
        self._outbox: queue.Queue = queue.Queue()
        self._outbox.put(service_pb2.SessionMessage(run=request))
        self._channel = grpc.insecure_channel(address)
        stub = service_pb2_grpc.HeliumServiceStub(self._channel)
        self.events = stub.Session(iter(self._outbox.get, _CLOSE), timeout=timeout)

    def send(self, call_id: str, output: str) -> None:
        self._outbox.put(service_pb2.SessionMessage(
            tool_result=service_pb2.ToolResult(call_id=call_id, output=output)))

    def close(self) -> None:
        self._outbox.put(_CLOSE)

    def tool_calls(self, n: int) -> list[service_pb2.ToolCall]:
        calls = []
        for event in self.events:
            if event.WhichOneof("event") == "tool_call":
                calls.append(event.tool_call)
                if len(calls) == n:
                    return calls
        raise AssertionError(f"the stream ended after {len(calls)} tool calls")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        self._channel.close()


def _errors_and_outputs(events):
    errors = {e.error.row: e.error for e in events if e.WhichOneof("event") == "error"}
    outputs = {e.row_output.row: dict(e.row_output.outputs) for e in events
               if e.WhichOneof("event") == "row_output"}
    return errors, outputs


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    with serve(tiny_model_dir, tmp_path_factory.mktemp("tools"), "--kv-cache-mb", "8",
               "--tool-call-timeout", "60") as served:
        yield served


def test_unanswered_tool_call_fails_its_row_with_deadline_exceeded(server):
    with SessionClient(server.address, _request(tool_call_timeout_ms=300)) as client:
        started = time.monotonic()
        events = list(client.events)  # the client never answers, and never half-closes
    errors, outputs = _errors_and_outputs(events)
    assert not outputs and sorted(errors) == [0, 1]
    for error in errors.values():
        assert error.code == service_pb2.ERROR_CODE_DEADLINE_EXCEEDED and error.op_id == "lookup"
        assert "operator 'lookup'" in error.message and "within 0.3 s" in error.message
    assert events[-1].WhichOneof("event") == "run_stats"
    assert time.monotonic() - started < 30  # well before the server's default of 60 s


def test_a_result_for_an_unknown_call_id_is_invalid_argument(server):
    with SessionClient(server.address, _request()) as client:
        client.tool_calls(1)
        client.send("no-such-call", "Ohio is in the USA.")
        with pytest.raises(grpc.RpcError) as info:
            list(client.events)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tool_result.call_id" in info.value.details()
    assert "'no-such-call'" in info.value.details()


def test_half_close_with_a_call_pending_fails_that_row_at_once(server):
    with SessionClient(server.address, _request()) as client:
        calls = {c.row: c for c in client.tool_calls(2)}
        started = time.monotonic()
        client.send(calls[0].call_id, "Ohio is in the USA.")
        client.close()
        events = list(client.events)
    errors, outputs = _errors_and_outputs(events)
    assert outputs[0]["facts"] == "Ohio is in the USA." and list(errors) == [1]
    assert errors[1].op_id == "lookup" and errors[1].code == service_pb2.ERROR_CODE_UNAVAILABLE
    assert (f"the client closed its side of the Session with tool call "
            f"{calls[1].call_id!r} pending") in errors[1].message
    assert time.monotonic() - started < 30  # not the tool-call timeout (60 s)


def test_tool_calls_after_the_client_half_closed_fail_at_once(server):
    with SessionClient(server.address, _request()) as client:
        client.close()  # the RunRequest is all this client ever sends
        events = list(client.events)
    errors, outputs = _errors_and_outputs(events)
    assert not outputs and sorted(errors) == [0, 1]
    # Whether a row's call was made before or after the half-close reached the server is a race;
    # either way the row fails at once saying the client closed its side.
    assert all("the client closed its side of the Session" in e.message and e.op_id == "lookup"
               for e in errors.values())


def test_late_answers_and_call_ids_of_other_runs_are_told_apart(server):
    # A result for a call that timed out is dropped; the id of another run's call is unknown.
    with SessionClient(server.address, _request(tool_call_timeout_ms=200)) as first:
        late = first.tool_calls(2)
        time.sleep(1.0)  # well past the 200 ms timeout, also on a loaded machine
        for call in late:
            first.send(call.call_id, "too late")
        errors, _ = _errors_and_outputs(list(first.events))
    assert sorted(errors) == [0, 1]
    with SessionClient(server.address, _request()) as second:
        own = second.tool_calls(2)
        assert not {c.call_id for c in own} & {c.call_id for c in late}
        second.send(late[0].call_id, "wrong run")
        with pytest.raises(grpc.RpcError) as info:
            list(second.events)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    log = server.log()
    assert "Traceback" not in log and "never retrieved" not in log, log[-3000:]


def test_the_server_default_caps_a_request_timeout(long_tiny_model_dir):
    async def main():
        engine = make_engine(long_tiny_model_dir, num_blocks=64)
        core = HeliumCore([engine], limits=ServerLimits(tool_call_timeout_s=0.2))

        async def never(call):
            await asyncio.Event().wait()

        try:
            return [e async for e in core.run(_request(tool_call_timeout_ms=600_000), never)]
        finally:
            await core.close()

    errors, _ = _errors_and_outputs(asyncio.run(main()))
    assert sorted(errors) == [0, 1] and all("within 0.2 s" in e.message for e in errors.values())
