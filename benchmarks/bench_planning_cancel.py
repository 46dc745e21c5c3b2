"""What a run cancelled while planning leaves behind: planning threads still busy after the cancel.

``--plans`` plans of the map_reduce example over ``--rows`` rows with a ``--bytes`` context each
(a big but valid request: the server's default limits allow 1 MB per value, 16 MB of rows) are
started at once and cancelled 0.5 s later, then a task on asyncio's default executor (what
Explain and a running call's long-prompt tokenizing wait for) and a small plan (Trading, 2 rows)
are timed. Two ways of planning, alternated: ``uncancellable`` is ``asyncio.to_thread``
(prepare_run as runs called it before planning checked a cancel token), ``cancellable`` is what
run_workflow does now (run_cancellable on the planning pool).
Reported per way, median [min..max] over ``--repeat`` rounds: seconds from the cancel until
every planning thread has ended, the default-executor task's latency, the small plan's latency.
prepare_run uses the real tokenizer of --model and an engine stand-in (no weights loaded).
Usage: python benchmarks/bench_planning_cancel.py [--plans 6] [--rows 30] [--bytes 60000]
       [--repeat 2] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

from bench_planning import _TokenizerOnlyEngine
from helium_trt.api.convert import load_request_file, plan_from_proto, rows_from_proto
from helium_trt.runtime.cancel import run_cancellable
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.planning import RuntimeCaches, prepare_run
from helium_trt.runtime.workflow import planning_executor
from helium_trt.server.core import ServerLimits

ROOT = Path(__file__).resolve().parent.parent
WORDS = "alpha beta gamma delta revenue margin quarter guidance risk rates 2026 growth".split()
LIMITS = ServerLimits()
OPTIONS = RunOptions(max_calls=LIMITS.max_calls, max_prompt_bytes=LIMITS.max_prompt_bytes)


def _workload(name: str, num_rows: int, context_bytes: int | None):
    request = load_request_file(ROOT / "examples" / name)
    sample = rows_from_proto(request.rows)
    rng = random.Random(0)
    rows = []
    for i in range(num_rows):
        row = dict(sample[i % len(sample)])
        if context_bytes is not None:
            row["context"] = " ".join(rng.choice(WORDS) for _ in range(context_bytes // 6))
        rows.append(row)
    return plan_from_proto(request.workflow, rows), rows


async def _plan(way: str, engine, workload, ended: list[float]):
    def timed(*args, **kwargs):
        try:
            return prepare_run(*args, **kwargs)
        finally:
            ended.append(time.perf_counter())

    plan, rows = workload
    args = (plan, rows, [engine], OPTIONS, RuntimeCaches())
    if way == "uncancellable":
        return await asyncio.to_thread(timed, *args)
    return await run_cancellable(planning_executor(), timed, *args)


async def _round(way: str, engine, big, small, num_plans: int) -> tuple[float, float, float]:
    ended: list[float] = []
    tasks = [asyncio.create_task(_plan(way, engine, big, ended)) for _ in range(num_plans)]
    await asyncio.sleep(0.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = time.perf_counter()
    await asyncio.to_thread(lambda: None)
    probe = time.perf_counter() - cancelled
    start = time.perf_counter()
    await _plan(way, engine, small, [])
    small_s = time.perf_counter() - start
    while len(ended) < num_plans:
        await asyncio.sleep(0.05)
    return max(ended) - cancelled, probe, small_s


def _summary(values) -> str:
    return f"{statistics.median(values):.3f} s [{min(values):.3f}..{max(values):.3f}]"


async def _main(args) -> None:
    engine = _TokenizerOnlyEngine(Path(args.model))
    big = _workload("map_reduce.yaml", args.rows, args.bytes)
    small = _workload("trading.yaml", 2, None)
    await _plan("cancellable", engine, small, [])  # warm-up: imports, regexes
    results: dict[str, list] = {"uncancellable": [], "cancellable": []}
    for _ in range(args.repeat):
        for way in results:
            results[way].append(await _round(way, engine, big, small, args.plans))
            print(way, " ".join(f"{x:.3f}" for x in results[way][-1]), flush=True)
    print(f"{args.plans} plans x {args.rows} rows x {args.bytes:,} bytes cancelled 0.5 s in; "
          f"median [min..max] of {args.repeat}")
    for way, rounds in results.items():
        busy, probe, small_s = zip(*rounds)
        print(f"{way:14s} threads busy after the cancel {_summary(busy)}, default-executor "
              f"task {_summary(probe)}, small plan {_summary(small_s)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=6)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--bytes", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct"))
    asyncio.run(_main(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
