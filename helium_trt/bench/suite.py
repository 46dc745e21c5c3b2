"""The benchmark suite end to end: sizes for --quick and full runs, planning time, the report."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from helium_trt.bench import vllm_server
from helium_trt.bench.factory import BenchEngines
from helium_trt.bench.harness import BenchProgress, SystemRun, run_all
from helium_trt.bench.report import build_report, write_all
from helium_trt.bench.systems import HELIUM, System, select_systems
from helium_trt.bench.workloads import WORKLOAD_NAMES, Workload, WorkloadSize, load_workload
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.planning import RuntimeCaches, prepare_run

# --quick: one row each and short replies, so every workload x system fits in ~10 minutes on
# 2 CPU cores. Full: rows and (Map-Reduce) fan-out varied.
QUICK_SIZES = {name: (WorkloadSize(1, 8),) for name in WORKLOAD_NAMES}
FULL_SIZES = {
    "map_reduce": (WorkloadSize(2, 32, 4), WorkloadSize(2, 32, 14), WorkloadSize(8, 32, 14)),
    **{name: (WorkloadSize(2, 32), WorkloadSize(8, 32))
       for name in ("debate", "reflection", "iterative", "parallel")},
    "trading": (WorkloadSize(1, 32), WorkloadSize(4, 32)),
}


@dataclass(frozen=True, slots=True)
class SuiteConfig:
    model_dir: Path
    quick: bool = True
    workloads: tuple[str, ...] = WORKLOAD_NAMES
    systems: tuple[str, ...] | None = None
    with_vllm: bool | None = None  # None: when the vLLM venv exists
    dtype: str = "bfloat16"
    seed: int = 0
    out_dir: Path = Path("benchmarks/results")
    json_path: Path | None = None
    command: str = ""
    sizes: dict = field(default_factory=dict)  # overrides QUICK/FULL_SIZES (tests)
    num_workers: int = 1  # engines per system (the runtime places calls, or a balancer)
    num_threads: int | None = None  # torch threads per engine (None: torch's setting)
    repeat: int = 1  # each system this many times, in turn


def build_workloads(config: SuiteConfig) -> list[Workload]:
    sizes = config.sizes or (QUICK_SIZES if config.quick else FULL_SIZES)
    return [load_workload(name, size, config.seed)
            for name in config.workloads for size in sizes[name]]


def measure_planning(engines: BenchEngines, num_rows: int = 32, repeat: int = 5) -> float:
    """Median planning time (optimize + calls + schedule) of Trading over ``num_rows`` rows."""
    workload = load_workload("trading", WorkloadSize(num_rows, 32))
    engine = engines.build(System(HELIUM, ""), None)
    import asyncio
    try:
        times = [prepare_run(workload.plan, workload.rows, [engine], RunOptions(),
                             RuntimeCaches()).planning_ms for _ in range(repeat)]
    finally:
        asyncio.run(engine.close())
    return statistics.median(times)


def warm_up(engines: BenchEngines) -> None:
    """One short untimed call: loads the weights and initialises torch's kernels, so the first
    measured system does not pay for them."""
    import asyncio
    from helium_trt.engine.base import EngineRequest, SamplingConfig

    async def once() -> None:
        engine = engines.build(System(HELIUM, ""), None)
        try:
            ids = tuple(engine.tokenizer.encode("Warm-up: say hello. " * 20))
            async for _ in engine.generate(EngineRequest("warm-up", ids, SamplingConfig(4))):
                pass
        finally:
            await engine.close()
    asyncio.run(once())


def run_suite(config: SuiteConfig, write: Callable[[str], None]) -> tuple[dict, list[SystemRun],
                                                                          dict[str, Path]]:
    started = time.perf_counter()
    with_vllm = vllm_server.is_available() if config.with_vllm is None else config.with_vllm
    load = os.getloadavg()[0]
    notes = [f"1-minute load average at start {load:.2f} on {os.cpu_count()} CPUs; each system "
             "runs once, so ratios from this one run are the figures to read."]
    if config.with_vllm is False:
        notes.append("vLLM peer left out (--no-vllm).")
    elif not with_vllm:
        notes.append("vLLM peer skipped (no venv at "
                     f"{vllm_server.venv_path()}; run benchmarks/setup_vllm.sh, or --with-vllm).")
    systems = select_systems(list(config.systems) if config.systems else None, with_vllm,
                             config.num_workers)
    vllm = None
    if any(s.engine == "vllm" for s in systems):
        export = vllm_server.export_bf16(config.model_dir,
                                         config.model_dir.parent / (config.model_dir.name + "-bf16"))
        # vLLM gets as many OpenMP threads as each engine has torch threads (both cores when
        # torch's default is kept): the comparison is per thread, as in bench-engine.
        threads = config.num_threads or os.cpu_count() or 1
        vllm = vllm_server.VllmConfig(venv=vllm_server.venv_path(), model_dir=export,
                                      log_path=config.out_dir / "vllm_server.log",
                                      omp_threads_bind="0" if threads == 1 else f"0-{threads - 1}")
    engines = BenchEngines(config.model_dir, dtype=config.dtype, vllm=vllm,
                           num_workers=config.num_workers, num_threads=config.num_threads)
    workloads = build_workloads(config)
    write(f"bench: {len(workloads)} workloads x {len(systems)} systems "
          f"({', '.join(s.name for s in systems)})")
    warm_up(engines)
    planning_ms = measure_planning(engines) if "trading" in config.workloads else None
    progress = BenchProgress(len(workloads) * len(systems) * config.repeat, write)
    meta = {
        "command": config.command, "model": config.model_dir.name, "dtype": config.dtype,
        "quick": config.quick, "seed": config.seed, "with_vllm": with_vllm,
        "systems": {s.name: s.description for s in systems},
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "notes": notes, "planning_trading_32_rows_ms": planning_ms,
        "num_workers": config.num_workers, "num_threads": config.num_threads,
        "repeat": config.repeat,
        "stem": ("bench_quick" if config.quick else "bench_full")
        + (f"_workers{config.num_workers}" if config.num_workers > 1 else ""),
        "title": f"helium_trt bench{' --quick' if config.quick else ''}: {config.model_dir.name}",
    }

    def report_so_far(runs: list[SystemRun]) -> tuple[dict, dict[str, Path]]:
        meta["total_s"] = time.perf_counter() - started
        report = build_report(runs, meta)
        return report, write_all(report, config.out_dir, config.json_path)

    runs = run_all(workloads, systems, engines, progress, on_workload=report_so_far,
                   repeat=config.repeat)
    report, paths = report_so_far(runs)
    return report, runs, paths


def workload_names(names: Sequence[str] | None) -> tuple[str, ...]:
    if not names:
        return WORKLOAD_NAMES
    unknown = [n for n in names if n not in WORKLOAD_NAMES]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; known: {list(WORKLOAD_NAMES)}")
    return tuple(names)


# --cross-batch: rows per day and decode cap so both days of every system fit in ~5-8 minutes.
CROSS_BATCH_SIZES = {
    "map_reduce": (WorkloadSize(4, 16, 7),),
    "trading": (WorkloadSize(2, 16),),
    **{name: (WorkloadSize(4, 16),) for name in ("debate", "reflection", "iterative", "parallel")},
}
CROSS_BATCH_WORKLOADS = ("map_reduce", "trading")


def run_cross_batch_suite(config: SuiteConfig, overlap: float, write: Callable[[str], None],
                          interlude: str | None = None):
    """Day 1 then day 2 of each workload per system (``interlude``: another workload's rows
    between the days); reports day 2 (bench_cross_batch*.*)."""
    from helium_trt.bench.cross_batch import (
        load_batches, run_cross_batch, select_cross_batch_systems)
    from helium_trt.bench.cross_batch_report import build_cross_batch_report, write_cross_batch

    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"--overlap must be within [0, 1], got {overlap}")
    started = time.perf_counter()
    systems = select_cross_batch_systems(config.systems)
    sizes = config.sizes or CROSS_BATCH_SIZES
    if interlude is not None:
        workload_names([interlude])
    batches = [load_batches(name, size, overlap, config.seed, interlude)
               for name in config.workloads for size in sizes[name]]
    engines = BenchEngines(config.model_dir, dtype=config.dtype)
    write(f"bench --cross-batch: {len(batches)} workloads x {len(systems)} systems, "
          f"overlap {overlap:.0%} ({', '.join(s.system.name for s in systems)})")
    warm_up(engines)
    meta = {
        "command": config.command, "model": config.model_dir.name, "dtype": config.dtype,
        "seed": config.seed, "overlap": overlap,
        "stem": "bench_cross_batch" + ("" if overlap == 0.5 else f"_overlap{round(overlap * 100)}")
        + (f"_interlude_{interlude}" if interlude else ""), "interlude": interlude,
        "systems": {s.system.name: s.system.description for s in systems},
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "notes": [f"1-minute load average at start {os.getloadavg()[0]:.2f}; each system runs "
                  "once on a fresh engine (day 1, Warm for helium, day 2); only day 2 is timed."],
        "title": f"helium_trt bench --cross-batch --overlap {overlap}: {config.model_dir.name}",
    }

    def report_so_far(runs):
        meta["total_s"] = time.perf_counter() - started
        report = build_cross_batch_report(runs, meta)
        return report, write_cross_batch(report, config.out_dir, config.json_path)

    progress = BenchProgress(len(batches) * len(systems), write)
    runs = run_cross_batch(batches, systems, engines, progress, on_workload=report_so_far)
    report, paths = report_so_far(runs)
    return report, runs, paths
