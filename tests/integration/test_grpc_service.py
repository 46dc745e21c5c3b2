"""helium.v1.HeliumService end to end: a real `helium-trt serve` process on 127.0.0.1 (tiny model),
called with the generated stubs, a client generated from the .proto files alone, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from helium_trt.api.convert import load_request_file, rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc, workflow_pb2

from runtime_helpers import outputs_in_process

ROOT = Path(__file__).resolve().parents[2]


def _workflow(max_tokens=6, **extra_ops) -> workflow_pb2.Workflow:
    """Two experts share a long static system prompt; a judge reads both."""
    system = "You are a careful expert reviewer of quarterly reports. " * 6
    ops = [
        {"id": "q", "input": {}},
        {"id": "p1", "format": {"messages": [
            {"role": "ROLE_SYSTEM", "template": system + "Focus on revenue."},
            {"role": "ROLE_USER", "template": "{q}"}]}},
        {"id": "p2", "format": {"messages": [
            {"role": "ROLE_SYSTEM", "template": system + "Focus on risks."},
            {"role": "ROLE_USER", "template": "{q}"}]}},
        {"id": "e1", "llm": {"prompt": "p1", "config": {"max_tokens": max_tokens}}},
        {"id": "e2", "llm": {"prompt": "p2", "config": {"max_tokens": max_tokens}}},
        {"id": "jp", "format": {"template": "Combine: {e1} | {e2}"}},
        {"id": "judge", "llm": {"prompt": "jp", "config": {"max_tokens": max_tokens}}},
        {"id": "answer", "output": {"input": "judge"}},
    ]
    return json_format.ParseDict({"name": "panel", "ops": ops}, workflow_pb2.Workflow())


ROWS = [{"q": "Revenue rose 12% while costs fell."}, {"q": "A new plant opened in Ohio."}]
MAX_PROMPT_TOKENS = 600


@pytest.fixture(scope="module")
def server(long_tiny_model_dir, tmp_path_factory):
    """`helium-trt serve` on the tiny model, on a free 127.0.0.1 port, stopped afterwards."""
    port_file = tmp_path_factory.mktemp("serve") / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "helium_trt.server.cli", "serve", "--address", "127.0.0.1:0",
         "--model", str(long_tiny_model_dir), "--kv-cache-mb", "64", "--max-rows", "8",
         "--max-prompt-tokens", str(MAX_PROMPT_TOKENS), "--dtype", "float32",
         "--port-file", str(port_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"helium-trt serve did not start: {proc.stdout.read()}")
        time.sleep(0.1)
    address = f"127.0.0.1:{port_file.read_text().strip()}"
    yield address
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(server) as channel:
        yield service_pb2_grpc.HeliumServiceStub(channel)


def _request(workflow=None, rows=ROWS, **options) -> service_pb2.RunRequest:
    return service_pb2.RunRequest(workflow=workflow or _workflow(), rows=rows_to_proto(rows),
                                  options=service_pb2.RunOptions(**options))


def _outputs(events) -> dict[int, dict[str, str]]:
    return {e.row_output.row: dict(e.row_output.outputs) for e in events
            if e.WhichOneof("event") == "row_output"}


def test_run_streams_the_same_outputs_as_the_in_process_runtime(stub, long_tiny_model_dir):
    request = _request()
    events = list(stub.Run(request))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "run_stats" and "error" not in kinds
    assert kinds.count("op_started") == kinds.count("op_finished") == 6
    assert _outputs(events) == outputs_in_process(long_tiny_model_dir, request)
    stats = events[-1].run_stats
    assert stats.num_llm_calls == 6 and stats.prefill_tokens_reused > 0
    assert stats.prefill_tokens_minimum <= stats.prefill_tokens_computed


def test_stream_tokens_sends_deltas_that_add_up_to_the_output(stub):
    no_result_cache = service_pb2.Optimizations(disable_prompt_cache=True)
    events = list(stub.Run(_request(rows=ROWS[:1], stream_tokens=True,
                                    optimizations=no_result_cache)))
    deltas = "".join(e.token_delta.text for e in events
                     if e.WhichOneof("event") == "token_delta" and e.token_delta.op_id == "judge")
    finished = [e.op_finished for e in events if e.WhichOneof("event") == "op_finished"
                and e.op_finished.op_id == "judge"]
    assert finished and deltas == finished[0].output


def test_invalid_workflow_is_invalid_argument_naming_the_operator(stub):
    workflow = _workflow()
    workflow.ops[3].llm.prompt = "nowhere"
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Run(_request(workflow)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'e1'" in info.value.details() and "prompt" in info.value.details()


def test_bad_generation_setting_names_the_field(stub):
    workflow = _workflow()
    workflow.ops[4].llm.config.temperature = -1
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Run(_request(workflow)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.temperature" in info.value.details()


def test_too_many_rows_is_resource_exhausted(stub):
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Run(_request(rows=ROWS * 5)))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "10 rows" in info.value.details()


def _text_of_tokens(model_dir, num_tokens: int) -> str:
    """Report-like text of about ``num_tokens`` tokens under the model's tokenizer."""
    from helium_trt.engine.tokenizer import HFTokenizer

    tokenizer = HFTokenizer.from_dir(model_dir)
    sentence = "Revenue rose 12% while costs fell in the third quarter. "
    per_sentence = len(tokenizer.encode(sentence))
    return sentence * max(1, num_tokens // per_sentence)


def test_prompt_past_the_token_limit_is_refused_before_any_work(stub, long_tiny_model_dir):
    rows = [{"q": _text_of_tokens(long_tiny_model_dir, MAX_PROMPT_TOKENS + 50)}]
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Run(_request(rows=rows)))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = info.value.details()
    assert f"limit of {MAX_PROMPT_TOKENS}" in details and ("'e1'" in details or "'e2'" in details)


def test_prompt_grown_past_the_limit_by_llm_outputs_fails_only_that_call(stub, long_tiny_model_dir):
    # The expert's prompt fits; the judge's repeats the row three times after the expert's
    # reply, so only its complete prompt (known once e1 has answered) passes the limit. (e2
    # is read by nobody now, so the optimizer drops it.)
    workflow = _workflow()
    workflow.ops[5].format.template = "Combine: {e1} | {q} | {q} | {q}"
    rows = [{"q": _text_of_tokens(long_tiny_model_dir, MAX_PROMPT_TOKENS // 2 - 20)}]
    events = list(stub.Run(_request(workflow=workflow, rows=rows)))
    errors = [e.error for e in events if e.WhichOneof("event") == "error"]
    finished = {e.op_finished.op_id for e in events if e.WhichOneof("event") == "op_finished"}
    assert [(e.code, e.op_id) for e in errors] == [(service_pb2.ERROR_CODE_RESOURCE_EXHAUSTED, "judge")]
    assert f"limit of {MAX_PROMPT_TOKENS}" in errors[0].message
    assert "e1" in finished and "judge" not in finished


@pytest.mark.parametrize("deadline_ms", [1, 2, 3, 5, 8])
def test_deadline_ends_the_run_with_deadline_exceeded(stub, deadline_ms):
    # Regression: a deadline that fired while gRPC was writing an event (a few ms in) cancelled
    # the writer instead of the run, and the stream never ended; the client timeout turns such
    # a hang into a failure here.
    for _ in range(3):
        events = list(stub.Run(_request(workflow=_workflow(max_tokens=200), deadline_ms=deadline_ms,
                                        optimizations=service_pb2.Optimizations(
                                            disable_prompt_cache=True)), timeout=30))
        errors = [e.error for e in events if e.WhichOneof("event") == "error"]
        assert errors and errors[-1].code == service_pb2.ERROR_CODE_DEADLINE_EXCEEDED


def test_client_cancel_frees_every_kv_block(stub):
    call = stub.Run(_request(workflow=_workflow(max_tokens=400), rows=ROWS * 4,
                             optimizations=service_pb2.Optimizations(disable_prompt_cache=True)))
    for event in call:
        if event.WhichOneof("event") == "op_started":
            break
    call.cancel()
    deadline = time.monotonic() + 30
    while (held := stub.Stats(service_pb2.StatsRequest()).kv_blocks_held) and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    assert held == 0


def test_explain_reports_rules_shared_prefix_and_schedule(stub):
    no_result_cache = service_pb2.Optimizations(disable_prompt_cache=True)
    response = stub.Explain(service_pb2.ExplainRequest(
        request=_request(optimizations=no_result_cache)))
    assert response.planning_ms > 0
    (shared,) = [p for p in response.shared_prefixes if set(p.consumers) == {"e1", "e2"}]
    assert shared.num_tokens > 20 and "careful expert reviewer" in shared.text
    assert "== schedule" in response.text
    assert '"order"' in response.json


def test_warm_prefills_static_prefixes_once(stub):
    workflow = _workflow()
    workflow.name = "warm-me"
    first = stub.Warm(service_pb2.WarmRequest(workflow=workflow, keep=True))
    second = stub.Warm(service_pb2.WarmRequest(workflow=workflow, keep=True))
    assert first.num_prefixes >= 2
    assert second.tokens_computed < first.tokens_computed or first.tokens_already_cached > 0
    assert second.tokens_already_cached > 0
    assert stub.Stats(service_pb2.StatsRequest()).num_registered_workflows >= 1


def test_stats_count_runs_and_tokens(stub):
    before = stub.Stats(service_pb2.StatsRequest())
    list(stub.Run(_request(rows=ROWS[:1])))
    after = stub.Stats(service_pb2.StatsRequest())
    assert after.num_runs == before.num_runs + 1
    assert after.num_llm_calls >= before.num_llm_calls
    assert after.kv_blocks_total > 0


def test_session_forwards_tool_calls_to_the_client(stub):
    workflow = json_format.ParseDict({"ops": [
        {"id": "q", "input": {}},
        {"id": "lookup", "tool_call": {"name": "search", "args": {"query": "q"}}},
        {"id": "p", "format": {"template": "Facts: {lookup}\nAnswer:"}},
        {"id": "a", "llm": {"prompt": "p", "config": {"max_tokens": 4}}},
        {"id": "facts", "output": {"input": "lookup"}},
        {"id": "answer", "output": {"input": "a"}},
    ]}, workflow_pb2.Workflow())
    outbox: list = [service_pb2.SessionMessage(run=_request(workflow, rows=ROWS[:1]))]
    ready = threading.Condition()

    def requests():
        sent = 0
        while True:
            with ready:
                ready.wait_for(lambda: len(outbox) > sent)
                message = outbox[sent]
            sent += 1
            if message is None:
                return
            yield message

    events = []
    for event in stub.Session(requests()):
        events.append(event)
        if event.WhichOneof("event") == "tool_call":
            call = event.tool_call
            assert call.name == "search" and call.args["query"] == ROWS[0]["q"]
            with ready:
                outbox.append(service_pb2.SessionMessage(tool_result=service_pb2.ToolResult(
                    call_id=call.call_id, output="Ohio is in the USA.")))
                ready.notify_all()
    with ready:
        outbox.append(None)
        ready.notify_all()
    assert _outputs(events)[0]["facts"] == "Ohio is in the USA."


def test_health_and_reflection(server):
    with grpc.insecure_channel(server) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service="helium.v1.HeliumService"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        reply = next(refl.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in reply.list_services_response.service}
        assert "helium.v1.HeliumService" in names


CLIENT = textwrap.dedent("""
    import json, sys
    import grpc
    from google.protobuf import json_format
    from helium.v1 import service_pb2, service_pb2_grpc
    request = json_format.Parse(open(sys.argv[2]).read(), service_pb2.RunRequest())
    with grpc.insecure_channel(sys.argv[1]) as channel:
        stub = service_pb2_grpc.HeliumServiceStub(channel)
        outputs = {}
        for event in stub.Run(request):
            if event.WhichOneof("event") == "row_output":
                outputs[event.row_output.row] = dict(event.row_output.outputs)
    assert "helium_trt" not in sys.modules
    print(json.dumps(outputs, sort_keys=True))
""")


def test_a_client_generated_from_the_proto_files_alone(server, tmp_path, long_tiny_model_dir):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}",
                    f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                    "helium/v1/workflow.proto", "helium/v1/service.proto"], check=True)
    request = _request(rows=ROWS[:1])
    (tmp_path / "request.json").write_text(json_format.MessageToJson(request))
    (tmp_path / "client.py").write_text(CLIENT)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-s", "client.py", server, "request.json"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got == {str(k): v for k, v in outputs_in_process(long_tiny_model_dir, request).items()}


def test_cli_run_against_the_server(server, tmp_path):
    request = _request(rows=[{"q": "A row no other test sends, so no result is cached."}])
    path = tmp_path / "wf.json"
    path.write_text(json_format.MessageToJson(request))
    stats = tmp_path / "stats.json"
    done = subprocess.run([sys.executable, "-m", "helium_trt.server.cli", "run", str(path),
                           "--server", server, "--stats-json", str(stats)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "row 0:" in done.stdout and "answer:" in done.stdout
    assert json.loads(stats.read_text())["num_llm_calls"] == 3
    assert load_request_file(path).workflow.name == "panel"
