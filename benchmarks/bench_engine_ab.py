"""A/B of single engine steps: the model and runner of git revision REV (A) against the work
tree's (B), same weights, same KV pool, alternating A B A B in one process, thread CPU time.

    python benchmarks/bench_engine_ab.py --rev HEAD~1 --dtype bfloat16 --scatter \
        --scen decode8,decode32,prefill512@0,prefill512@1536 --reps 15

Scenarios: ``decodeN`` (N sequences of 200 + 53 i tokens decode one token each), ``prefillL@S``
(an L-token chunk after S cached tokens). ``--scatter`` hands out KV blocks in random order (a
pool after prefix sharing) instead of consecutively. Prints each side's median, the median of
the per-pair ratios A/B with its interquartile range, and the largest difference of the final
hidden states.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from helium_trt.engine.base import EngineRequest, SamplingConfig
from helium_trt.engine.embedded import model as new_model
from helium_trt.engine.embedded import runner as new_runner
from helium_trt.engine.embedded.kv_manager import KVManager
from helium_trt.engine.embedded.loader import load_model
from helium_trt.engine.embedded.scheduler import PrefillChunk, SchedulerOutput
from helium_trt.engine.embedded.sequence import Sequence

BS, NUM_BLOCKS = 16, 4096


def _old_modules(rev: str, where: Path):
    """REV's model.py and runner.py, imported under other names (runner importing that model)."""
    def show(name: str) -> str:
        # The embedded engine moved into engine/embedded/; older revisions have it in engine/.
        for path in (f"helium_trt/engine/embedded/{name}", f"helium_trt/engine/{name}"):
            shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
            if shown.returncode == 0:
                return shown.stdout
        raise SystemExit(f"{rev} has no engine {name}")
    (where / "old_model.py").write_text(show("model.py"))
    runner = show("runner.py")
    for module in ("helium_trt.engine.embedded.model", "helium_trt.engine.model"):
        runner = runner.replace(f"from {module} import", "from old_model import")
    (where / "old_runner.py").write_text(runner)
    sys.path.insert(0, str(where))
    modules = []
    for name in ("old_model", "old_runner"):
        spec = importlib.util.spec_from_file_location(name, where / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--model", default="models/SmolLM2-135M-Instruct")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--scen", default="decode8,prefill512@0,prefill512@1536")
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--scatter", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        old_model, old_runner = _old_modules(args.rev, Path(tmp))
        model = load_model(args.model, getattr(torch, args.dtype))
        old = old_model.LlamaModel(model.config, model.embed, [copy.copy(layer) for layer in model.layers],
                                   model.final_norm, model.lm_head)
        runners = {"A": old_runner.ModelRunner(old, NUM_BLOCKS, BS),
                   "B": new_runner.ModelRunner(model, NUM_BLOCKS, BS)}
        runners["A"].kv_cache = runners["B"].kv_cache
        kv = KVManager(NUM_BLOCKS, BS, enable_prefix_caching=False)
        gen = torch.Generator().manual_seed(0)
        if args.scatter:
            every = kv.pool.allocate(NUM_BLOCKS)
            kv.pool.decref([every[i] for i in torch.randperm(NUM_BLOCKS, generator=gen).tolist()])
        for name in args.scen.split(","):
            _compare(name, _scenario(name, kv, gen), runners, args)
    return 0


def _scenario(name: str, kv: KVManager, gen: torch.Generator) -> SchedulerOutput:
    def sequence(num_tokens: int, index: int) -> Sequence:
        tokens = torch.randint(100, 40000, (num_tokens,), generator=gen).tolist()
        request = EngineRequest(f"{name}-{index}", tuple(tokens), SamplingConfig(max_tokens=1000))
        seq = Sequence.from_request(request, index)
        assert kv.try_admit(seq, 0.0), "KV pool too small for the scenario"
        return seq
    if name.startswith("decode"):
        seqs = [sequence(200 + 53 * i, i) for i in range(int(name[6:]))]
        for seq in seqs:
            seq.token_ids.append(5)
            seq.num_computed_tokens = len(seq.token_ids) - 1
            kv.try_grow(seq, 0.0)
        return SchedulerOutput(decodes=seqs)
    length, start = map(int, name[len("prefill"):].split("@"))
    seq = sequence(start + length, 0)
    seq.num_computed_tokens = start
    return SchedulerOutput(prefills=[PrefillChunk(seq, length)])


def _compare(name: str, sched: SchedulerOutput, runners: dict, args) -> None:
    hidden = {}
    with torch.inference_mode():
        for key, runner in runners.items():
            runner.run(sched)  # warm-up (and the first forward packs B's weights)
            step = runner._prepare(sched)
            hidden[key] = runner.model.forward(step.input_ids, step.positions, step.batch,
                                               runner.kv_cache).float()
    times = {"A": [], "B": []}
    for _ in range(args.reps):
        for key, runner in runners.items():
            start = time.thread_time()
            runner.run(sched)
            times[key].append(time.thread_time() - start)
    ratios = sorted(a / b for a, b in zip(times["A"], times["B"]))
    q = lambda f: ratios[min(len(ratios) - 1, int(f * len(ratios)))]
    print(f"{args.dtype} {name}: A {statistics.median(times['A']) * 1e3:.1f} ms  "
          f"B {statistics.median(times['B']) * 1e3:.1f} ms  A/B median {statistics.median(ratios):.2f} "
          f"(IQR {q(0.25):.2f}-{q(0.75):.2f}, {args.reps} pairs)  "
          f"max|diff| {(hidden['A'] - hidden['B']).abs().max().item():.2e}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
