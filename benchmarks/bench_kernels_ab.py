"""A/B of the native kernels: git revision REV's csrc/ (A) against the work tree's (B), built with
the same flags, swapped under one model and runner in one process, alternating A B A B, thread
CPU time (bench_engine_ab.py swaps model.py and runner.py but keeps the work tree's kernels).

    python benchmarks/bench_kernels_ab.py --rev HEAD~1 --scen prefill1024@0,decode8 --reps 9

Scenarios as in bench_engine_ab.py, on a scattered KV pool, bf16. With --a-small-pages, A also
runs on a KV pool of 4 KB pages and B on one advised for huge pages (engine/embedded/hugepages.py),
two runners over one model: the kernels and the pool change together.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_engine_ab import BS, NUM_BLOCKS, _scenario  # noqa: E402

from helium_trt.engine.embedded import hugepages, native  # noqa: E402
from helium_trt.engine.embedded.kv_manager import KVManager  # noqa: E402
from helium_trt.engine.embedded.loader import load_model  # noqa: E402
from helium_trt.engine.embedded.runner import ModelRunner  # noqa: E402

CSRC = "helium_trt/engine/embedded/csrc"


def _kernels(lib_path: Path) -> tuple:
    lib = ctypes.CDLL(str(lib_path))
    return native.PagedDecode(lib), native.PagedPrefill(lib), native.FusedOps(lib)


def _build_rev(rev: str, where: Path) -> Path:
    """REV's kernels, built by native._build from a copy of its csrc/."""
    names = subprocess.run(["git", "ls-tree", "--name-only", f"{rev}:{CSRC}"], capture_output=True,
                           text=True, check=True).stdout.split()
    (where / "csrc").mkdir()
    for name in names:
        text = subprocess.run(["git", "show", f"{rev}:{CSRC}/{name}"], capture_output=True, text=True,
                              check=True).stdout
        (where / "csrc" / name).write_text(text)
    with mock.patch.object(native, "_SOURCE_DIR", where / "csrc"):
        return native._build("cc")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--model", default="models/SmolLM2-135M-Instruct")
    parser.add_argument("--scen", default="prefill1024@0,prefill512@1536,decode8")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--a-small-pages", action="store_true",
                        help="A's KV pool on 4 KB pages, B's advised for huge pages")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        kernels = {"A": _kernels(_build_rev(args.rev, Path(tmp))), "B": _kernels(native._build("cc"))}
    model = load_model(args.model, torch.bfloat16)
    runners = {"B": _runner(model, huge=True)}
    runners["A"] = _runner(model, huge=False) if args.a_small_pages else runners["B"]
    kv = KVManager(NUM_BLOCKS, BS, enable_prefix_caching=False)
    gen = torch.Generator().manual_seed(0)
    every = kv.pool.allocate(NUM_BLOCKS)
    kv.pool.decref([every[i] for i in torch.randperm(NUM_BLOCKS, generator=gen).tolist()])
    for name in args.scen.split(","):
        sched = _scenario(name, kv, gen)
        times: dict[str, list[float]] = {"A": [], "B": []}
        with torch.inference_mode():
            for rep in range(args.reps + 1):  # the first round warms up
                for key in "AB":
                    native._loaded["kernels"] = kernels[key]
                    start = time.thread_time()
                    runners[key].run(sched)
                    if rep:
                        times[key].append(time.thread_time() - start)
        print(f"bfloat16 {name}: A {statistics.median(times['A']) * 1e3:.1f} ms  "
              f"B {statistics.median(times['B']) * 1e3:.1f} ms  {ab_ratio(times)}", flush=True)
    return 0


def ab_ratio(times: dict[str, list[float]]) -> str:
    """The median and IQR of the per-pair ratios A/B (above 1: B faster)."""
    ratios = sorted(a / b for a, b in zip(times["A"], times["B"]))
    q = lambda f: ratios[min(len(ratios) - 1, int(f * len(ratios)))]  # noqa: E731
    return (f"A/B median {statistics.median(ratios):.2f} (IQR {q(0.25):.2f}-{q(0.75):.2f}, "
            f"{len(ratios)} pairs)")


def _runner(model, huge: bool) -> ModelRunner:
    with mock.patch.dict(os.environ, {hugepages.DISABLE_ENV: "1" if huge else "0"}):
        return ModelRunner(model, NUM_BLOCKS, BS)


if __name__ == "__main__":
    raise SystemExit(main())
