"""bench-engine's step figures, the random-weight model builder and the engine's device check."""

from __future__ import annotations

import asyncio
import os

import pytest
import torch

from helium_trt.engine.embedded.bench_steps import (
    StepBenchConfig, cold_prompt, process_cpu_seconds, session_cpu_seconds, step_figures,
)
from helium_trt.engine.config import EngineConfig
from helium_trt.engine.embedded.engine import EmbeddedEngine
from helium_trt.engine.embedded.random_model import SHAPES, build_random_model
from helium_trt.errors import InvalidRequestError


def test_step_figures_on_the_embedded_engine(embedded_engine):
    config = StepBenchConfig(prefill_lengths=(40, 90), decode_seqs=3, decode_prompt_tokens=8,
                             decode_steps=16, repeats=2)
    lines: list[str] = []
    figures = asyncio.run(step_figures(embedded_engine, embedded_engine.tokenizer, config,
                                       process_cpu_seconds, "t", lines.append))
    assert set(figures["prefill_tokens_per_s"]) == set(figures["prefill_cpu_tokens_per_s"]) == {"40", "90"}
    assert all(v > 0 for v in figures["prefill_tokens_per_s"].values())
    assert figures["decode_step_ms"]["3"] > 0 and figures["decode_tokens_per_s"]["3"] > 0
    assert len(lines) == 3
    # every prompt was cold: no whole block in common with the earlier measurements
    assert embedded_engine.num_resident_tokens(cold_prompt(embedded_engine.tokenizer, 90, "other")) < 16


def test_session_cpu_seconds_counts_this_session():
    before = session_cpu_seconds(os.getsid(0))
    start = process_cpu_seconds()
    while process_cpu_seconds() - start < 0.05:  # a few clock ticks of this process's CPU
        sum(i * i for i in range(10_000))
    assert session_cpu_seconds(os.getsid(0)) > before


def test_random_model_of_a_given_shape_serves_requests(tmp_path, tiny_model_dir):
    from engine_helpers import request, run_all

    path = build_random_model(tmp_path / "m", SHAPES["tiny"], tiny_model_dir)
    engine = EmbeddedEngine(EngineConfig(model_dir=str(path), num_blocks=32, dtype="bfloat16"))
    try:
        c = engine.model.config
        assert (c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim) == (64, 2, 4, 2, 16)
        [result] = run_all(engine, [request("r", engine.tokenizer.encode("Name three colors."),
                                            max_tokens=5, ignore_eos=True)])
        assert len(result.output_token_ids) == 5
    finally:
        asyncio.run(engine.close())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no GPU")
def test_an_engine_on_a_missing_device_fails_at_start(tiny_model_dir):
    with pytest.raises(InvalidRequestError, match="no such CUDA device"):
        EmbeddedEngine(EngineConfig(model_dir=str(tiny_model_dir), num_blocks=8, device="cuda"))
    with pytest.raises(InvalidRequestError, match="not a torch device"):
        EmbeddedEngine(EngineConfig(model_dir=str(tiny_model_dir), num_blocks=8, device="gpu0"))


def test_run_takes_a_device_and_refuses_one_it_does_not_have(tiny_model_dir, tmp_path):
    import json
    import subprocess
    import sys

    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps({"workflow": {"name": "one", "ops": [
        {"id": "q", "input": {}}, {"id": "a", "llm": {"prompt": "q", "config": {"max_tokens": 2}}},
        {"id": "out", "output": {"input": "a"}}]}, "rows": [{"q": "Name a color."}]}))

    def run(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "helium_trt", "run", str(workflow), "--model",
                               str(tiny_model_dir), "--threads", "1", *flags],
                              capture_output=True, text=True, timeout=120)

    done = run("--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "on cpu" in done.stderr
    if not torch.cuda.is_available():
        refused = run("--device", "cuda")
        assert refused.returncode != 0 and "no such CUDA device" in refused.stderr
