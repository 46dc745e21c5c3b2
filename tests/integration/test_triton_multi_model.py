"""`helium-trt serve --engine triton` with two models routed by name (issue 11 item 4): `--url
NAME=HOST:PORT` and `--triton-model NAME=MODEL` against the session's real tritonserver.

Both names reach the same Triton model (the stand-in on the tiny model), but `answer`'s
tokenizer directory has another chat template: each model's calls must be rendered with its own
template, so the outputs equal in-process engines on each directory alone. A --triton-model
that the server does not hold fails serve's start naming it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import grpc
import pytest
from google.protobuf import json_format

from helium_trt.api.convert import rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc, workflow_pb2

from runtime_helpers import workflow
from serve_helpers import serve

pytest.importorskip("tritonclient.grpc")

PLAIN_TEMPLATE = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}"
                  "{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}")
OPS = [{"id": "q", "input": {"column": "q"}},
       {"id": "p", "format": {"messages": [
           {"role": "ROLE_SYSTEM", "template": "You are a helpful assistant. Answer the question "
                                               "briefly and clearly."},
           {"role": "ROLE_USER", "template": "{q}"}]}},
       {"id": "a", "llm": {"prompt": "p", "model": "router", "config": {"max_tokens": 4}}},
       {"id": "b", "llm": {"prompt": "p", "model": "answer", "config": {"max_tokens": 4}}},
       {"id": "out_a", "output": {"input": "a", "name": "a"}},
       {"id": "out_b", "output": {"input": "b", "name": "b"}}]
ROWS = [{"q": "Name three primary colors."}, {"q": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def dirs(triton_server, tmp_path_factory):
    if not triton_server.is_standin:
        pytest.skip("builds a second tokenizer directory for the stand-in's tiny model")
    root = tmp_path_factory.mktemp("triton_models")
    router = root / "router"
    router.symlink_to(triton_server.model_dir)
    answer = root / "answer"  # the same model and tokenizer, another chat template
    shutil.copytree(triton_server.model_dir, answer)
    config = json.loads((answer / "tokenizer_config.json").read_text())
    config["chat_template"] = PLAIN_TEMPLATE
    (answer / "tokenizer_config.json").write_text(json.dumps(config))
    return router, answer


def _alone(model_dir, model: str) -> dict[int, str]:
    """Each row's output of the LLM call on ``model``, run in-process on ``model_dir`` alone."""
    from runtime_helpers import run_on_fresh_engines

    op_id = "a" if model == "router" else "b"
    ops = [dict(op) for op in OPS if op["id"] in ("q", "p", op_id)]
    ops[-1] = {"id": op_id, "llm": {**ops[-1]["llm"], "model": ""}}
    ops.append({"id": "out", "output": {"input": op_id}})
    result = run_on_fresh_engines(model_dir, workflow(ops, ROWS), rows=ROWS)
    assert not result.errors
    return {row: out["out"] for row, out in result.outputs.items()}


def test_each_model_on_its_own_endpoint_and_template(triton_server, dirs, tmp_path):
    router, answer = dirs
    url = triton_server.grpc_url
    with serve(router, tmp_path, "--engine", "triton", "--model", f"answer={answer}",
               "--url", url, "--url", f"answer={url}",
               "--triton-model", "answer=tensorrt_llm") as served:
        assert "2 worker(s), models router, answer (default router)" in served.log()
        request = service_pb2.RunRequest(
            workflow=json_format.ParseDict({"name": "two", "ops": OPS}, workflow_pb2.Workflow()),
            rows=rows_to_proto(ROWS))
        with grpc.insecure_channel(served.address) as channel:
            events = list(service_pb2_grpc.HeliumServiceStub(channel).Run(request, timeout=120))
    assert not [e for e in events if e.HasField("error")]
    outputs = {e.row_output.row: dict(e.row_output.outputs) for e in events
               if e.HasField("row_output")}
    want_a, want_b = _alone(router, "router"), _alone(answer, "answer")
    assert {r: o["a"] for r, o in outputs.items()} == want_a
    assert {r: o["b"] for r, o in outputs.items()} == want_b
    assert want_a != want_b  # the templates made different prompts


def test_a_triton_model_the_server_lacks_fails_the_start(triton_server, dirs, tmp_path):
    router, answer = dirs
    url = triton_server.grpc_url
    proc = subprocess.run(
        [sys.executable, "-m", "helium_trt.server.cli", "serve", "--address", "127.0.0.1:0",
         "--engine", "triton", "--model", str(router), "--model", f"answer={answer}",
         "--url", url, "--url", f"answer={url}", "--triton-model", "answer=no_such_model"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no_such_model" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "helium_trt.server.cli", "serve", "--address", "127.0.0.1:0",
         "--engine", "triton", "--model", str(router), "--model", f"answer={answer}",
         "--url", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "none for 'answer'" in proc.stderr
