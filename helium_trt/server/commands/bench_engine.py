"""`helium-trt bench-engine`: TTFT cold vs warm and decode throughput, against transformers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from helium_trt.engine.config import MODEL_DIR_ENV, default_model_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench-engine", help="benchmark the embedded CPU engine against transformers' generate")
    parser.add_argument("--model", type=Path, default=None,
                        help=f"model directory (default: ${MODEL_DIR_ENV} or {default_model_dir()})")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="engine compute dtype (transformers runs its default float32)")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from helium_trt.engine.bench import BenchConfig, run_bench

    report = run_bench(BenchConfig(model_dir=args.model or default_model_dir(), run_hf=not args.no_hf,
                                  dtype=args.dtype),
                       progress=lambda line: print(line, flush=True))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0
