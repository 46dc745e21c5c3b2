"""`helium-trt bench`: the paper's workloads under helium, its ablations and baselines."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from helium_trt.engine.config import MODEL_DIR_ENV, default_model_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="run the workload benchmark (helium vs ablations and baselines); "
                      "writes markdown, JSON and a plot under benchmarks/results/")
    parser.add_argument("--quick", action="store_true",
                        help="one row per workload and short replies: about 6 minutes with vLLM, against "
                             "about an hour for the full run")
    parser.add_argument("--workload", action="append", default=None, metavar="NAME",
                        help="run only this workload (repeatable)")
    parser.add_argument("--system", action="append", default=None, metavar="NAME",
                        help="run only this system (repeatable; 'helium', 'call-level', ...)")
    parser.add_argument("--cross-batch", action="store_true",
                        help="cross-batch scenario: day 1 then day 2 (rows partly repeated) on "
                             "the same server; reports day 2 (default workloads map_reduce, "
                             "trading)")
    parser.add_argument("--overlap", type=float, default=0.5,
                        help="--cross-batch: fraction of day 2's rows repeated from day 1")
    parser.add_argument("--interlude", default=None, metavar="NAME",
                        help="--cross-batch: run 8 rows of this workload from another, "
                             "workflow-unaware client between the days")
    parser.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="folder for the markdown, JSON and PNG (default benchmarks/results)")
    parser.add_argument("--model", type=Path, default=None,
                        help=f"model directory (default: ${MODEL_DIR_ENV} or {default_model_dir()})")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="N embedded engines per system: helium places each call on one "
                             "(at dispatch time), call-level goes round robin by plan order; "
                             "adds 'call-level round-robin' and 'call-level least-loaded' (a "
                             "balancer in front of the workers) to the default systems")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads per engine; vLLM gets as many OpenMP threads "
                             "(default 1, as run and serve: the native kernels run on one thread)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the systems in turn N times (A B A B) and report each one's "
                             "median wall time and the spread (min-max)")
    vllm = parser.add_mutually_exclusive_group()
    vllm.add_argument("--with-vllm", dest="with_vllm", action="store_true", default=None,
                      help="include the vLLM peer (default: when its venv exists)")
    vllm.add_argument("--no-vllm", dest="with_vllm", action="store_false")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from helium_trt.bench.suite import (
        CROSS_BATCH_WORKLOADS, SuiteConfig, run_cross_batch_suite, run_suite, workload_names)
    from helium_trt.engine.embedded.cpu import resolve_num_threads
    from helium_trt.errors import HeliumError

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        names = workload_names(args.workload)
        if args.cross_batch and not args.workload:
            names = CROSS_BATCH_WORKLOADS
        config = SuiteConfig(
            model_dir=args.model or default_model_dir(), quick=args.quick, workloads=names,
            systems=tuple(args.system) if args.system else None, with_vllm=args.with_vllm,
            dtype=args.dtype, out_dir=args.out, json_path=args.json,
            num_workers=args.workers, repeat=args.repeat,
            num_threads=resolve_num_threads(args.threads),
            command="helium-trt bench " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "")
        if args.cross_batch:
            report, _, paths = run_cross_batch_suite(config, args.overlap, progress,
                                                    args.interlude)
        else:
            report, _, paths = run_suite(config, progress)
    except (ValueError, HeliumError) as exc:
        print(f"helium-trt bench: {exc}", file=sys.stderr)
        return 2
    for target in report.get("targets", ()):
        mark = "met " if target["met"] else "MISS"
        print(f"[{mark}] {target['target']}: {target['value']:.2f}  ({target['why']})")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
