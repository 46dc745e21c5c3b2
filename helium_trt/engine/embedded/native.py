"""Native CPU kernels for attention over the paged KV pool, compiled on first use.

torch has no paged attention on CPU. Decode attention gathered every sequence's blocks into a
padded copy (index_select), then ran small batched matmuls and a masked softmax over it; the
decode kernel reads each key and value row once, in place, through the block table. Prefill
attention gathered the context and ran a softmax per block of queries over bf16 scores; the
prefill kernel (bf16, AVX512-BF16 only) packs each KV head's keys and values once and runs a
flash-style pass: scores, running max and sum, and the product with V in one sweep, in float32.
The fused elementwise kernels (``FusedOps``) do each decoder layer's residual add + RMS norm,
SiLU gate and RoPE + KV store in one pass. The C sources are ``csrc/*.c``, compiled together by
the system's C compiler into a per-user cache and loaded with ctypes (which releases the GIL
during a call); where no compiler works, or ``HELIUM_NATIVE_KERNELS=0``, ``paged_decode()``,
``paged_prefill()`` and ``fused_ops()`` are None and the model keeps torch's path.

NOTE: single-threaded. The model uses them only while torch runs one thread (the default here,
see engine/embedded/cpu.py); with more threads torch's own kernels parallelize.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DISABLE_ENV = "HELIUM_NATIVE_KERNELS"
CACHE_ENV = "HELIUM_NATIVE_CACHE"

_SOURCE_DIR = Path(__file__).with_name("csrc")

# Reassociation lets the compiler vectorize the dot products (float sums in another order: the
# result differs from a sequential sum by rounding only); errno-free expf.
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros",
          "-fno-trapping-math", "-shared", "-fPIC")

_lock = threading.Lock()
_loaded: dict[str, object] = {}


class PagedDecode:
    """Decode attention of one group: ``__call__(q, k_cache, v_cache, tables, lengths, scale)``.

    q [seqs, heads, dim]; k_cache, v_cache [kv_heads, blocks, block_size, dim] (one layer, bf16
    or float32, contiguous); tables [seqs, >= blocks used] and lengths [seqs] int64 (rows past
    a sequence's length are never read). Returns [seqs, heads, dim] in q's dtype.
    """

    def __init__(self, lib: ctypes.CDLL):
        self._functions = {torch.bfloat16: lib.paged_decode_bf16, torch.float32: lib.paged_decode_f32}
        for function in self._functions.values():
            function.restype = ctypes.c_int
            function.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_void_p] + \
                [ctypes.c_int64] * 6 + [ctypes.c_float, ctypes.c_void_p]

    def supports(self, dtype: torch.dtype) -> bool:
        return dtype in self._functions

    def __call__(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 tables: torch.Tensor, lengths: torch.Tensor, scale: float) -> torch.Tensor:
        if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
            raise ValueError("paged decode: the KV pool must be contiguous")
        q = q.contiguous()
        tables = tables.to(torch.int64).contiguous()
        lengths = lengths.to(torch.int64).contiguous()
        num_seqs, num_heads, dim = q.shape
        num_kv_heads, num_blocks, block_size, _ = k_cache.shape
        out = torch.empty_like(q)
        status = self._functions[q.dtype](
            q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), tables.data_ptr(), tables.shape[1],
            lengths.data_ptr(), num_seqs, num_heads, num_kv_heads, num_blocks, block_size, dim,
            scale, out.data_ptr())
        if status != 0:
            raise MemoryError("paged decode: out of memory for the attention scores")
        return out


class PagedPrefill:
    """Causal prefill attention of one chunk: ``__call__(q, k_cache, v_cache, table,
    context_len, scale)``.

    q [n, heads, dim] bf16, the chunk's queries: the context's last n positions; k_cache,
    v_cache [kv_heads, blocks, block_size, dim] (one layer, bf16, contiguous, the chunk's own
    keys already written); table [>= blocks holding context_len keys] int64. Returns [n, heads,
    dim] bf16.
    """

    def __init__(self, lib: ctypes.CDLL):
        self._function = lib.paged_prefill_bf16
        self._function.restype = ctypes.c_int
        self._function.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 7 + \
            [ctypes.c_float, ctypes.c_void_p]

    @staticmethod
    def supports(dtype: torch.dtype, head_dim: int) -> bool:
        return dtype == torch.bfloat16 and head_dim % 16 == 0 and head_dim <= 256

    def __call__(self, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 table: torch.Tensor, context_len: int, scale: float) -> torch.Tensor:
        if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
            raise ValueError("paged prefill: the KV pool must be contiguous")
        q = q.contiguous()
        table = table.to(torch.int64).contiguous()
        num_tokens, num_heads, dim = q.shape
        num_kv_heads, num_blocks, block_size, _ = k_cache.shape
        if table.numel() * block_size < context_len or not 0 < num_tokens <= context_len:
            raise ValueError(f"paged prefill: {num_tokens} queries, {context_len} keys and "
                             f"{table.numel()} blocks of {block_size} do not fit together")
        out = torch.empty_like(q)
        status = self._function(
            q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), table.data_ptr(), context_len,
            num_tokens, num_heads, num_kv_heads, num_blocks, block_size, dim, scale, out.data_ptr())
        if status == 1:
            raise MemoryError("paged prefill: out of memory for the packed keys and values")
        if status != 0:
            raise ValueError(f"paged prefill: shape not supported (head dim {dim})")
        return out


class FusedOps:
    """The decoder layer's elementwise steps in one pass each, bf16 (``csrc/elementwise.c``):
    the same interface as the model's torch ops (``model.TorchOps``).

    NOTE: float32 inside and one rounding to bf16 at the end, where torch rounds after every op:
    results differ from torch's by bf16 rounding, never more (tests/integration/test_engine_model.py).
    """

    def __init__(self, lib: ctypes.CDLL):
        p, i, f = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
        self._norm, self._silu, self._rope = lib.add_rms_norm_bf16, lib.silu_mul_bf16, lib.rope_store_bf16
        for function, argtypes in ((self._norm, [p, p, p, i, i, f, p]), (self._silu, [p, i, i, p]),
                                   (self._rope, [p, i, p, p, p, p, i, i, i, p, p, i, p])):
            function.restype = ctypes.c_int
            function.argtypes = argtypes

    @staticmethod
    def supports(dtype: torch.dtype, hidden_size: int, intermediate_size: int) -> bool:
        return dtype == torch.bfloat16 and hidden_size % 16 == 0 and intermediate_size % 16 == 0

    def add_rms_norm(self, hidden: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden + residual, its RMS norm); hidden [tokens, size] is updated in place."""
        out = torch.empty_like(hidden)
        _check(self._norm(hidden.data_ptr(), None if residual is None else residual.data_ptr(),
                          weight.data_ptr(), hidden.shape[0], hidden.shape[1], eps, out.data_ptr()))
        return hidden, out

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up of the fused projection [tokens, 2 inter] (gate first)."""
        rows, inter = gate_up.shape[0], gate_up.shape[1] // 2
        out = torch.empty(rows, inter, dtype=gate_up.dtype)
        _check(self._silu(gate_up.data_ptr(), rows, inter, out.data_ptr()))
        return out

    @staticmethod
    def rope_tables(cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor) -> tuple:
        return cos, sin, positions.to(torch.int64).contiguous()

    def rope_store(self, qkv: torch.Tensor, rope: tuple, slots: torch.Tensor, k_cache: torch.Tensor,
                   v_cache: torch.Tensor, num_heads: int) -> torch.Tensor:
        """q [tokens, heads, dim] after RoPE; k (after RoPE) and v written to their slots of the
        layer's pool [kv_heads, blocks, block_size, dim]."""
        cos, sin, positions = rope
        num_kv_heads, num_blocks, block_size, dim = k_cache.shape
        slots = slots.to(torch.int64).contiguous()
        q = torch.empty(qkv.shape[0], num_heads, dim, dtype=qkv.dtype)
        _check(self._rope(qkv.data_ptr(), qkv.shape[0], positions.data_ptr(), cos.data_ptr(), sin.data_ptr(),
                          slots.data_ptr(), num_heads, num_kv_heads, dim, k_cache.data_ptr(),
                          v_cache.data_ptr(), num_blocks * block_size, q.data_ptr()))
        return q


def _check(status: int) -> None:
    if status != 0:
        raise ValueError(f"native fused op: shape not supported (status {status})")


def paged_decode() -> PagedDecode | None:
    """The decode kernel, compiled and loaded once per process; None where unavailable."""
    return _kernels()[0]


def paged_prefill() -> PagedPrefill | None:
    """The bf16 prefill kernel; None where unavailable (no compiler, or a CPU without
    AVX512-BF16, where the library builds without it)."""
    return _kernels()[1]


def fused_ops() -> FusedOps | None:
    """The fused bf16 elementwise kernels; None where unavailable (as ``paged_prefill``)."""
    return _kernels()[2]


def _kernels() -> tuple[PagedDecode | None, PagedPrefill | None, FusedOps | None]:
    """The kernels, built and loaded once per process (None where unavailable)."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None, None, None
    loaded = _loaded.get("kernels")  # the model asks a few times a layer: no lock once loaded
    if loaded is not None:
        return loaded  # type: ignore[return-value]
    with _lock:
        if "kernels" not in _loaded:
            lib = _load()
            _loaded["kernels"] = (None, None, None) if lib is None else (
                PagedDecode(lib), PagedPrefill(lib) if lib.paged_prefill_supported() else None,
                FusedOps(lib) if lib.fused_supported() else None)
        return _loaded["kernels"]  # type: ignore[return-value]


def _load() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.warning("no C compiler found: attention uses torch's kernels")
        return None
    try:
        return ctypes.CDLL(str(_build(compiler)))
    except (OSError, subprocess.SubprocessError, AttributeError) as exc:
        log.warning("native attention kernels unavailable (%s): using torch's kernels", exc)
        return None


def _build(compiler: str) -> Path:
    """The shared library for this source, flags, compiler and CPU, built once per cache.

    NOTE: -march=native ties the library to this CPU; the CPU's flags are part of its key, so a
    cache directory shared across machines never hands one a library built for another.
    """
    from helium_trt.engine.embedded.cpu import cpu_flags

    sources = {path.name: path.read_text() for path in sorted(_SOURCE_DIR.glob("*.[ch]"))}
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([*(f"{name}\0{text}" for name, text in sources.items()), *_FLAGS,
                                    version, platform.machine(),
                                    " ".join(sorted(cpu_flags()))]).encode()).hexdigest()[:16]
    directory = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "helium_trt" / "native")
    target = directory / f"kernels_{key}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for name, text in sources.items():
            (Path(tmp) / name).write_text(text)
        built = Path(tmp) / target.name
        c_files = [str(Path(tmp) / name) for name in sources if name.endswith(".c")]
        result = subprocess.run([compiler, *_FLAGS, "-I", tmp, "-o", str(built), *c_files, "-lm"],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise OSError(f"{compiler} failed: {result.stderr.strip()[-500:]}")
        os.replace(built, target)  # atomic: processes building at once each install a whole file
    return target
