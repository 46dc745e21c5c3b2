"""`serve --metrics-port` and the run log, on a real `helium-trt serve` process on 127.0.0.1
(tiny model, two tenants): /metrics scraped over HTTP moves after runs, and every run writes one
structured log line (refused ones as warnings)."""

from __future__ import annotations

import re
import time
import urllib.request

import grpc
import pytest

from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc

from auth_helpers import TOKEN_A, TOKEN_B, bearer, one_call_request, write_tokens
from serve_helpers import serve

parser = pytest.importorskip("prometheus_client.parser")


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("metrics")
    tokens = write_tokens(workdir / "tokens.yaml", {"a": {"tokens": [TOKEN_A]},
                                                    "b": {"tokens": [TOKEN_B], "max_priority": 0}})
    with serve(tiny_model_dir, workdir, "--kv-cache-blocks", "128", "--auth-tokens", str(tokens),
               "--metrics-port", "0", "--log-level", "info") as served:
        found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", served.log())
        assert found, served.log()
        with grpc.insecure_channel(served.address) as channel:
            yield served, service_pb2_grpc.HeliumServiceStub(channel), found.group(1)


def _scrape(url: str) -> dict[tuple, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in parser.text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _model(samples: dict) -> str:
    return next(dict(labels)["model"] for name, labels in samples if name == "helium_kv_blocks")


def test_counters_move_after_a_run(server):
    served, stub, url = server
    before = _scrape(url)
    request = one_call_request("Answer in a word.", "What moves the metrics?")
    for _ in range(2):  # the second run is answered by the result cache
        list(stub.Run(request, metadata=bearer(TOKEN_A), timeout=60))
    after = _scrape(url)
    model = _model(after)

    def moved(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("helium_runs_total", tenant="a", status="ok") == 2
    assert moved("helium_llm_calls_total", tenant="a", model=model) == 1
    assert moved("helium_prefill_tokens_total", tenant="a", model=model, kind="computed") > 10
    assert moved("helium_run_duration_seconds_count", tenant="a") == 2
    assert moved("helium_time_to_first_token_seconds_count", model=model) == 1
    assert moved("helium_result_cache_hits_total", tenant="a") >= 1
    assert moved("helium_result_cache_misses_total", tenant="a") >= 1
    assert _value(after, "helium_runs_in_flight", tenant="a") == 0
    used = _value(after, "helium_kv_blocks", engine="0", model=model, state="used")
    free = _value(after, "helium_kv_blocks", engine="0", model=model, state="free")
    assert used + free == 128 and free > 0
    assert ("helium_engine_requests", (("engine", "0"), ("model", model), ("state", "waiting"))) \
        in after
    assert _value(after, "helium_runs_total", tenant="b", status="ok") == 0  # per tenant


def test_a_refused_run_is_counted_and_logged_as_a_warning(server):
    served, stub, url = server
    before = _scrape(url)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Run(one_call_request("Be brief.", "Hi", name="urgent", priority=9),
                      metadata=bearer(TOKEN_B), timeout=60))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    after = _scrape(url)
    assert _value(after, "helium_runs_total", tenant="b", status="permission_denied") - \
        _value(before, "helium_runs_total", tenant="b", status="permission_denied") == 1
    line = _wait_for_line(served, "tenant=b workflow=urgent")
    assert " WARNING " in line and "status=permission_denied" in line
    assert 'error="field \'options.priority\': 9 is above' in line


def test_one_structured_line_per_run_and_nothing_per_token(server):
    served, stub, url = server
    request = one_call_request("Answer in a word.", "Which line is logged?", max_tokens=4,
                               name="log check", stream_tokens=True)
    events = list(stub.Run(request, metadata=bearer(TOKEN_A), timeout=60))
    assert sum(e.WhichOneof("event") == "token_delta" for e in events) >= 1
    line = _wait_for_line(served, 'workflow="log check"')
    assert re.search(r' INFO helium_trt\.runs: run tenant=a workflow="log check" model=\S+ '
                     r'status=ok num_rows=1 num_llm_calls=1 prefill_tokens_computed=\d+ '
                     r'prefill_tokens_reused=\d+ num_result_cache_hits=0 num_rows_failed=0 '
                     r'wall_ms=\d+\.\d$', line), line
    assert served.log().count('workflow="log check"') == 1


def test_an_unauthenticated_call_is_a_warning(server):
    served, stub, url = server
    with pytest.raises(grpc.RpcError):
        stub.Stats(service_pb2.StatsRequest(), timeout=10)
    line = _wait_for_line(served, "refused /helium.v1.HeliumService/Stats")
    assert " WARNING " in line and "UNAUTHENTICATED" in line


def _wait_for_line(served, needle: str) -> str:
    deadline = time.monotonic() + 10
    while True:
        lines = [l for l in served.log().splitlines() if needle in l]
        if lines:
            return lines[-1]
        assert time.monotonic() < deadline, f"no log line with {needle!r}: {served.log()}"
        time.sleep(0.1)
