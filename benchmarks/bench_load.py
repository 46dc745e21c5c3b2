"""Many clients against one `helium-trt serve` process: throughput, latency, failures, cancels.

Usage: python benchmarks/bench_load.py [--clients 200] [--kv-fraction 0.25] [--cancel 0.0]
       [--max-tokens 3] [--model DIR] [--seed 0]

Each client opens its own channel and runs a three-call workflow (two experts share a static
system prompt over the client's own report; a writer reads both) with one row of its own,
greedy, result cache off. First every request runs one at a time on a server whose pool holds
them all: the reference outputs, the sequential baseline, and the working set (each call's
prompt and output blocks, summed over all runs). Then a second server gets a pool of
``--kv-fraction`` of that working set and all clients run at once (``load``); with
``--cancel F`` they run at once again and that fraction of them cancels at a random point,
uniform over the first pass's p99 latency (``cancel``).

Prints per pass runs/s and p50/p99 latency of completed runs, runs nobody cancelled that lost a
row, rows that differ from the reference; then KV blocks still held afterwards and traceback
lines in the server's log. The model is the tiny random one (built in a temporary directory unless --model
is given); the server runs torch on one thread, float32.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import json_format

from helium_trt.api.convert import rows_to_proto
from helium_trt.api.helium.v1 import service_pb2, service_pb2_grpc, workflow_pb2

SYSTEM = "You are one of two analysts preparing notes on a company report. " * 2
NO_RESULT_CACHE = service_pb2.Optimizations(disable_prompt_cache=True)


def panel_workflow(max_tokens: int) -> workflow_pb2.Workflow:
    ops = [{"id": "report", "input": {}}]
    for name, focus in (("growth", "revenue and growth"), ("risk", "costs and risks")):
        ops += [
            {"id": f"{name}_p", "format": {"messages": [
                {"role": "ROLE_SYSTEM", "template": f"{SYSTEM}Focus on {focus}."},
                {"role": "ROLE_USER", "template": "{report}"}]}},
            {"id": name, "llm": {"prompt": f"{name}_p", "config": {"max_tokens": max_tokens}}}]
    ops += [
        {"id": "writer_p", "format": {"template": "Notes: {growth} | {risk}\nSummary:"}},
        {"id": "writer", "llm": {"prompt": "writer_p", "config": {"max_tokens": max_tokens}}},
        {"id": "summary", "output": {"input": "writer"}}]
    return json_format.ParseDict({"name": "panel", "ops": ops}, workflow_pb2.Workflow())


def requests_for(num_clients: int, max_tokens: int) -> list[service_pb2.RunRequest]:
    workflow = panel_workflow(max_tokens)
    return [service_pb2.RunRequest(
        workflow=workflow, rows=rows_to_proto([{"report": (
            f"Report {i}: revenue rose {i % 17}% in region {i % 7}; costs fell {i % 5}%.")}]),
        options=service_pb2.RunOptions(optimizations=NO_RESULT_CACHE)) for i in range(num_clients)]


@dataclass
class Outcome:
    latency_s: float
    rows: dict
    errors: list
    cancelled: bool
    events: list


@contextmanager
def served(model_dir: Path, workdir: Path, *args: str):
    """`helium-trt serve` on a free 127.0.0.1 port; yields (address, log path)."""
    port_file, log_path = workdir / "port", workdir / "serve.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "helium_trt.server.cli", "serve", "--address", "127.0.0.1:0",
             "--model", str(model_dir), "--port-file", str(port_file), "--threads", "1",
             "--dtype", "float32", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None:
                raise SystemExit(f"helium-trt serve did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port_file.read_text().strip()}", log_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def run_one(address: str, request, cancel_after_s: float | None) -> Outcome:
    started = time.perf_counter()
    events: list = []
    cancelled = False
    async with grpc.aio.insecure_channel(address) as channel:
        call = service_pb2_grpc.HeliumServiceStub(channel).Run(request, timeout=600)

        async def read():
            async for event in call:
                events.append(event)

        reader = asyncio.ensure_future(read())
        try:
            await asyncio.wait_for(asyncio.shield(reader), cancel_after_s)
        except TimeoutError:
            cancelled = call.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass
    rows = {e.row_output.row: dict(e.row_output.outputs) for e in events
            if e.WhichOneof("event") == "row_output"}
    errors = [e.error.message for e in events if e.WhichOneof("event") == "error"]
    return Outcome(time.perf_counter() - started, rows, errors, cancelled, events)


async def run_all(address: str, requests, cancel_at: list[float | None]) -> tuple[list, float]:
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(run_one(address, r, c) for r, c in zip(requests, cancel_at)))
    return outcomes, time.perf_counter() - started


def working_set_blocks(outcomes: list[Outcome], block_size: int = 16) -> int:
    return sum(-(-(e.op_finished.prompt_tokens + e.op_finished.output_tokens) // block_size)
               for o in outcomes for e in o.events if e.WhichOneof("event") == "op_finished")


def kv_blocks_held(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.HeliumServiceStub(channel)
        deadline = time.monotonic() + 30
        while (held := stub.Stats(service_pb2.StatsRequest()).kv_blocks_held) and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        return held


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def summarize(reference: list[Outcome], together: list[Outcome], wall_s: float) -> dict:
    kept = [(r, t) for r, t in zip(reference, together) if not t.cancelled]
    latencies = [t.latency_s for _, t in kept if t.rows and not t.errors]
    return {
        "wall_s": round(wall_s, 2), "runs_per_s": round(len(latencies) / wall_s, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000),
        "p99_ms": round(percentile(latencies, 0.99) * 1000),
        "cancelled": sum(t.cancelled for t in together),
        "uncancelled_runs_with_failed_rows": sum(1 for _, t in kept if t.errors or not t.rows),
        "rows_differing_from_reference": sum(1 for r, t in kept if t.rows != r.rows),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--kv-fraction", type=float, default=0.25)
    p.add_argument("--cancel", type=float, default=0.0,
                   help="then a second pass where this fraction of the clients cancels")
    p.add_argument("--max-tokens", type=int, default=3)
    p.add_argument("--model", type=Path, help="model directory (default: a fresh tiny model)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    report: dict = {"clients": args.clients}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model
        if model_dir is None:
            from helium_trt.engine.embedded.tiny_model import build_tiny_model
            model_dir = build_tiny_model(tmp / "tiny")
        requests = requests_for(args.clients, args.max_tokens)
        (tmp / "roomy").mkdir()
        with served(model_dir, tmp / "roomy", "--kv-cache-mb", "64") as (address, _):
            started = time.perf_counter()
            reference = [asyncio.run(run_one(address, r, None)) for r in requests]
            sequential_s = time.perf_counter() - started
        working_set = working_set_blocks(reference)
        num_blocks = max(1, int(working_set * args.kv_fraction))
        report.update(working_set_blocks=working_set, kv_blocks=num_blocks,
                      sequential_s=round(sequential_s, 2),
                      sequential_runs_per_s=round(len(requests) / sequential_s, 1))
        (tmp / "tight").mkdir()
        with served(model_dir, tmp / "tight", "--kv-cache-blocks", str(num_blocks)) as \
                (address, log_path):
            together, wall_s = asyncio.run(run_all(address, requests, [None] * len(requests)))
            report["load"] = summarize(reference, together, wall_s)
            if args.cancel > 0:  # cancel points spread over a whole concurrent run
                window_s = percentile([o.latency_s for o in together], 0.99)
                cancel_at = [rng.uniform(0, window_s) if rng.random() < args.cancel else None
                             for _ in requests]
                together, wall_s = asyncio.run(run_all(address, requests, cancel_at))
                report["cancel"] = summarize(reference, together, wall_s)
            report["kv_blocks_held_after"] = kv_blocks_held(address)
            log = log_path.read_text(errors="replace")
            report["log_traceback_lines"] = log.count("Traceback") + log.count("never retrieved")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
