#include "common.h"

/* Fused elementwise steps of the decoder layer, bf16 in and out, float32 inside, each one pass
   over its rows (torch runs each as several ops, every one reading and writing the whole batch
   and rounding to bf16 in between). Without AVX512-BF16 the functions return 2 and the model
   keeps torch's ops. */
#if HAVE_AVX512_BF16
static inline void vstore_bf16(uint16_t *p, __m512 x) { _mm256_storeu_si256((__m256i *)p, (__m256i)_mm512_cvtneps_pbh(x)); }
/* the first `count` (<= 16) lanes only */
static inline __m512 vload_bf16_part(const uint16_t *p, int64_t count) {
    __mmask16 m = (__mmask16)((1u << count) - 1);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
static inline void vstore_bf16_part(uint16_t *p, __m512 x, int64_t count) {
    _mm256_mask_storeu_epi16(p, (__mmask16)((1u << count) - 1), (__m256i)_mm512_cvtneps_pbh(x));
}
#endif

/* hidden += residual (rounded to bf16, as torch's add), then
   out = hidden * rsqrt(mean(hidden^2) + eps) * weight, rows of `size` (a multiple of 16).
   residual may be NULL (the first layer's norm). */
int add_rms_norm_bf16(uint16_t *hidden, const uint16_t *residual, const uint16_t *weight,
                      int64_t rows, int64_t size, float eps, uint16_t *out) {
#if HAVE_AVX512_BF16
    if (size % 16 != 0) return 2;
    for (int64_t r = 0; r < rows; r++) {
        uint16_t *h = hidden + r * size;
        __m512 sq = _mm512_setzero_ps();
        for (int64_t i = 0; i < size; i += 16) {
            __m512 x = vload_bf16(h + i);
            if (residual) {
                x = _mm512_cvtpbh_ps(_mm512_cvtneps_pbh(_mm512_add_ps(x, vload_bf16(residual + r * size + i))));
                vstore_bf16(h + i, x);
            }
            sq = _mm512_fmadd_ps(x, x, sq);
        }
        __m512 scale = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(sq) / (float)size + eps));
        for (int64_t i = 0; i < size; i += 16)
            vstore_bf16(out + r * size + i, _mm512_mul_ps(_mm512_mul_ps(vload_bf16(h + i), scale), vload_bf16(weight + i)));
    }
    return 0;
#else
    (void)hidden; (void)residual; (void)weight; (void)rows; (void)size; (void)eps; (void)out;
    return 2;
#endif
}

/* out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i], inter a multiple of 16 */
int silu_mul_bf16(const uint16_t *gate_up, int64_t rows, int64_t inter, uint16_t *out) {
#if HAVE_AVX512_BF16
    if (inter % 16 != 0) return 2;
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *g = gate_up + r * 2 * inter, *u = g + inter;
        for (int64_t i = 0; i < inter; i += 16) {
            __m512 x = vload_bf16(g + i);
            __m512 silu = _mm512_div_ps(x, _mm512_add_ps(one, vexp(_mm512_sub_ps(_mm512_setzero_ps(), x))));
            vstore_bf16(out + r * inter + i, _mm512_mul_ps(silu, vload_bf16(u + i)));
        }
    }
    return 0;
#else
    (void)gate_up; (void)rows; (void)inter; (void)out;
    return 2;
#endif
}

/* Rotate-half RoPE of q and k from the fused projection qkv [n, (heads + 2 kv_heads) dim], q into
   q_out [n, heads, dim], k and v into the layer's pool [kv_heads, pool_slots, dim] at slots[t].
   cos and sin are the model's tables [positions, dim] (bf16, as torch's path reads them). */
int rope_store_bf16(const uint16_t *qkv, int64_t n, const int64_t *positions, const uint16_t *cos,
                    const uint16_t *sin, const int64_t *slots, int64_t num_heads, int64_t num_kv_heads,
                    int64_t dim, uint16_t *k_cache, uint16_t *v_cache, int64_t pool_slots, uint16_t *q_out) {
#if HAVE_AVX512_BF16
    if (dim % 2 != 0) return 2;
    int64_t half = dim / 2, width = (num_heads + 2 * num_kv_heads) * dim;
    for (int64_t t = 0; t < n; t++) {
        const uint16_t *row = qkv + t * width, *c = cos + positions[t] * dim, *s = sin + positions[t] * dim;
        for (int64_t h = 0; h < num_heads + num_kv_heads; h++) {
            const uint16_t *x = row + h * dim;
            uint16_t *dst = h < num_heads ? q_out + (t * num_heads + h) * dim
                                          : k_cache + ((h - num_heads) * pool_slots + slots[t]) * dim;
            for (int64_t i = 0; i < half; i += 16) {
                int64_t k = half - i < 16 ? half - i : 16;
                __m512 lo = vload_bf16_part(x + i, k), hi = vload_bf16_part(x + half + i, k);
                /* out[i] = lo cos[i] - hi sin[i]; out[half + i] = hi cos[half + i] + lo sin[half + i] */
                vstore_bf16_part(dst + i, _mm512_fnmadd_ps(hi, vload_bf16_part(s + i, k),
                                                           _mm512_mul_ps(lo, vload_bf16_part(c + i, k))), k);
                vstore_bf16_part(dst + half + i, _mm512_fmadd_ps(lo, vload_bf16_part(s + half + i, k),
                                                                 _mm512_mul_ps(hi, vload_bf16_part(c + half + i, k))), k);
            }
        }
        for (int64_t h = 0; h < num_kv_heads; h++)
            memcpy(v_cache + (h * pool_slots + slots[t]) * dim, row + (num_heads + num_kv_heads + h) * dim,
                   sizeof(uint16_t) * (size_t)dim);
    }
    return 0;
#else
    (void)qkv; (void)n; (void)positions; (void)cos; (void)sin; (void)slots; (void)num_heads;
    (void)num_kv_heads; (void)dim; (void)k_cache; (void)v_cache; (void)pool_slots; (void)q_out;
    return 2;
#endif
}

/* 1 where this build has the fused bf16 kernels, else 0 */
int fused_supported(void) { return HAVE_AVX512_BF16; }
