"""`helium-trt` command line: one subcommand per module in helium_trt.server.commands.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int`` as the handler. Exit status 2 means bad input (argparse's convention).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order here is the order `helium-trt --help` lists them.
COMMAND_MODULES = (
    "explain",
    "run",
    "serve",
    "model",
    "bench_engine",
    "bench",
    "triton",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="helium-trt",
        description=(
            "Workflow-aware LLM serving: plan a whole agentic workflow like a database query, "
            "share prompt prefixes in the KV cache, and run it on the embedded CPU engine or "
            "on Triton / TensorRT-LLM."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"helium_trt.server.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
