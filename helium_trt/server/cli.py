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
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"helium_trt.server.commands.{name}").register(subparsers)
    return parser


def _version() -> str:
    """The installed distribution's version (package metadata), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("helium_trt")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from helium_trt import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
