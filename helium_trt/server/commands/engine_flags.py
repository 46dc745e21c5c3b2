"""``--threads``, ``--dtype`` and ``--device``: the embedded engine's runtime flags, shared by
`run` and `serve` (not a command itself; cli.COMMAND_MODULES does not list it)."""

from __future__ import annotations

import argparse

from helium_trt.engine.embedded.cpu import DTYPES


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N",
        help="torch intra-op threads per embedded engine worker (default 1: on a shared 2-core "
             "machine torch's one thread per core made a run 2-11x slower; on a machine of "
             "your own, try its cores divided by the workers)")
    parser.add_argument(
        "--dtype", choices=DTYPES, default=None,
        help="embedded engine compute dtype (default bfloat16 where the CPU computes it natively "
             "(avx512_bf16/amx_bf16), else float32); bfloat16 outputs depend on how requests "
             "are batched, float32 ones do not")
    parser.add_argument(
        "--device", default=None, metavar="DEVICE",
        help="torch device of the embedded engine: cpu, cuda, cuda:1 (default $HELIUM_DEVICE or "
             "cpu); the same engine on a GPU, its weights and KV cache there")


def engine_runtime(args: argparse.Namespace) -> dict:
    """EngineConfig keyword arguments for the flags: ``num_threads``, ``dtype`` and ``device``,
    resolved."""
    from helium_trt.engine.config import default_device
    from helium_trt.engine.embedded.cpu import resolve_dtype, resolve_num_threads

    return {"num_threads": resolve_num_threads(args.threads),
            "dtype": resolve_dtype(args.dtype), "device": args.device or default_device()}


def describe(engine) -> str:
    """What an embedded engine computes with, read back from it (for the commands' stderr)."""
    import torch

    dtype = str(engine.model.dtype).removeprefix("torch.")
    return (f"embedded engine: {dtype}, {torch.get_num_threads()} torch thread(s), "
            f"on {engine.model.device}")
