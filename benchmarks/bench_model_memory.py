"""Peak memory of loading a model: each dtype in a fresh process, every weight touched once
afterwards (as the first forward pass would), peak and resident set from /proc/self/status.

Usage: python benchmarks/bench_model_memory.py [--model DIR] [--repeat 2]   (Linux only)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from helium_trt.engine.config import default_model_dir

_CHILD = """
import sys, time, torch
torch.set_num_threads(1)
from helium_trt.engine.embedded.loader import load_model
def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) // 1024 for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}
before = status()
start = time.perf_counter()
model = load_model(sys.argv[1], getattr(torch, sys.argv[2]))
seconds = time.perf_counter() - start
weights = [model.embed, model.final_norm, model.lm_head] + [
    w for layer in model.layers for w in (layer.qkv, layer.o_proj, layer.gate_up, layer.down)]
touched = sum(float(w.reshape(-1)[::512].sum()) for w in weights)  # every 4 KiB page
after = status()
print(before["VmRSS"], after["VmHWM"], after["RssAnon"], after["RssFile"], round(seconds, 2))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"model: {args.model}")
    print("| dtype | RSS before load (MB) | peak RSS (MB) | anon after (MB) "
          "| file-backed after (MB) | load s |")
    print("|---|---:|---:|---:|---:|---:|")
    for _ in range(args.repeat):
        for dtype in ("float32", "bfloat16"):
            done = subprocess.run([sys.executable, "-c", _CHILD, str(args.model), dtype],
                                  capture_output=True, text=True, check=True)
            print(f"| {dtype} | " + " | ".join(done.stdout.split()) + " |")


if __name__ == "__main__":
    main()
