"""`helium-trt bench-engine`: TTFT cold vs warm, decode throughput, prefill tokens/s and the
decode step cost, against transformers and (--with-vllm) vLLM CPU."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from helium_trt.engine.config import MODEL_DIR_ENV, default_device, default_model_dir
from helium_trt.errors import HeliumError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-engine", help="benchmark the embedded engine against transformers' generate and vLLM CPU")
    parser.add_argument("--model", type=Path, default=None,
                        help=f"model directory (default: ${MODEL_DIR_ENV} or {default_model_dir()})")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="engine compute dtype (transformers runs its default float32)")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--with-vllm", action="store_true",
                        help="also measure prefill tokens/s and the decode step on vLLM CPU (its "
                             "venv from benchmarks/setup_vllm.sh), same weights in bf16")
    parser.add_argument("--no-steps", action="store_true",
                        help="skip prefill tokens/s at 1,024 and 2,048 tokens and the decode step at 8")
    parser.add_argument("--device", default=None,
                        help="torch device of the engine: cpu, cuda, cuda:1 (default $HELIUM_DEVICE or cpu)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="torch threads (vLLM gets as many OpenMP threads; default 1)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from helium_trt.engine.embedded.bench import BenchConfig, run_bench
    from helium_trt.engine.embedded.bench_steps import NoisyMeasurementError, StepBenchConfig

    try:
        report = run_bench(BenchConfig(model_dir=args.model or default_model_dir(), run_hf=not args.no_hf,
                                      dtype=args.dtype, device=args.device or default_device(),
                                      num_threads=args.threads,
                                      steps=None if args.no_steps else StepBenchConfig(),
                                      with_vllm=args.with_vllm),
                           progress=lambda line: print(line, flush=True))
    except (ValueError, HeliumError, NoisyMeasurementError) as exc:
        print(f"helium-trt bench-engine: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0
