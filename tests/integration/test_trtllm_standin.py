"""StandInServer without Triton: a fake response sink records what the model would send."""

from __future__ import annotations

import asyncio
import itertools
import threading

import numpy as np
import pytest

from helium_trt.engine.base import EngineRequest, SamplingConfig
from helium_trt.engine.triton.trtllm_contract import request_to_tensors, response_to_update
from helium_trt.engine.triton.trtllm_metrics import TrtllmGauges
from helium_trt.engine.triton.trtllm_standin import StandInConfig, StandInServer
from helium_trt.errors import InvalidRequestError, RequestCancelledError


class FakeSink:
    def __init__(self, cancel_after: int | None = None):
        self.responses: list[tuple[dict | None, bool]] = []
        self.errors: list[Exception] = []
        self._cancel_after = cancel_after

    def send(self, tensors, final):
        self.responses.append((dict(tensors) if tensors else None, final))

    def send_error(self, error):
        self.errors.append(error)

    def is_cancelled(self):
        return self._cancel_after is not None and len(self.responses) >= self._cancel_after


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    server = StandInServer(StandInConfig(model_dir=str(tiny_model_dir), num_blocks=64))
    yield server
    server.close()


def serve(server, tensors, request_id, sink=None):
    sink = sink or FakeSink()
    asyncio.run(server.serve(tensors, request_id, sink))
    return sink


def tensors_for(prompt, streaming=True, **sampling):
    request = EngineRequest("x", tuple(prompt), SamplingConfig(**sampling))
    return request_to_tensors(request, end_id=None, pad_id=0, streaming=streaming)


def test_streaming_sends_one_token_per_response_and_the_last_with_the_final_flag(server):
    sink = serve(server, tensors_for(range(20, 40), max_tokens=5, ignore_eos=True), "s1")
    assert [final for _, final in sink.responses] == [False] * 4 + [True]
    assert [len(response_to_update(t).token_ids) for t, _ in sink.responses] == [1] * 5
    final = sink.responses[-1][0]
    assert final["kv_cache_alloc_total_blocks"].tolist() == [[2]]  # ceil(25 / 16)


def test_non_streaming_sends_everything_once_with_the_prompt_when_asked(server):
    tensors = tensors_for(range(20, 30), streaming=False, max_tokens=4, ignore_eos=True)
    tensors["exclude_input_in_output"] = np.asarray([[False]])
    sink = serve(server, tensors, "s2")
    [(final, is_final)] = sink.responses
    tokens = response_to_update(final).token_ids
    assert is_final and tokens[:10] == tuple(range(20, 30)) and len(tokens) == 14


def test_end_id_ends_the_request_and_is_not_output(server):
    free = serve(server, tensors_for(range(50, 60), max_tokens=8, ignore_eos=True), "s3")
    tokens = [t for r, _ in free.responses for t in response_to_update(r).token_ids]
    tensors = tensors_for(range(50, 60), max_tokens=8, ignore_eos=True)
    tensors["end_id"] = np.asarray([[tokens[3]]], dtype=np.int32)
    ended = serve(server, tensors, "s4")
    got = [t for r, _ in ended.responses for t in response_to_update(r).token_ids]
    assert got == tokens[:3]


def test_errors_and_cancellation_reach_the_sink(server):
    bad = serve(server, tensors_for([5, 5000], max_tokens=2), "s5")
    assert isinstance(bad.errors[0], InvalidRequestError) and not bad.responses
    cancelled = serve(server, tensors_for(range(20, 40), max_tokens=500, ignore_eos=True), "s6",
                      FakeSink(cancel_after=2))
    assert isinstance(cancelled.errors[-1], RequestCancelledError)
    assert 2 <= len(cancelled.responses) < 499


class FakeFamilies:
    """pb_utils.MetricFamily's shape; ``values`` maps (family, label value) to the last value set."""

    def __init__(self):
        self.values: dict[tuple[str, str], float] = {}
        self.labels: list[dict] = []
        self.num_sets = 0

    def __call__(self, name, description):
        families = self

        class Family:
            def Metric(self, labels):
                families.labels.append(labels)
                category = labels.get("kv_cache_block_type") or labels["request_type"]

                class Gauge:
                    def set(self, value):
                        families.values[(name, category)] = value
                        families.num_sets += 1

                return Gauge()

        return Family()

    def kv(self, label_value):
        return self.values[("nv_trt_llm_kv_cache_block_metrics", label_value)]


def test_kv_cache_block_and_request_gauges_follow_each_step(server):
    families = FakeFamilies()
    metered = StandInServer(server.config, engine=server.engine, gauges=TrtllmGauges(families, "tensorrt_llm", "1"))
    assert families.kv("max") == 64 and families.kv("tokens_per") == 16
    assert families.kv("used") == 0 and families.kv("free") == 64 and families.kv("reused") == 0
    assert all(labels["model"] == "tensorrt_llm" and labels["version"] == "1" for labels in families.labels)

    class SnapshotSink(FakeSink):
        def __init__(self):
            super().__init__()
            self.sent = threading.Event()

        def send(self, tensors, final):
            super().send(tensors, final)
            self.snapshots = getattr(self, "snapshots", []) + [dict(families.values)]
            self.sent.set()

    # NOTE: the gauges read the engine as it is when a token reaches the stand-in; the engine's
    # steps after the second wait for the first response, so the request is still live then
    # (unheld, a loaded machine once let the tiny model finish all 6 tokens first).
    sink = SnapshotSink()
    runner = server.engine._core.runner
    run, num_steps = runner.run, itertools.count(1)

    def held_run(sched):
        if next(num_steps) >= 3:
            sink.sent.wait(10)
        return run(sched)

    prompt = range(100, 140)  # 40 tokens: 2 full blocks, a third partly filled
    runner.run = held_run
    try:
        during = serve(metered, tensors_for(prompt, max_tokens=6, ignore_eos=True), "m1", sink)
    finally:
        runner.run = run
    first = during.snapshots[0]
    used = first[("nv_trt_llm_kv_cache_block_metrics", "used")]
    assert used == 3 and first[("nv_trt_llm_kv_cache_block_metrics", "free")] == 61
    assert first[("nv_trt_llm_kv_cache_block_metrics", "fraction")] == 3 / 64
    assert first[("nv_trt_llm_request_metrics", "active")] == 1
    assert first[("nv_trt_llm_request_metrics", "max")] == server.engine.config.max_num_seqs
    # finished: its blocks stay cached but count as free, as in TensorRT-LLM
    assert families.kv("used") == 0 and families.kv("free") == 64 and families.kv("fraction") == 0
    assert families.values[("nv_trt_llm_request_metrics", "active")] == 0
    serve(metered, tensors_for(prompt, max_tokens=2, ignore_eos=True), "m2")
    assert families.kv("reused") == 2  # the two full prompt blocks
    num_sets = families.num_sets
    metered._publish_metrics()
    assert families.num_sets == num_sets  # nothing changed, nothing set
