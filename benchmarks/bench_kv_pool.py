"""Concurrent small workflows against KV pools of different sizes (issue 10, item 9).

Usage: python benchmarks/bench_kv_pool.py [--clients 200] [--pools 1,10,32] [--repeats 2]
       [--fill] [--compare-full-scan] [--request FILE] [--profile] [--model DIR]

N clients each run a two-call workflow (a shared system prompt and their own question, then a
follow-up on the answer; or every client the same --request file) at once, in-process on the
embedded engine with the tiny random model (built in a temporary directory unless --model is
given), torch on one thread. For each pool size it prints the wall time, the engine steps and
their mean batch (decodes, prefill tokens), time in the forward pass against the rest of the
steps (scheduling, KV bookkeeping and postprocessing, under the engine lock), preemptions, and
the calls and seconds spent counting obtainable blocks and evicting; --profile adds the top
functions of the engine thread and of the event loop by own time. A one-at-a-time run on the
first pool size is the baseline. --fill first caches unique prompts until the pool is full
(untimed), the state of a server that has run a while; --compare-full-scan also runs every pool
with the eviction that scanned every cached block per call (before the eviction heap). Runs
alternate (pools, and variants within a pool) per repeat, so drift on a shared machine hits all
of them alike; the summary gives the median, min and max of each.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import heapq
import io
import pstats
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from google.protobuf import json_format

from helium_trt.api.convert import load_request_file, plan_from_proto
from helium_trt.api.events import run_request_inputs
from helium_trt.api.helium.v1 import workflow_pb2
from helium_trt.engine.config import EngineConfig
from helium_trt.engine.embedded.engine import EmbeddedEngine
from helium_trt.runtime.events import RowOutput, RunError
from helium_trt.runtime.options import RunOptions
from helium_trt.runtime.planning import RuntimeCaches
from helium_trt.runtime.workflow import run_workflow

SYSTEM = ("You are a helpful assistant. Answer the question briefly and clearly, in one sentence, "
          "and say so when you do not know. The primary colors are red, blue and yellow. ")
_WORDS = ("red", "blue", "yellow", "capital", "France", "Paris", "colors", "mixing", "purple",
          "assistant", "answer", "question", "briefly", "clearly", "three", "primary", "name")


def small_workflow(max_tokens: int):
    config = {"maxTokens": max_tokens, "temperature": 0.0}
    ops = [
        {"id": "q", "input": {"column": "q"}},
        {"id": "sys", "constant": {"text": SYSTEM}},
        {"id": "ask_p", "format": {"template": "{sys} Q: {q}\nA:"}},
        {"id": "ask", "llm": {"prompt": "ask_p", "config": config}},
        {"id": "check_p", "format": {"template": "{sys} Q: {q}\nA: {ask}\nIs that right?"}},
        {"id": "check", "llm": {"prompt": "check_p", "config": config}},
        {"id": "out", "output": {"input": "check", "name": "answer"}},
    ]
    proto = json_format.ParseDict({"name": "kv_pool_bench", "ops": ops}, workflow_pb2.Workflow())
    return plan_from_proto(proto, ())


@dataclass
class StepStats:
    """Per-step figures gathered on the engine thread."""

    num_steps: int = 0
    num_decodes: int = 0
    num_prefill_tokens: int = 0
    max_decodes: int = 0
    forward_s: float = 0.0
    step_s: float = 0.0
    profile: cProfile.Profile | None = None
    loop_profile: cProfile.Profile | None = None
    # Pool-wide bookkeeping (free + evictable counts, eviction): calls and seconds, by name.
    num_scans: dict[str, int] = field(default_factory=dict)
    scan_s: dict[str, float] = field(default_factory=dict)

    def timed(self, name: str, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.num_scans[name] = self.num_scans.get(name, 0) + 1
                self.scan_s[name] = self.scan_s.get(name, 0.0) + time.perf_counter() - t0
        return wrapper


def instrument(engine: EmbeddedEngine, stats: StepStats) -> None:
    """Wrap the engine core's step and the runner's forward pass to time and count them."""
    core = engine._core
    step, run = core.step, core.runner.run

    def timed_run(sched):
        stats.num_steps += 1
        stats.num_decodes += len(sched.decodes)
        stats.max_decodes = max(stats.max_decodes, len(sched.decodes))
        stats.num_prefill_tokens += sum(c.num_tokens for c in sched.prefills)
        t0 = time.perf_counter()
        try:
            return run(sched)
        finally:
            stats.forward_s += time.perf_counter() - t0

    def timed_step():
        t0 = time.perf_counter()
        try:
            return stats.profile.runcall(step) if stats.profile else step()
        finally:
            stats.step_s += time.perf_counter() - t0

    core.runner.run = timed_run
    kv = core.kv
    kv.num_obtainable_blocks = stats.timed("num_obtainable_blocks", kv.num_obtainable_blocks)
    kv.tree.evict = stats.timed("evict", kv.tree.evict)
    core.step = timed_step


def question(client: int, num_words: int) -> str:
    """A question of about ``num_words`` words that no other client asks."""
    rng = random.Random(client)
    words = [rng.choice(_WORDS) for _ in range(num_words)]
    return f"Client {client} asks: " + " ".join(words) + "?"


@dataclass(frozen=True)
class Workload:
    """What each client runs: ``request`` (plan, rows, options) for all, or the built-in one."""

    request: tuple | None
    num_words: int
    max_tokens: int
    num_distinct: int  # distinct questions; client i asks question i mod num_distinct

    def inputs(self, client: int) -> tuple:
        if self.request is not None:
            return self.request
        return small_workflow(self.max_tokens), ({"q": question(client % self.num_distinct, self.num_words)},), RunOptions()


async def run_clients(workload: Workload, engine, num_clients: int, concurrent: bool) -> tuple[float, int]:
    caches = RuntimeCaches()  # shared by all clients, as in a server

    async def client(i: int) -> int:
        plan, rows, options = workload.inputs(i)
        ok = 0
        async for event in run_workflow(plan, [engine], rows=rows, options=options,
                                        caches=caches):
            ok += isinstance(event, RowOutput)
            if isinstance(event, RunError):
                print(f"client {i}: {event.message}", file=sys.stderr)
        return ok

    t0 = time.perf_counter()
    if concurrent:
        done = await asyncio.gather(*(client(i) for i in range(num_clients)))
    else:
        done = [await client(i) for i in range(num_clients)]
    return time.perf_counter() - t0, sum(done)


async def fill_pool(engine: EmbeddedEngine, prompt_len: int = 1024) -> None:
    """Cache unique prompts until the prefix tree holds every block: the state of a server that
    has run a while (its pool full of cached prefixes, so every allocation evicts)."""
    rng = random.Random(0)
    vocab = engine.info.vocab_size
    num_prompts = -(-engine.info.num_blocks * engine.info.block_size // prompt_len)
    for start in range(0, num_prompts, 16):
        prompts = [[rng.randrange(10, vocab - 10) for _ in range(prompt_len)]
                   for _ in range(min(16, num_prompts - start))]
        await asyncio.gather(*(engine.warm(p) for p in prompts))


def use_full_scan(tree) -> None:
    """Give ``tree`` the eviction it had before its heap: every call scans every cached block
    (counting the evictable ones, and building a heap of the evictable leaves)."""
    def num_evictable():
        return sum(1 for b in tree._nodes_by_block if tree.pool.ref_count(b) == 1)

    def evict(num_blocks: int, now: float) -> list[int]:
        def evictable_leaf(n):
            return not n.children and tree.pool.ref_count(n.block_id) == 1

        heap = [(tree._eviction_key(n, now), id(n), n)
                for n in tree._nodes_by_block.values() if evictable_leaf(n)]
        heapq.heapify(heap)
        freed: list[int] = []
        while heap and len(freed) < num_blocks:
            _, _, node = heapq.heappop(heap)
            parent = node.parent
            tree._remove_leaf(node)
            freed.extend(tree.pool.decref([node.block_id]))
            if parent is not tree._root and evictable_leaf(parent):
                heapq.heappush(heap, (tree._eviction_key(parent, now), id(parent), parent))
        return freed

    tree.num_evictable, tree.evict = num_evictable, evict


def measure(model_dir: Path, pool_mb: int, workload: Workload, num_clients: int, *,
            concurrent: bool = True, profile: bool = False, fill: bool = False,
            full_scan: bool = False):
    engine = EmbeddedEngine(EngineConfig(model_dir=str(model_dir), kv_cache_mb=pool_mb, num_threads=1))
    if full_scan:
        use_full_scan(engine._core.kv.tree)
    if fill:
        asyncio.run(fill_pool(engine))
    stats = StepStats(profile=cProfile.Profile() if profile else None)
    instrument(engine, stats)
    loop_profile = cProfile.Profile() if profile else None

    async def go():
        try:
            return await run_clients(workload, engine, num_clients, concurrent)
        finally:
            await engine.close()

    if loop_profile is not None:
        wall_s, num_ok = loop_profile.runcall(asyncio.run, go())
    else:
        wall_s, num_ok = asyncio.run(go())
    stats.loop_profile = loop_profile
    return wall_s, num_ok, engine, stats


def report(label: str, wall_s: float, num_ok: int, engine: EmbeddedEngine, stats: StepStats) -> None:
    n = max(1, stats.num_steps)
    print(f"{label}: {wall_s:6.2f} s  rows ok {num_ok}  blocks {engine.info.num_blocks}  "
          f"steps {stats.num_steps}  decodes/step {stats.num_decodes / n:5.1f} (max {stats.max_decodes})  "
          f"prefill tok/step {stats.num_prefill_tokens / n:6.1f}  forward {stats.forward_s:5.2f} s  "
          f"step-forward {stats.step_s - stats.forward_s:5.2f} s  preemptions {engine.num_preemptions}",
          flush=True)
    for name in sorted(stats.num_scans):
        print(f"    {name}: {stats.num_scans[name]} calls, {stats.scan_s[name]:.2f} s")
    for name, profile in (("engine thread", stats.profile), ("event loop", stats.loop_profile)):
        if profile is not None:
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(16)
            print(f"-- {name}, by own time\n{out.getvalue()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--request", type=Path, metavar="FILE",
                        help="a request file (workflow + rows) every client sends, e.g. "
                        "examples/parallel.yaml (default: the built-in two-call workflow)")
    parser.add_argument("--words", type=int, default=60, help="words in each client's question")
    parser.add_argument("--distinct", type=int, default=0,
                        help="distinct questions among the clients (default: one per client)")
    parser.add_argument("--max-tokens", type=int, default=6, help="max_tokens of each LLM call")
    parser.add_argument("--pools", default="1,10,32", help="KV pool sizes in MB, comma-separated")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds over the pools")
    parser.add_argument("--profile", action="store_true", help="cProfile the engine thread and the loop")
    parser.add_argument("--compare-full-scan", action="store_true",
                        help="also run each pool with the eviction that scanned every cached block "
                        "per call (before the eviction heap), alternating with the current one")
    parser.add_argument("--fill", action="store_true", help="fill each pool with cached prefixes "
                        "first (untimed), as on a server that has run a while")
    parser.add_argument("--no-sequential", action="store_true", help="skip the one-at-a-time run")
    parser.add_argument("--model", type=Path, help="model directory (default: a fresh tiny model "
                        "with a 4,096-token window)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pools = [int(p) for p in args.pools.split(",")]
    request = None
    if args.request is not None:
        request = run_request_inputs(load_request_file(args.request))
    workload = Workload(request, args.words, args.max_tokens, args.distinct or args.clients)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from helium_trt.engine.embedded.tiny_model import TinyModelConfig, build_tiny_model
            model_dir = build_tiny_model(Path(tmp) / "tiny", TinyModelConfig(max_position_embeddings=4096))
        what = args.request or f"the two-call workflow ({args.words}-word questions, max_tokens {args.max_tokens})"
        print(f"{args.clients} clients of {what}; torch threads {torch.get_num_threads()}")
        measure(model_dir, pools[0], workload, 4)  # warm-up: a process's first shapes are slow
        variants = ("heap", "full scan") if args.compare_full_scan else ("heap",)
        walls: dict[tuple, list[float]] = {(p, v): [] for p in pools for v in variants}
        for round_ in range(args.repeats):
            for pool in pools:
                for variant in variants:
                    result = measure(model_dir, pool, workload, args.clients, profile=args.profile,
                                     fill=args.fill, full_scan=variant == "full scan")
                    walls[(pool, variant)].append(result[0])
                    report(f"round {round_ + 1} {variant:9s} {pool:3d} MB", *result)
        if not args.no_sequential:
            report(f"one at a time   {pools[0]:3d} MB",
                   *measure(model_dir, pools[0], workload, args.clients, concurrent=False,
                            fill=args.fill))
        for (pool, variant), values in walls.items():
            print(f"{pool:3d} MB {variant:9s}: median {statistics.median(values):6.2f} s  "
                  f"min {min(values):6.2f}  max {max(values):6.2f}  (n={len(values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
