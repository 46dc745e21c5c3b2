"""Per-layer A/B of the native paged decode kernel alone: git revision REV's csrc/ (A) against the
work tree's (B), alternating A B A B in one process, thread CPU time of the kernel calls.

    python benchmarks/bench_decode_kernel.py --rev HEAD~1 --flush-mb 16 --reps 15

SmolLM2-135M's attention shape (9 query heads, 3 KV heads of 64), bf16, blocks of 16 scattered
over a pool of --blocks per layer and K/V, N sequences of 200 + 53 i tokens (decode8's). A round
calls each of --layers layers once; --flush-mb reads that many MB between calls, as a decode
step's linear layers do, so the pool's rows and page-table entries are cold as in the engine
(without it, and with --layers 1, the rows come from the caches).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_kernels_ab import _build_rev, ab_ratio  # noqa: E402

from helium_trt.engine.embedded import native  # noqa: E402

BS, KV_HEADS, HEADS, DIM = 16, 3, 9, 64


def _layers(args, lengths: torch.Tensor, gen: torch.Generator) -> list[tuple]:
    used = [-(-int(n) // BS) for n in lengths]
    blocks = max(args.blocks, sum(used))
    layers = []
    for _ in range(args.layers):
        k, v = (torch.randn(KV_HEADS, blocks, BS, DIM, generator=gen).bfloat16() for _ in range(2))
        order = torch.randperm(blocks, generator=gen)[:sum(used)].split(used)
        table = torch.zeros(len(used), max(used), dtype=torch.int64)
        for s, ids in enumerate(order):
            table[s, :len(ids)] = ids
        layers.append((torch.randn(len(used), HEADS, DIM, generator=gen).bfloat16(), k, v, table))
    return layers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--seqs", type=int, default=8)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--blocks", type=int, default=4096, help="pool blocks per layer (bench_engine_ab's)")
    parser.add_argument("--flush-mb", type=int, default=0)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        kernels = {"A": native.PagedDecode(ctypes.CDLL(str(_build_rev(args.rev, Path(tmp))))),
                   "B": native.PagedDecode(ctypes.CDLL(str(native._build("cc"))))}
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([200 + 53 * i for i in range(args.seqs)])
    layers = _layers(args, lengths, gen)
    flush = torch.ones(args.flush_mb * 2**18) if args.flush_mb else None
    scale = DIM ** -0.5
    outputs = {key: [kernel(q, k, v, table, lengths, scale) for q, k, v, table in layers]
               for key, kernel in kernels.items()}
    diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(outputs["A"], outputs["B"]))
    times: dict[str, list[float]] = {"A": [], "B": []}
    for rep in range(args.reps + 1):  # the first round warms up
        for key, kernel in kernels.items():
            spent = 0.0
            for q, k, v, table in layers:
                if flush is not None:
                    flush.sum()
                start = time.thread_time()
                kernel(q, k, v, table, lengths, scale)
                spent += time.thread_time() - start
            if rep:
                times[key].append(spent / args.layers * 1e6)
    print(f"decode{args.seqs}, {args.layers} layers, flush {args.flush_mb} MB: A {statistics.median(times['A']):.1f} "
          f"us/layer  B {statistics.median(times['B']):.1f} us/layer  {ab_ratio(times)}; "
          f"largest |A - B| {diff:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
