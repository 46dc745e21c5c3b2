"""Greedy schedule vs the exhaustive optimum on small DAGs (<= 8 LLM calls), same cost model.

Usage: python benchmarks/bench_scheduler.py   (pure: no model, no engine)
Prints per shape the greedy cost, the best cost over every dependency-respecting order, the
gap, and the number of orders searched. Token ids are synthetic; prefixes share real structure.
"""

from __future__ import annotations

import random
import time

from helium_trt.scheduler import (
    CallSpec, SchedulerConfig, exhaustive_search, greedy_order, simulate,
)


def _spec(cid, known, deps=(), unknown=0, decode=32):
    return CallSpec(cid, cid, 0, tuple(known), unknown, decode, tuple(deps), len(known))


def map_reduce(n=6, sys_len=200):
    sys_tokens = tuple(range(1000, 1000 + sys_len))
    calls = {f"expert{i}": _spec(f"expert{i}", sys_tokens + tuple(range(i * 50, i * 50 + 20)))
             for i in range(n)}
    calls["summary"] = _spec("summary", range(5000, 5100), deps=tuple(calls), unknown=32 * n)
    return calls


def reflection(n=4):
    calls = {"draft": _spec("draft", range(0, 150))}
    critic_sys = tuple(range(2000, 2180))
    for i in range(n):
        calls[f"critic{i}"] = _spec(f"critic{i}", critic_sys + (i,) * 8, ("draft",), unknown=32)
    calls["refine"] = _spec("refine", range(3000, 3100), tuple(f"critic{i}" for i in range(n)),
                            unknown=32 * (n + 1))
    return calls


def two_groups_interleaved(n=3):
    calls = {}
    for i in range(n):
        for g, base in (("a", 10_000), ("b", 20_000)):
            calls[f"{g}{i}"] = _spec(f"{g}{i}", tuple(range(base, base + 160)) + (i,) * 10)
    return calls


def chain_plus_fanout():
    calls = {"s1": _spec("s1", range(0, 80))}
    calls["s2"] = _spec("s2", range(0, 60), ("s1",), unknown=32)
    calls["s3"] = _spec("s3", range(0, 60), ("s2",), unknown=32)
    shared = tuple(range(7000, 7200))
    for i in range(4):
        calls[f"f{i}"] = _spec(f"f{i}", shared + (i,) * 6)
    return calls


def random_dag(seed, n=7):
    rng = random.Random(seed)
    prefixes = [tuple(range(k * 1000, k * 1000 + rng.randint(32, 200))) for k in range(3)]
    calls = {}
    for i in range(n):
        deps = tuple(c for c in calls if rng.random() < 0.25)
        known = rng.choice(prefixes) + tuple(rng.randint(0, 999) for _ in range(rng.randint(4, 40)))
        calls[f"c{i}"] = _spec(f"c{i}", known, deps, unknown=32 * len(deps),
                               decode=rng.choice((16, 32, 64)))
    return calls


SHAPES = {
    "map_reduce(6)": map_reduce(), "reflection(4)": reflection(),
    "two_groups_interleaved(3)": two_groups_interleaved(), "chain_plus_fanout": chain_plus_fanout(),
    **{f"random_dag(seed={s})": random_dag(s) for s in range(4)},
}


def main() -> None:
    config = SchedulerConfig(batch_capacity=4, worker_capacity_blocks=48)
    print(f"{'shape':28} {'calls':>5} {'greedy':>8} {'optimum':>8} {'gap':>7} {'orders':>7} {'ms':>7}")
    gaps = []
    for name, calls in SHAPES.items():
        greedy = simulate(calls, greedy_order(calls), config)
        t0 = time.perf_counter()
        best = exhaustive_search(calls, config)
        ms = (time.perf_counter() - t0) * 1000
        gap = greedy.total / best.best.total - 1.0
        gaps.append(gap)
        print(f"{name:28} {len(calls):5d} {greedy.total:8d} {best.best.total:8d} "
              f"{gap:7.2%} {best.num_orders:7d} {ms:7.0f}")
    print(f"mean gap {sum(gaps) / len(gaps):.2%}, max gap {max(gaps):.2%}")


if __name__ == "__main__":
    main()
