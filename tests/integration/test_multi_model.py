"""Several models in one real `helium-trt serve` process, routed by name (issue 11 item 4).

Two tiny models that differ in weights and chat template: `router` (ChatML) and `answer`
(a plain "role: content" template, other weights), 2 embedded workers each. The routing example
runs on both; each call's output and prompt size equal its model run alone in-process (so it
went to a worker of its own model, rendered with that model's template and tokenized with its
tokenizer), and the per-model metrics count each model's calls. An unknown model is NOT_FOUND
naming the operator and field, before any work.
"""

from __future__ import annotations

import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from helium_trt.api.convert import load_request_file, rows_from_proto, rows_to_proto
from helium_trt.api.events import run_request_inputs
from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc
from helium_trt.engine.embedded.tiny_model import TinyModelConfig, build_tiny_model

from runtime_helpers import collect, make_engine
from serve_helpers import serve

parser = pytest.importorskip("prometheus_client.parser")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "routing" / "routing.yaml"
PLAIN_TEMPLATE = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}"
                  "{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}")
MAX_TOKENS = 6


def _answer_model(path: Path) -> Path:
    """A tiny model with other weights and its own (non-ChatML) chat template."""
    out = build_tiny_model(path, TinyModelConfig(seed=1, max_position_embeddings=2048))
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["chat_template"] = PLAIN_TEMPLATE
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


def _example() -> service_pb2.RunRequest:
    request = load_request_file(EXAMPLE)
    for op in request.workflow.ops:  # keep the test fast
        if op.WhichOneof("kind") == "llm":
            op.llm.config.max_tokens = min(op.llm.config.max_tokens, MAX_TOKENS)
    return request


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    router = root / "router"
    router.symlink_to(tiny_model_dir)  # a bare --model DIR is named after the link
    return router, _answer_model(root / "answer")


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    router, answer = models
    with serve(router, tmp_path_factory.mktemp("multi"), "--model", f"answer={answer}",
               "--workers", "2", "--kv-cache-blocks", "128", "--metrics-port", "0") as served:
        found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", served.log())
        assert found, served.log()
        with grpc.insecure_channel(served.address) as channel:
            yield served, service_pb2_grpc.HeliumServiceStub(channel), found.group(1)


def _run(stub, request) -> tuple[dict[int, dict[str, str]], dict[tuple[str, int], int]]:
    """(row outputs, prompt tokens of each (operator, row)) of one served run."""
    outputs, prompts = {}, {}
    for event in stub.Run(request, timeout=120):
        kind = event.WhichOneof("event")
        assert kind != "error", event.error
        if kind == "row_output":
            outputs[event.row_output.row] = dict(event.row_output.outputs)
        elif kind == "op_finished":
            prompts[(event.op_finished.op_id, event.op_finished.row)] = \
                event.op_finished.prompt_tokens
    return outputs, prompts


def _alone(model_dir: Path, request: service_pb2.RunRequest, llm_id: str, rows: list[dict]):
    """(outputs, prompt tokens by row) of ``llm_id`` alone, its model field cleared, run
    in-process on a fresh engine of ``model_dir`` (the only model there)."""
    keep = {"question", f"{llm_id.split('_')[0]}_p", llm_id}
    alone = service_pb2.RunRequest(rows=rows_to_proto(rows))
    alone.workflow.name = llm_id
    for op in request.workflow.ops:
        if op.id in keep:
            alone.workflow.ops.append(op)
            if op.id == llm_id:
                alone.workflow.ops[-1].llm.model = ""
    out = alone.workflow.ops.add(id="out")
    out.output.input = llm_id
    plan, rows, options = run_request_inputs(alone)

    async def go():
        engine = make_engine(model_dir)
        try:
            return await collect(plan, [engine], rows=rows, options=options)
        finally:
            await engine.close()

    import asyncio

    result = asyncio.run(go())
    assert not result.errors, result.errors
    return ([result.outputs[i]["out"] for i in range(len(rows))],
            {f.row: f.prompt_tokens for f in result.finished if f.op_id == llm_id})


def _scrape(url: str) -> dict[tuple, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parser.text_string_to_metric_families(text) for s in family.samples}


def _ttft_count(samples: dict, model: str) -> float:
    return samples.get(("helium_time_to_first_token_seconds_count", (("model", model),)), 0.0)


@pytest.fixture(scope="module")
def expected(models):
    """Each row's route (router alone) and answer (the answer model alone, on the branch the
    route picks), with each call's prompt tokens."""
    router, answer = models
    request = _example()
    rows = rows_from_proto(request.rows)
    routes, route_prompts = _alone(router, request, "route", rows)
    maths, math_prompts = _alone(answer, request, "math_answer", rows)
    generals, general_prompts = _alone(answer, request, "general_answer", rows)
    outputs, prompts = {}, {}
    for i, route in enumerate(routes):
        is_math = re.search(r"(?i)math", route) is not None
        outputs[i] = {"route": route, "answer": maths[i] if is_math else generals[i]}
        prompts[("route", i)] = route_prompts[i]
        prompts[("math_answer" if is_math else "general_answer", i)] = \
            (math_prompts if is_math else general_prompts)[i]
    return outputs, prompts


def test_each_call_runs_on_its_own_model(server, expected):
    served, stub, url = server
    before = _scrape(url)
    outputs, prompts = _run(stub, _example())
    after = _scrape(url)
    want_outputs, want_prompts = expected
    assert outputs == want_outputs
    # The same prompt sizes as each model alone: its own chat template and tokenizer.
    assert {k: v for k, v in prompts.items() if k in want_prompts} == want_prompts
    num_rows = len(want_outputs)
    # Every call reached a worker of its model: one first token per row on each model.
    assert _ttft_count(after, "router") - _ttft_count(before, "router") == num_rows
    assert _ttft_count(after, "answer") - _ttft_count(before, "answer") == num_rows
    log = served.log()
    assert "models router, answer (default router)" in log and "4 worker(s)" in log


def test_the_default_model_answers_operators_without_one(server, models):
    _, stub, _ = server
    request = _example()
    for op in request.workflow.ops:
        if op.id == "route":
            op.llm.model = ""  # the first --model
    outputs, _ = _run(stub, request)
    served_named, _ = _run(stub, _example())
    assert {i: o["route"] for i, o in outputs.items()} == \
        {i: o["route"] for i, o in served_named.items()}


@pytest.mark.parametrize("name", ["llama-3-70b", "../../etc/passwd"])
def test_an_unknown_model_is_not_found_before_any_work(server, name):
    _, stub, url = server
    request = _example()
    for op in request.workflow.ops:
        if op.id == "math_answer":
            op.llm.model = name
    before = _scrape(url)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Run(request, timeout=60))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert f"operator 'math_answer', field 'model': no model {name!r}" in info.value.details()
    after = _scrape(url)
    assert _ttft_count(after, "router") == _ttft_count(before, "router")  # nothing ran
    for rpc in (lambda: stub.Explain(service_pb2.ExplainRequest(request=request), timeout=60),
                lambda: stub.Warm(service_pb2.WarmRequest(workflow=request.workflow),
                                  timeout=60)):
        with pytest.raises(grpc.RpcError) as info:
            rpc()
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "operator 'math_answer', field 'model'" in info.value.details()


def test_several_clients_at_once(server, expected):
    served, _, _ = server
    want_outputs, _ = expected

    def client(i: int) -> dict:
        request = _example()
        if i % 2:  # half the clients skip the result cache, so their calls reach the engines
            request.options.optimizations.disable_prompt_cache = True
        with grpc.insecure_channel(served.address) as channel:
            return _run(service_pb2_grpc.HeliumServiceStub(channel), request)[0]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(client, range(4)))
    assert all(r == want_outputs for r in results)


def test_warm_prefills_each_prefix_on_its_own_models_workers(server):
    _, stub, _ = server
    response = stub.Warm(service_pb2.WarmRequest(workflow=_example().workflow), timeout=60)
    # route_p's system part on router, math_p's and general_p's on answer.
    assert response.num_prefixes == 3


def test_run_command_serves_two_models_in_process(models, tmp_path, capsys):
    from helium_trt.server.cli import main

    router, answer = models
    stats = tmp_path / "stats.json"
    code = main(["run", str(EXAMPLE), "--model", f"answer={answer}", "--model",
                 f"router={router}", "--quiet", "--threads", "1", "--dtype", "float32",
                 "--stats-json", str(stats)])
    assert code == 0
    assert json.loads(stats.read_text())["num_llm_calls"] == 8  # a route and an answer a row
    err = capsys.readouterr().err
    assert "model 'answer'" in err and "model 'router'" in err


def test_one_prompt_on_both_models_is_two_calls_and_two_cache_entries(server, expected):
    """The same prompt on each model: not merged, not shared in flight, and each answered from
    the result cache with its own model's output on the next run."""
    _, stub, _ = server
    request = _example()
    ops = {op.id: op for op in request.workflow.ops}
    twin = request.workflow.ops.add(id="route_twin")
    twin.llm.CopyFrom(ops["route"].llm)
    twin.llm.model = "answer"
    out = request.workflow.ops.add(id="twin_out")
    out.output.input, out.output.name = "route_twin", "twin"
    runs = []
    for _ in range(2):
        events = list(stub.Run(request, timeout=120))
        assert not [e for e in events if e.HasField("error")]
        runs.append(events)
    first, second = ({e.row_output.row: dict(e.row_output.outputs) for e in events
                      if e.HasField("row_output")} for events in runs)
    assert first == second
    want_outputs, _ = expected
    assert {i: o["route"] for i, o in first.items()} == \
        {i: o["route"] for i, o in want_outputs.items()}
    assert any(o["twin"] != o["route"] for o in first.values())  # the other model's output
    cached = [e.op_finished.from_result_cache for e in runs[1] if e.HasField("op_finished")
              and e.op_finished.op_id in ("route", "route_twin")]
    assert cached and all(cached)
    # Planning finds them too, each model's prompt rendered with its own template: route,
    # route_twin and the answer operator(s) that ran become cache fetches.
    explained = stub.Explain(service_pb2.ExplainRequest(request=request), timeout=60)
    (fetch,) = [r for r in explained.rules if r.rule == "fetch_cached_results"]
    assert {"route", "route_twin"} <= set(fetch.changed) and len(fetch.changed) >= 3
