"""What this CPU offers the embedded engine (native bf16), and the defaults for
``--dtype`` and ``--threads`` that follow from it (run, serve and the Triton stand-in share them).
"""

from __future__ import annotations

from pathlib import Path

DTYPES = ("float32", "bfloat16")

# x86 flags for native bf16 arithmetic (/proc/cpuinfo names): AVX512-BF16 dot products, or AMX
# tiles. Without them oneDNN emulates bf16 matmuls, and bf16 is not worth its lost precision.
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU computes bf16 natively and torch's oneDNN build can use it."""
    flags = cpu_flags() if flags is None else flags
    if not flags & _BF16_FLAGS:
        return False
    import torch

    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_dtype(requested: str | None) -> str:
    """``requested`` if given, else bfloat16 where the CPU has native bf16, else float32.

    NOTE: bf16 is the default because a whole run measured 1.3-3.3x faster than float32 on
    this machine (benchmarks/results/runtime_defaults.md); its outputs are not bit-identical
    to float32 and depend on how requests are batched, so anything compared token for token
    runs with float32.
    """
    if requested is not None:
        if requested not in DTYPES:
            from helium_trt.errors import InvalidRequestError

            raise InvalidRequestError(f"dtype {requested!r} is not one of {', '.join(DTYPES)}")
        return requested
    return "bfloat16" if has_native_bf16() else "float32"


def resolve_num_threads(requested: int | None) -> int:
    """``requested`` if given, else one torch thread (per engine worker: the setting is global).

    NOTE: not torch's default (one thread per core): on this 2-core machine shared with other
    processes, 2 threads made a run 2.0-10.7x slower than 1 (an OpenMP team waits at every
    barrier for a thread the OS has descheduled, and helium's own event loop is one more
    runnable thread; benchmarks/results/runtime_defaults.md). A machine of one's own may do
    better with ``--threads`` = its cores divided by the workers (not measured here).
    """
    if requested is not None:
        if requested < 1:
            from helium_trt.errors import InvalidRequestError

            raise InvalidRequestError(f"threads must be at least 1, got {requested}")
        return requested
    return 1
