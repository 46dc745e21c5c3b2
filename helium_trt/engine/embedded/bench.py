"""Engine benchmark: TTFT cold vs warm prefix, decode throughput at 1/8/32 sequences, vs HF;
prefill tokens/s at 1,024 and 2,048 tokens and the cost of a decode step at 8 sequences, vs
vLLM CPU when asked and installed (engine/embedded/bench_steps.py).

Both run on the same weights with the same torch thread count, transformers in a fresh process.
Decode throughput excludes prefill: it counts tokens after each sequence's first, over the time
from the moment every sequence has its first token until the last finishes.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from helium_trt.engine.base import EngineRequest, SamplingConfig, TokenDelta
from helium_trt.engine.embedded.bench_steps import (
    StepBenchConfig, process_cpu_seconds, session_cpu_seconds, step_figures,
)
from helium_trt.engine.config import EngineConfig
from helium_trt.engine.embedded.engine import EmbeddedEngine
from helium_trt.engine.tokenizer import HFTokenizer

_FILLER = ("In a quiet village by the sea, the fishermen mended their nets at dawn while the "
           "children counted gulls and the baker sold warm bread to travellers. ")


@dataclass(frozen=True, slots=True)
class BenchConfig:
    model_dir: Path
    prompt_tokens: int = 1000
    resident_tokens: int = 950
    decode_prompt_tokens: int = 32
    decode_new_tokens: int = 64
    concurrency: tuple[int, ...] = (1, 8, 32)
    run_hf: bool = True
    # Best of ``repeats`` for every figure (the machine may be shared).
    repeats: int = 2
    dtype: str = "bfloat16"
    device: str = "cpu"
    num_threads: int | None = None
    steps: StepBenchConfig | None = StepBenchConfig()
    with_vllm: bool = False


def run_bench(config: BenchConfig, progress: Callable[[str], None] = print) -> dict:
    engine = EmbeddedEngine(EngineConfig(model_dir=str(config.model_dir), dtype=config.dtype,
                                         device=config.device, num_threads=config.num_threads))
    try:
        report = asyncio.run(_bench_engine(engine, config, progress))
        if config.steps is not None:
            report.update(asyncio.run(step_figures(engine, engine.tokenizer, config.steps,
                                                   process_cpu_seconds, "helium", progress)))
    finally:
        asyncio.run(engine.close())
    if config.steps is not None and config.with_vllm:
        report["vllm"] = _bench_vllm(config, engine, progress)
        report.update(_versus_vllm(report))
    if config.run_hf:
        report.update(_bench_hf(engine, config, progress))
        report["decode_speedup_vs_hf"] = {
            n: round(report["decode_tokens_per_s"][n] / report["hf_decode_tokens_per_s"][n], 2)
            for n in report["decode_tokens_per_s"]
        }
    report["warm_speedup_vs_cold"] = round(report["ttft_cold_ms"] / report["ttft_warm_ms"], 2)
    report.update(model=str(config.model_dir), engine_dtype=config.dtype, hf_dtype="float32",
                  torch_threads=torch.get_num_threads(), device=config.device)
    return report


def _bench_vllm(config: BenchConfig, engine: EmbeddedEngine, progress) -> dict:
    """The step figures on vLLM CPU (bf16 export of the same weights, as many OpenMP threads as
    the engine's torch threads), or why there are none."""
    from helium_trt.bench import vllm_server
    from helium_trt.engine.openai import OpenAIHttpEngine

    if not vllm_server.is_available():
        note = f"vLLM not installed (no venv at {vllm_server.venv_path()}; benchmarks/setup_vllm.sh)"
        progress(note)
        return {"skipped": note}
    model_dir = Path(config.model_dir)
    export = vllm_server.export_bf16(model_dir, model_dir.parent / (model_dir.name + "-bf16"))
    threads = torch.get_num_threads()
    vllm = vllm_server.VllmConfig(venv=vllm_server.venv_path(), model_dir=export,
                                  omp_threads_bind="0" if threads == 1 else f"0-{threads - 1}")
    progress(f"vLLM: starting its server on {export} (log {vllm.log_path})")
    with vllm_server.running_server_process(vllm) as (url, process):
        info = replace(engine.info, model_name="bench", block_size=vllm.block_size)
        client = OpenAIHttpEngine(url, "bench", engine.tokenizer, info)
        return asyncio.run(step_figures(client, engine.tokenizer, config.steps,
                                        lambda: session_cpu_seconds(process.pid), "vllm", progress))


def _versus_vllm(report: dict) -> dict:
    """helium / vLLM for each step figure (above 1: helium faster)."""
    vllm = report["vllm"]
    if "skipped" in vllm:
        return {}
    ratios = {}
    for key in ("prefill_tokens_per_s", "prefill_cpu_tokens_per_s", "decode_tokens_per_s"):
        ratios[key] = {k: round(report[key][k] / vllm[key][k], 2) for k in report[key]}
    for key in ("decode_step_ms", "decode_step_cpu_ms"):
        ratios[key] = {k: round(vllm[key][k] / report[key][k], 2) for k in report[key]}
    return {"helium_vs_vllm": ratios}


def _prompt(tokenizer, num_tokens: int, salt: str) -> list[int]:
    ids = tokenizer.encode(f"[{salt}] " + _FILLER * (num_tokens // 20 + 5))
    return ids[:num_tokens]


async def _ttft(engine: EmbeddedEngine, request_id: str, prompt: list[int]) -> tuple[float, int]:
    start = time.perf_counter()
    first = None
    request = EngineRequest(request_id, tuple(prompt), SamplingConfig(max_tokens=1, ignore_eos=True))
    async for item in engine.generate(request):
        if first is None and isinstance(item, TokenDelta):
            first = time.perf_counter() - start
        result = item
    return first * 1000.0, result.num_cached_tokens


async def _bench_engine(engine: EmbeddedEngine, config: BenchConfig, progress) -> dict:
    await _ttft(engine, "warmup", _prompt(engine.tokenizer, 64, "warmup"))
    cold, warm = [], []
    for rep in range(config.repeats):
        cold_ms, _ = await _ttft(engine, f"cold{rep}", _prompt(engine.tokenizer, config.prompt_tokens, f"cold{rep}"))
        cold.append(cold_ms)
        prompt = _prompt(engine.tokenizer, config.prompt_tokens, f"warm{rep}")
        await engine.warm(prompt[:config.resident_tokens])
        warm_ms, cached = await _ttft(engine, f"warm{rep}", prompt)
        warm.append(warm_ms)
    progress(f"engine TTFT cold ({config.prompt_tokens} tokens): {min(cold):.1f} ms")
    progress(f"engine TTFT warm ({cached} tokens resident): {min(warm):.1f} ms")
    decode = {}
    for num_seqs in config.concurrency:
        rates = [await _engine_decode(engine, config, num_seqs, rep) for rep in range(config.repeats)]
        decode[str(num_seqs)] = round(max(rates), 1)
        progress(f"engine decode at {num_seqs} sequences: {max(rates):.1f} tokens/s")
    return {"ttft_cold_ms": round(min(cold), 1), "ttft_warm_ms": round(min(warm), 1),
            "warm_cached_tokens": cached, "decode_tokens_per_s": decode}


async def _engine_decode(engine: EmbeddedEngine, config: BenchConfig, num_seqs: int, rep: int) -> float:
    n_new = config.decode_new_tokens
    first_times: list[float] = []

    async def one(index: int) -> None:
        prompt = _prompt(engine.tokenizer, config.decode_prompt_tokens, f"decode-{num_seqs}-{index}-{rep}")
        request = EngineRequest(f"d{num_seqs}-{index}-{rep}", tuple(prompt),
                                SamplingConfig(max_tokens=n_new, ignore_eos=True))
        seen_first = False
        async for item in engine.generate(request):
            if not seen_first and isinstance(item, TokenDelta):
                first_times.append(time.perf_counter())
                seen_first = True

    await asyncio.gather(*(one(i) for i in range(num_seqs)))
    end = time.perf_counter()
    return num_seqs * (n_new - 1) / (end - max(first_times))


def _bench_hf(engine: EmbeddedEngine, config: BenchConfig, progress) -> dict:
    """transformers' generate in its default float32 (the required keys), and in bfloat16.

    Runs in a fresh process: torch's OpenMP pool belongs to the thread that first computes,
    and sharing a process with the engine's thread would slow whichever ran second.

    NOTE: several sequences run as one static batch of equal-length prompts, the best case
    for transformers (no padding, no arrivals mid-flight); a server calling it per request
    would decode one sequence at a time.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        report, lines = pool.submit(_hf_report, config, engine.info.eos_token_ids).result()
    for line in lines:
        progress(line)
    return report


def _hf_report(config: BenchConfig, eos_token_ids: tuple[int, ...]) -> tuple[dict, list[str]]:
    lines: list[str] = []
    tokenizer = HFTokenizer.from_dir(config.model_dir)
    report = _bench_hf_dtype(tokenizer, eos_token_ids, config, lines.append, torch.float32, "hf_")
    report.update(_bench_hf_dtype(tokenizer, eos_token_ids, config, lines.append, torch.bfloat16, "hf_bf16_"))
    return report, lines


def _bench_hf_dtype(tokenizer, eos_token_ids: tuple[int, ...], config: BenchConfig, progress,
                    dtype: torch.dtype, prefix: str) -> dict:
    from transformers import AutoModelForCausalLM, LogitsProcessorList

    model = AutoModelForCausalLM.from_pretrained(str(config.model_dir), dtype=dtype)
    model.eval()
    pad_id = eos_token_ids[0] if eos_token_ids else 0

    def generate(batch: list[list[int]], new_tokens: int) -> list[float]:
        """Seconds from the call to each generation step's logits (one per new token)."""
        ids = torch.tensor(batch)
        start = time.perf_counter()
        stamps: list[float] = []

        def record(input_ids, scores):
            stamps.append(time.perf_counter() - start)
            return scores

        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad_id,
                           logits_processor=LogitsProcessorList([record]))
        return stamps

    generate([_prompt(tokenizer, 64, "warmup")], 2)
    cold_ms = min(generate([_prompt(tokenizer, config.prompt_tokens, f"hf-cold{rep}")], 1)[0] * 1000.0
                  for rep in range(config.repeats))
    progress(f"transformers ({dtype}) TTFT cold: {cold_ms:.1f} ms")
    decode = {}
    for num_seqs in config.concurrency:
        batch = [_prompt(tokenizer, config.decode_prompt_tokens, f"hf-{num_seqs}-{i}") for i in range(num_seqs)]
        rates = []
        for _ in range(config.repeats):
            stamps = generate(batch, config.decode_new_tokens)
            rates.append(num_seqs * (len(stamps) - 1) / (stamps[-1] - stamps[0]))
        decode[str(num_seqs)] = round(max(rates), 1)
        progress(f"transformers ({dtype}) decode at {num_seqs} sequences: {decode[str(num_seqs)]:.1f} tokens/s")
    return {f"{prefix}ttft_cold_ms": round(cold_ms, 1), f"{prefix}decode_tokens_per_s": decode}
