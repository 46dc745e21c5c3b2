"""Native CPU kernel for decode attention over the paged KV pool, compiled on first use.

torch has no paged attention on CPU: decode attention gathered every sequence's blocks into a
padded copy (index_select), then ran small batched matmuls and a masked softmax over it. This
kernel reads each key and value row once, in place, through the block table, and accumulates
in float32. It is C compiled by the system's C compiler into a per-user cache, loaded with
ctypes (which releases the GIL during the call); where no compiler works, or
``HELIUM_NATIVE_KERNELS=0``, ``paged_decode()`` is None and the model keeps the torch path.

NOTE: single-threaded. The model uses it only while torch runs one thread (the default here,
see engine/embedded/cpu.py); with more threads torch's own kernels parallelize the gather path.
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

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <float.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

static inline float load_bf16(uint16_t x) { uint32_t u = (uint32_t)x << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t store_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float load_f32(float x) { return x; }
static inline float store_f32(float x) { return x; }

/* out[s, h] = softmax(scale * q[s, h] . K_s) V_s over the lengths[s] keys of sequence s, rows
   read in place from the pool [kv_heads, num_blocks, block_size, dim] through tables[s, :]. One
   (sequence, KV head) at a time: the query heads sharing the KV head are processed together, so
   each key and value row is read once; scores and sums in float32. */
#ifdef __AVX512F__
#define VEC 16
static inline __m512 vload_bf16(const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
static inline __m512 vload_f32(const float *p) { return _mm512_loadu_ps(p); }
/* exp(x) for x <= 0: Cephes' expf (range reduction by ln 2, degree-6 polynomial), about 1 ulp */
static inline __m512 vexp(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* Blocks sit anywhere in the pool, so the hardware prefetcher cannot guess the next one: ask
   for all of its cache lines while the current block is computed. */
static inline void prefetch_block(const void *p, int64_t bytes) {
    for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch((const char *)p + off, _MM_HINT_T0);
}

#define MAX_CHUNKS 16  /* dim up to 256 */
#define PAGED_SIMD(NAME, T, VLOAD)                                                                 \
static int NAME(const T *q, const T *keys, const T *values, const int64_t *table, int64_t len,     \
                int64_t group, int64_t block_size, int64_t dim, float scale, float *scores,        \
                float *acc, float *qf, float *out) {                                               \
    int64_t chunks = dim / VEC;                                                                     \
    for (int64_t j = 0; j < group; j++)                                                             \
        for (int64_t c = 0; c < chunks; c++)                                                        \
            _mm512_storeu_ps(qf + j * dim + c * VEC,                                                \
                             _mm512_mul_ps(VLOAD(q + j * dim + c * VEC), _mm512_set1_ps(scale)));   \
    for (int64_t t0 = 0, b = 0; t0 < len; t0 += block_size, b++) {                                  \
        const T *block = keys + table[b] * block_size * dim;                                        \
        int64_t n = len - t0 < block_size ? len - t0 : block_size;                                  \
        if (t0 + block_size < len) prefetch_block(keys + table[b + 1] * block_size * dim,           \
                                                  block_size * dim * (int64_t)sizeof(T));           \
        for (int64_t j = 0; j < group; j++) {  /* the block stays in L1 across the group */         \
            __m512 qj[MAX_CHUNKS];                                                                  \
            for (int64_t c = 0; c < chunks; c++) qj[c] = _mm512_loadu_ps(qf + j * dim + c * VEC);   \
            const T *row = block;                                                                   \
            for (int64_t i = 0; i < n; i++, row += dim) {                                           \
                __m512 dot = _mm512_mul_ps(qj[0], VLOAD(row));                                      \
                for (int64_t c = 1; c < chunks; c++) dot = _mm512_fmadd_ps(qj[c], VLOAD(row + c * VEC), dot); \
                scores[j * len + t0 + i] = _mm512_reduce_add_ps(dot);                               \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
    for (int64_t j = 0; j < group; j++) {                                                           \
        float *sj = scores + j * len, top = -FLT_MAX, sum = 0.0f;                                   \
        for (int64_t t = 0; t < len; t++) top = sj[t] > top ? sj[t] : top;                          \
        __m512 vtop = _mm512_set1_ps(top), vsum = _mm512_setzero_ps();                              \
        int64_t t = 0;                                                                              \
        for (; t + VEC <= len; t += VEC) {                                                          \
            __m512 e = vexp(_mm512_sub_ps(_mm512_loadu_ps(sj + t), vtop));                          \
            _mm512_storeu_ps(sj + t, e); vsum = _mm512_add_ps(vsum, e);                             \
        }                                                                                           \
        if (t < len) {                                                                              \
            __mmask16 m = (__mmask16)((1u << (len - t)) - 1);                                       \
            __m512 e = vexp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, sj + t), vtop));                 \
            _mm512_mask_storeu_ps(sj + t, m, e); vsum = _mm512_add_ps(vsum, _mm512_maskz_mov_ps(m, e)); \
        }                                                                                           \
        sum = _mm512_reduce_add_ps(vsum);                                                           \
        acc[j] = 1.0f / sum;  /* stash; the accumulators follow at acc + group */                   \
    }                                                                                               \
    float *accs = acc + group;                                                                      \
    memset(accs, 0, sizeof(float) * (size_t)(group * dim));                                         \
    for (int64_t t0 = 0, b = 0; t0 < len; t0 += block_size, b++) {                                  \
        const T *block = values + table[b] * block_size * dim;                                      \
        int64_t n = len - t0 < block_size ? len - t0 : block_size;                                  \
        if (t0 + block_size < len) prefetch_block(values + table[b + 1] * block_size * dim,         \
                                                  block_size * dim * (int64_t)sizeof(T));           \
        for (int64_t j = 0; j < group; j++) {  /* the block stays in L1 across the group */         \
            __m512 a[MAX_CHUNKS];                                                                   \
            float *aj = accs + j * dim;                                                             \
            const float *pj = scores + j * len + t0;                                                \
            for (int64_t c = 0; c < chunks; c++) a[c] = _mm512_loadu_ps(aj + c * VEC);              \
            const T *row = block;                                                                   \
            for (int64_t i = 0; i < n; i++, row += dim) {                                           \
                __m512 p = _mm512_set1_ps(pj[i]);                                                   \
                for (int64_t c = 0; c < chunks; c++) a[c] = _mm512_fmadd_ps(p, VLOAD(row + c * VEC), a[c]); \
            }                                                                                       \
            for (int64_t c = 0; c < chunks; c++) _mm512_storeu_ps(aj + c * VEC, a[c]);              \
        }                                                                                           \
    }                                                                                               \
    for (int64_t j = 0; j < group; j++)                                                             \
        for (int64_t d = 0; d < dim; d++) out[j * dim + d] = accs[j * dim + d] * acc[j];            \
    return 0;                                                                                       \
}
PAGED_SIMD(simd_bf16, uint16_t, vload_bf16)
PAGED_SIMD(simd_f32, float, vload_f32)
#endif

/* Portable fallback (no AVX-512, or a head dim that is not a multiple of 16). */
#define PAGED_SCALAR(NAME, T, LOAD)                                                                \
static int NAME(const T *q, const T *keys, const T *values, const int64_t *table, int64_t len,     \
                int64_t group, int64_t block_size, int64_t dim, float scale, float *scores,        \
                float *acc, float *qf, float *out) {                                               \
    for (int64_t i = 0; i < group * dim; i++) qf[i] = LOAD(q[i]) * scale;                           \
    for (int64_t t = 0; t < len; t++) {                                                             \
        const T *k = keys + (table[t / block_size] * block_size + t % block_size) * dim;            \
        for (int64_t j = 0; j < group; j++) {                                                       \
            float dot = 0.0f;                                                                       \
            for (int64_t d = 0; d < dim; d++) dot += qf[j * dim + d] * LOAD(k[d]);                  \
            scores[j * len + t] = dot;                                                              \
        }                                                                                           \
    }                                                                                               \
    for (int64_t j = 0; j < group; j++) {                                                           \
        float *sj = scores + j * len, top = -FLT_MAX, sum = 0.0f;                                   \
        for (int64_t t = 0; t < len; t++) top = sj[t] > top ? sj[t] : top;                          \
        for (int64_t t = 0; t < len; t++) { sj[t] = expf(sj[t] - top); sum += sj[t]; }              \
        acc[j] = 1.0f / sum;                                                                        \
    }                                                                                               \
    float *accs = acc + group;                                                                      \
    memset(accs, 0, sizeof(float) * (size_t)(group * dim));                                         \
    for (int64_t t = 0; t < len; t++) {                                                             \
        const T *v = values + (table[t / block_size] * block_size + t % block_size) * dim;          \
        for (int64_t j = 0; j < group; j++)                                                         \
            for (int64_t d = 0; d < dim; d++) accs[j * dim + d] += scores[j * len + t] * LOAD(v[d]); \
    }                                                                                               \
    for (int64_t j = 0; j < group; j++)                                                             \
        for (int64_t d = 0; d < dim; d++) out[j * dim + d] = accs[j * dim + d] * acc[j];            \
    return 0;                                                                                       \
}
PAGED_SCALAR(scalar_bf16, uint16_t, load_bf16)
PAGED_SCALAR(scalar_f32, float, load_f32)

#ifdef __AVX512F__
#define PICK(SIMD, SCALAR) ((dim % VEC == 0 && dim <= VEC * MAX_CHUNKS) ? SIMD : SCALAR)
#else
#define PICK(SIMD, SCALAR) SCALAR
#endif

#define PAGED_DECODE(NAME, T, STORE, SIMD, SCALAR)                                                 \
int NAME(const T *q, const T *k_cache, const T *v_cache, const int64_t *tables,                     \
         int64_t table_stride, const int64_t *lengths, int64_t num_seqs, int64_t num_heads,         \
         int64_t num_kv_heads, int64_t num_blocks, int64_t block_size, int64_t dim, float scale,    \
         T *out) {                                                                                  \
    int64_t group = num_heads / num_kv_heads, max_len = 0;                                          \
    for (int64_t s = 0; s < num_seqs; s++) max_len = lengths[s] > max_len ? lengths[s] : max_len;  \
    float *scores = malloc(sizeof(float) * (size_t)(group * max_len + VECPAD));                     \
    float *acc = malloc(sizeof(float) * (size_t)(group * dim + group));                             \
    float *qf = malloc(sizeof(float) * (size_t)(group * dim));                                      \
    float *res = malloc(sizeof(float) * (size_t)(group * dim));                                     \
    if (!scores || !acc || !qf || !res) { free(scores); free(acc); free(qf); free(res); return 1; } \
    int64_t head_stride = num_blocks * block_size * dim;                                            \
    for (int64_t s = 0; s < num_seqs; s++)                                                          \
        for (int64_t h = 0; h < num_kv_heads; h++) {                                                \
            PICK(SIMD, SCALAR)(q + (s * num_heads + h * group) * dim, k_cache + h * head_stride,    \
                               v_cache + h * head_stride, tables + s * table_stride, lengths[s],    \
                               group, block_size, dim, scale, scores, acc, qf, res);               \
            T *o = out + (s * num_heads + h * group) * dim;                                         \
            for (int64_t i = 0; i < group * dim; i++) o[i] = STORE(res[i]);                         \
        }                                                                                           \
    free(scores); free(acc); free(qf); free(res);                                                   \
    return 0;                                                                                       \
}
#define VECPAD 16
PAGED_DECODE(paged_decode_bf16, uint16_t, store_bf16, simd_bf16, scalar_bf16)
PAGED_DECODE(paged_decode_f32, float, store_f32, simd_f32, scalar_f32)
"""

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


def paged_decode() -> PagedDecode | None:
    """The kernel, compiled and loaded once per process; None where unavailable."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None
    with _lock:
        if "paged" not in _loaded:
            _loaded["paged"] = _load()
        return _loaded["paged"]  # type: ignore[return-value]


def _load() -> PagedDecode | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.warning("no C compiler found: decode attention uses torch's gather path")
        return None
    try:
        return PagedDecode(ctypes.CDLL(str(_build(compiler))))
    except (OSError, subprocess.SubprocessError, AttributeError) as exc:
        log.warning("native paged decode kernel unavailable (%s): using torch's gather path", exc)
        return None


def _build(compiler: str) -> Path:
    """The shared library for this source, flags, compiler and CPU, built once per cache.

    NOTE: -march=native ties the library to this CPU; the CPU's flags are part of its key, so a
    cache directory shared across machines never hands one a library built for another.
    """
    from helium_trt.engine.embedded.cpu import cpu_flags

    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([_SOURCE, *_FLAGS, version, platform.machine(),
                                    " ".join(sorted(cpu_flags()))]).encode()).hexdigest()[:16]
    directory = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "helium_trt" / "native")
    target = directory / f"paged_decode_{key}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        source = Path(tmp) / "paged_decode.c"
        source.write_text(_SOURCE)
        built = Path(tmp) / target.name
        result = subprocess.run([compiler, *_FLAGS, "-o", str(built), str(source), "-lm"],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise OSError(f"{compiler} failed: {result.stderr.strip()[-500:]}")
        os.replace(built, target)  # atomic: processes building at once each install a whole file
    return target
