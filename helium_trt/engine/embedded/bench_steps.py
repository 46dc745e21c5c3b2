"""Engine step figures for `helium-trt bench-engine`, measured alike on any Engine: the embedded
engine, or vLLM CPU behind its OpenAI server.

From request latencies alone, so a server is measured as the embedded engine is:
- prefill tokens/s at L tokens: a cold (never seen) L-token prompt with max_tokens 1, L divided
  by its latency;
- a decode step at N sequences: N cold prompts sent together with max_tokens 1, then N other
  cold prompts with max_tokens 1 + S; (second latency - first) / S is one step of N sequences
  decoding (both pay the same prefill).
Each also in CPU time: the engine's CPU seconds over the same span (``cpu_seconds``; the whole
process for the embedded engine, every process of the server for vLLM), so a machine shared
with other work inflates wall time more than CPU time. Best of ``repeats``.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Callable

from helium_trt.engine.base import EngineRequest, RequestResult, SamplingConfig

_FILLER = ("In a quiet village by the sea, the fishermen mended their nets at dawn while the "
           "children counted gulls and the baker sold warm bread to travellers. ")


class NoisyMeasurementError(RuntimeError):
    """A figure came out non-positive: the machine's noise was larger than what was measured."""


@dataclass(frozen=True, slots=True)
class StepBenchConfig:
    prefill_lengths: tuple[int, ...] = (1024, 2048)
    decode_seqs: int = 8
    decode_prompt_tokens: int = 32
    decode_steps: int = 64
    repeats: int = 2


def cold_prompt(tokenizer, num_tokens: int, salt: str) -> list[int]:
    """``num_tokens`` tokens led by ``salt``: no two salts share a prefix block."""
    ids = tokenizer.encode(f"[{salt}] " + _FILLER * (num_tokens // 16 + 4))
    if len(ids) < num_tokens:
        raise ValueError(f"filler gave {len(ids)} tokens, {num_tokens} wanted")
    return ids[:num_tokens]


async def step_figures(engine, tokenizer, config: StepBenchConfig, cpu_seconds: Callable[[], float],
                       tag: str, progress: Callable[[str], None] = print) -> dict:
    """{"prefill_tokens_per_s": {L: ...}, "prefill_cpu_tokens_per_s", "decode_step_ms": {N: ...},
    "decode_step_cpu_ms", "decode_tokens_per_s"} for ``engine``; ``tag`` keeps prompts cold
    across engines and runs."""
    await _batch(engine, [cold_prompt(tokenizer, 64, f"{tag}-warmup")], 2)
    prefill, prefill_cpu = {}, {}
    for length in config.prefill_lengths:
        spans = [await _timed(engine, [cold_prompt(tokenizer, length, f"{tag}-p{length}-{rep}")], 1,
                              cpu_seconds) for rep in range(config.repeats)]
        prefill[str(length)] = round(length / min(wall for wall, _ in spans), 1)
        prefill_cpu[str(length)] = round(length / min(cpu for _, cpu in spans), 1)
        progress(f"{tag}: prefill {length} tokens: {prefill[str(length)]} tokens/s "
                 f"({prefill_cpu[str(length)]} per CPU-second)")
    n, steps = config.decode_seqs, config.decode_steps
    shorts, longs = [], []
    for rep in range(config.repeats):
        def prompts(kind: str) -> list[list[int]]:
            return [cold_prompt(tokenizer, config.decode_prompt_tokens, f"{tag}-d{kind}{rep}-{i}")
                    for i in range(n)]
        shorts.append(await _timed(engine, prompts("s"), 1, cpu_seconds))
        longs.append(await _timed(engine, prompts("l"), 1 + steps, cpu_seconds))
    # NOTE: the least disturbed run of each kind, then the difference: noise only adds time, and
    # the smallest paired difference would pick the run whose short half was slowed most.
    step_s = (min(w for w, _ in longs) - min(w for w, _ in shorts)) / steps
    step_cpu_s = (min(c for _, c in longs) - min(c for _, c in shorts)) / steps
    if step_s <= 0 or step_cpu_s <= 0:
        raise NoisyMeasurementError(f"{tag}: {steps} decode steps at {n} sequences measured no longer than "
                           f"none (the machine's noise is larger): raise decode_steps or repeats")
    step_ms, step_cpu_ms = step_s * 1000.0, step_cpu_s * 1000.0
    progress(f"{tag}: decode step at {n} sequences: {step_ms:.1f} ms ({step_cpu_ms:.1f} CPU-ms), "
             f"{n / step_s:.1f} tokens/s")
    return {"prefill_tokens_per_s": prefill, "prefill_cpu_tokens_per_s": prefill_cpu,
            "decode_step_ms": {str(n): round(step_ms, 2)},
            "decode_step_cpu_ms": {str(n): round(step_cpu_ms, 2)},
            "decode_tokens_per_s": {str(n): round(n / step_s, 1)}}


async def _timed(engine, prompts: list[list[int]], max_tokens: int,
                 cpu_seconds: Callable[[], float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for ``prompts`` sent together, each to ``max_tokens``."""
    cpu, wall = cpu_seconds(), time.perf_counter()
    await _batch(engine, prompts, max_tokens)
    return time.perf_counter() - wall, cpu_seconds() - cpu


async def _batch(engine, prompts: list[list[int]], max_tokens: int) -> None:
    async def one(index: int, prompt: list[int]) -> None:
        request = EngineRequest(f"step-{time.monotonic_ns()}-{index}", tuple(prompt),
                                SamplingConfig(max_tokens=max_tokens, ignore_eos=True))
        result = None
        async for item in engine.generate(request):
            if isinstance(item, RequestResult):
                result = item
        if result is None or result.finish_reason != "length":
            raise RuntimeError(f"bench request ended early: {result}")

    await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))


def process_cpu_seconds() -> float:
    return time.process_time()


def session_cpu_seconds(session_id: int) -> float:
    """CPU seconds (user + system) of every live process in session ``session_id`` (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id:  # fields after "(comm)": state ppid pgrp session ...
            total += int(fields[11]) + int(fields[12])  # utime stime
    return total / ticks
