"""The `helium` Triton model on a real tritonserver: a workflow streamed through it with
tritonclient gives the in-process runtime's outputs, its LLM calls reach the tensorrt_llm-contract
model through BLS with the scheduler's retention priorities, and bad requests fail cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import json_format

from helium_trt.api.convert import rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, workflow_pb2
from helium_trt.engine.base import DEFAULT_RETENTION_PRIORITY
from helium_trt.scheduler import SchedulerConfig

from runtime_helpers import outputs_in_process
from triton_helpers import stream_through_helium as _stream_through_helium

grpcclient = pytest.importorskip("tritonclient.grpc")

SYSTEM = "You are a careful analyst who reviews short business notes for a panel. " * 4


def _request(rows, max_tokens=5) -> service_pb2.RunRequest:
    ops = [{"id": "note", "input": {}}]
    for name, focus in (("a", "growth"), ("b", "risk"), ("c", "costs")):
        ops += [
            {"id": f"{name}_p", "format": {"messages": [
                {"role": "ROLE_SYSTEM", "template": SYSTEM + f"Focus on {focus}."},
                {"role": "ROLE_USER", "template": "{note}"}]}},
            {"id": name, "llm": {"prompt": f"{name}_p", "config": {"max_tokens": max_tokens}}},
        ]
    ops += [{"id": "sum_p", "format": {"template": "Summary of {a}; {b}; {c}:"}},
            {"id": "summary", "llm": {"prompt": "sum_p", "config": {"max_tokens": max_tokens}}},
            {"id": "out", "output": {"input": "summary"}},
            {"id": "growth", "output": {"input": "a"}}]
    workflow = json_format.ParseDict({"name": "panel", "ops": ops}, workflow_pb2.Workflow())
    return service_pb2.RunRequest(workflow=workflow, rows=rows_to_proto(rows))


ROWS = [{"note": "Sales grew in Ohio."}, {"note": "A supplier went bankrupt."}]


def test_workflow_through_helium_matches_the_in_process_runtime(triton_server):
    request = _request(ROWS)
    events = _stream_through_helium(triton_server.grpc_url, request)
    kinds = [e.WhichOneof("event") for e in events]
    assert "error" not in kinds, [e.error for e in events if e.HasField("error")]
    assert kinds[-1] == "run_stats"
    outputs = {e.row_output.row: dict(e.row_output.outputs) for e in events
               if e.HasField("row_output")}
    assert outputs == outputs_in_process(triton_server.model_dir, request, num_blocks=512)
    stats = events[-1].run_stats
    assert stats.num_llm_calls == 8
    assert stats.prefill_tokens_reused > 0  # the experts' shared system prompt, in whole blocks


def test_retention_tensors_reach_the_llm_model_as_the_scheduler_set_them(triton_server):
    if not triton_server.is_standin:
        pytest.skip("only the CPU stand-in records the tensors it receives")
    request = _request([{"note": "Retention check: the plant in Texas closed."}])
    before = len(triton_server.record_path.read_text().splitlines())
    events = _stream_through_helium(triton_server.grpc_url, request)
    assert not any(e.HasField("error") for e in events)
    entries = [json.loads(line) for line in
               triton_server.record_path.read_text().splitlines()[before:]]
    experts = {e["request_id"].split("#")[0]: e["inputs"] for e in entries
               if e["request_id"].split("#")[0] in ("a", "b", "c")}
    assert set(experts) == {"a", "b", "c"}
    config = SchedulerConfig()
    shared_ends, first_priorities = set(), []
    for inputs in experts.values():
        starts, ends, priorities = (np.ravel(inputs[f"retention_token_range_{k}"]["values"]).tolist()
                                    for k in ("starts", "ends", "priorities"))
        assert inputs["retention_token_range_starts"]["dtype"] == "int32"
        assert starts[0] == 0 and len(starts) == len(ends) == len(priorities)
        shared_ends.add(ends[0])
        first_priorities.append(priorities[0])
        assert np.ravel(inputs["retention_decode_priority"]["values"]).tolist() == \
            [config.low_priority]
    (shared_end,) = shared_ends
    assert shared_end >= 32  # the shared system prompt spans whole blocks
    # Every consumer but the last keeps the shared prefix at high priority; the last releases it.
    assert sorted(first_priorities) == [DEFAULT_RETENTION_PRIORITY] + [config.high_priority] * 2


def test_bad_bytes_fail_with_an_error_naming_the_input(triton_server):
    with pytest.raises(Exception) as info:
        _stream_through_helium(triton_server.grpc_url, _Garbage())
    assert "'request'" in str(info.value) and "RunRequest" in str(info.value)


def test_a_workflow_error_names_the_operator(triton_server):
    request = _request(ROWS[:1])
    request.workflow.ops[2].llm.config.top_p = 3.0
    with pytest.raises(Exception) as info:
        _stream_through_helium(triton_server.grpc_url, request)
    assert "'a'" in str(info.value) and "config.top_p" in str(info.value)


class _Garbage:
    def SerializeToString(self) -> bytes:
        return b"\xff\xfe not a protobuf"


class _Raw:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data


def test_undecodable_bytes_name_the_field_as_the_grpc_service_does(triton_server):
    truncated = _request(ROWS).SerializeToString()[:-7]  # inside the second row
    with pytest.raises(Exception) as info:
        _stream_through_helium(triton_server.grpc_url, _Raw(truncated))
    message = str(info.value)
    assert "field 'rows[1]'" in message and "input 'request'" in message, message
    assert "truncated" in message and "InvalidWorkflowError" in message


def test_helium_service_on_triton_workers(triton_server, tmp_path):
    """`helium-trt serve --engine triton --url ...` runs the same workflow with the same outputs."""
    import subprocess
    import sys
    import time

    import grpc

    from helium_trt.api.helium.v1 import service_pb2_grpc

    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "helium_trt.server.cli", "serve", "--address", "127.0.0.1:0",
         "--engine", "triton", "--url", triton_server.grpc_url, "--model",
         str(triton_server.model_dir), "--port-file", str(port_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
        request = _request([{"note": "Served through helium.v1 on Triton workers."}])
        with grpc.insecure_channel(f"127.0.0.1:{port_file.read_text().strip()}") as channel:
            events = list(service_pb2_grpc.HeliumServiceStub(channel).Run(request))
        outputs = {e.row_output.row: dict(e.row_output.outputs) for e in events
                   if e.HasField("row_output")}
        assert outputs == outputs_in_process(triton_server.model_dir, request, num_blocks=512)
        assert events[-1].run_stats.prefill_tokens_reused > 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)
