"""The generation and loop fields of helium.v1 on the wire (n, ignore_eos, max_tokens_from,
stop_from, LoopOp.stop_on, {iteration}): converted into the plan as written, and run by a real
served process for several clients at once exactly as in-process."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf import json_format

from helium_trt.api.convert import plan_from_proto, rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc, workflow_pb2
from helium_trt.plan.ops import LlmOp, LoopOp

from runtime_helpers import outputs_in_process
from serve_helpers import serve

ROWS = [{"q": "What is the capital of France?", "len": "5", "end": "zz"},
        {"q": "Name three primary colors.", "len": "3", "end": "zz"}]


def _workflow() -> workflow_pb2.Workflow:
    sampled = {"maxTokens": 8, "temperature": 0.9, "seed": 7, "n": 2, "ignoreEos": True,
               "maxTokensFrom": "len", "stopFrom": "end"}
    step = {"id": "step", "llm": {"prompt": "step_p", "config": {"maxTokens": 3}}}
    return json_format.ParseDict({"name": "wire-fields", "ops": [
        {"id": "q", "input": {}}, {"id": "len", "input": {}}, {"id": "end", "input": {}},
        {"id": "p", "format": {"template": "Question: {q}\nAnswer:"}},
        {"id": "samples", "llm": {"prompt": "p", "config": sampled}},
        {"id": "refine", "loop": {
            "init": "q", "state": "state", "result": "step", "maxIterations": 2,
            "stopRegex": "^$", "stopOn": "step",
            "body": [{"id": "step_p", "format": {"template": "Step {iteration}: {state}"}}, step]}},
        {"id": "out", "output": {"input": "samples"}},
        {"id": "last", "output": {"input": "refine"}},
    ]}, workflow_pb2.Workflow())


def test_the_fields_reach_the_plan_as_written():
    plan = plan_from_proto(_workflow(), ())
    llm = next(op for op in plan.ops if isinstance(op, LlmOp) and op.id == "samples")
    c = llm.config
    assert (c.n, c.ignore_eos, c.max_tokens_from, c.stop_from, c.seed) == (2, True, "len", "end", 7)
    loop = next(op for op in plan.ops if isinstance(op, LoopOp))
    assert loop.stop_on == "step" and loop.stop_regex == "^$"
    # Unset fields keep their defaults: one sample, EOS honoured, no per-row settings.
    default = plan_from_proto(json_format.ParseDict({"ops": [
        {"id": "a", "llm": {"prompt": "a"}}]}, workflow_pb2.Workflow()), ())
    d = default.ops[0].config
    assert (d.n, d.ignore_eos, d.max_tokens_from, d.stop_from) == (1, False, None, None)


def test_a_served_process_runs_them_for_several_clients_as_in_process(long_tiny_model_dir,
                                                                        tmp_path):
    request = service_pb2.RunRequest(workflow=_workflow(), rows=rows_to_proto(ROWS),
                                     options=service_pb2.RunOptions(stream_tokens=False))
    expected = outputs_in_process(long_tiny_model_dir, request)
    with serve(long_tiny_model_dir, tmp_path) as served:
        def run(_):
            with grpc.insecure_channel(served.address) as channel:
                events = list(service_pb2_grpc.HeliumServiceStub(channel).Run(request, timeout=120))
            assert not [e for e in events if e.WhichOneof("event") == "error"]
            finished = [e.op_finished for e in events if e.WhichOneof("event") == "op_finished"
                        and e.op_finished.op_id == "samples"]
            rows = {e.row_output.row: dict(e.row_output.outputs) for e in events
                    if e.WhichOneof("event") == "row_output"}
            return rows, sorted((f.row, f.output_tokens, f.from_result_cache) for f in finished)

        results = list(ThreadPoolExecutor(4).map(run, range(4)))
    for rows, finished in results:
        assert rows == expected
        # ignore_eos with max_tokens from the row: each of the 2 samples decodes exactly that many
        # (or, where another client's run had stored the row's result first, none: a cache hit).
        assert [(row, tokens) for row, tokens, cached in finished if not cached] in (
            [(0, 2 * 5), (1, 2 * 3)], [(0, 2 * 5)], [(1, 2 * 3)], [])
        assert all(tokens == 0 for _, tokens, cached in finished if cached)
    # The server computed each row once at least: not every client found it cached.
    assert {row for _, finished in results for row, _, cached in finished if not cached} == {0, 1}
    for row in (0, 1):
        samples = json.loads(expected[row]["out"])
        assert len(samples) == 2
