#include "common.h"

/* out[s, h] = softmax(scale * q[s, h] . K_s) V_s over the lengths[s] keys of sequence s, rows
   read in place from the pool [kv_heads, num_blocks, block_size, dim] through tables[s, :]. One
   (sequence, KV head) at a time: the query heads sharing the KV head are processed together, so
   each key and value row is read once; scores and sums in float32. */
#ifdef __AVX512F__
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

/* bf16 on a CPU with AVX512-BF16, head dim a multiple of 32: the same two passes, no row ever
   converted to float32. Scores: _mm512_dpbf16_ps of a query head's bf16 q (unscaled: the scale
   multiplies the float32 score, no extra rounding) with the key's row as stored, 16 keys at a
   time, their 16 partial-sum vectors summed by a transposing add tree into one vector of 16
   scores. Values: two keys' rows interleaved in registers (unpack), so one dpbf16 adds
   p[2i] v[2i] + p[2i+1] v[2i+1] over 16 dims; each pair is read and interleaved once for all
   the query heads of the group. As in the prefill kernel, the probabilities are rounded to bf16
   for the product with V, and the sum divided by is that of the rounded values.
   NOTE: that rounding puts the error at about 1.3x that of rounding the exact result to bf16
   (1.0x on the float32 paths); carrying each probability as two bf16 (p = hi + lo) removed it
   but gave back two thirds of the gain on a decode step (1.04x instead of 1.12x at 8 sequences). */
#if HAVE_AVX512_BF16
#define DOT_TILE 16   /* keys per score vector */
#define DOT_AHEAD 96  /* keys prefetched ahead (the blocks sit anywhere); 64 to 256 within 3% */
static const uint16_t dot_zero_row[256] __attribute__((aligned(64)));

/* rows[i] = key t0 + i through the table, the zero row from len on */
static inline void dot_rows(const uint16_t *cache, const int64_t *table, int64_t t0, int64_t len,
                            int64_t block_size, int64_t dim, const uint16_t **rows) {
    int64_t b = t0 / block_size, o = t0 % block_size;
    for (int i = 0; i < DOT_TILE; i++) {
        rows[i] = t0 + i < len ? cache + (table[b] * block_size + o) * dim : dot_zero_row;
        if (++o == block_size) { o = 0; b++; }
    }
}

/* always_inline: GCC's pure-const pass takes a prefetch-only function for one without effects
   and drops the calls */
static inline __attribute__((always_inline)) void dot_prefetch(const uint16_t *cache, const int64_t *table,
                                                               int64_t t0, int64_t len, int64_t block_size,
                                                               int64_t dim) {
    const uint16_t *rows[DOT_TILE];
    if (t0 >= len) return;
    dot_rows(cache, table, t0, len, block_size, dim, rows);
    for (int i = 0; i < DOT_TILE && t0 + i < len; i++)
        for (int64_t off = 0; off < dim * 2; off += 64) _mm_prefetch((const char *)rows[i] + off, _MM_HINT_T0);
}

/* per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] */
static inline __m512 dot_add2(__m512 a, __m512 b) {
    return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
}
/* per 128-bit lane L: the lane-L sums of a, b, c, d, given dot_add2(a, b) and dot_add2(c, d) */
static inline __m512 dot_add4(__m512 ab, __m512 cd) {
    __m512d x = _mm512_castps_pd(ab), y = _mm512_castps_pd(cd);
    return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
}
/* lane 4k + i: the whole sum of vector i behind w[k] (each from dot_add4) */
static inline __m512 dot_add16(const __m512 *w) {
    __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x44), _mm512_shuffle_f32x4(w[0], w[1], 0xee));
    __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(w[2], w[3], 0x44), _mm512_shuffle_f32x4(w[2], w[3], 0xee));
    return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xdd));
}

/* one query head (chunks of 32 bf16) against 16 key rows: lane i = q . key i */
static inline __attribute__((always_inline)) __m512 dot_tile(const uint16_t *q, const uint16_t *const *rows,
                                                             int chunks) {
    __m512 w[4];
    for (int g = 0; g < 4; g++) {
        __m512 d[4];
        for (int i = 0; i < 4; i++) {
            d[i] = _mm512_setzero_ps();
            for (int c = 0; c < chunks; c++)
                d[i] = _mm512_dpbf16_ps(d[i], (__m512bh)_mm512_loadu_si512(q + 32 * c),
                                        (__m512bh)_mm512_loadu_si512(rows[4 * g + i] + 32 * c));
        }
        w[g] = dot_add4(dot_add2(d[0], d[1]), dot_add2(d[2], d[3]));
    }
    return dot_add16(w);
}

/* scores[j * padded + t] = scale q_j . key t for every head of the group, -inf from len on */
static inline __attribute__((always_inline)) void dot_scores(
        const uint16_t *q, const uint16_t *keys, const int64_t *table, int64_t len, int64_t padded,
        int64_t group, int64_t block_size, int64_t dim, float scale, float *scores, int chunks) {
    for (int64_t t0 = 0; t0 < len; t0 += DOT_TILE) {
        const uint16_t *rows[DOT_TILE];
        dot_rows(keys, table, t0, len, block_size, dim, rows);
        dot_prefetch(keys, table, t0 + DOT_AHEAD, len, block_size, dim);
        __mmask16 live = len - t0 >= DOT_TILE ? 0xffff : (__mmask16)((1u << (len - t0)) - 1);
        for (int64_t j = 0; j < group; j++) {
            __m512 s = _mm512_mul_ps(dot_tile(q + j * dim, rows, chunks), _mm512_set1_ps(scale));
            _mm512_storeu_ps(scores + j * padded + t0, _mm512_mask_blend_ps(live, _mm512_set1_ps(-INFINITY), s));
        }
    }
}

/* p[j * padded + t] = bf16 exp(score - max) of each head (0 from len on); inv[j] = 1 / their sum */
static void dot_softmax(const float *scores, int64_t padded, int64_t group, uint16_t *p, float *inv) {
    for (int64_t j = 0; j < group; j++) {
        const float *sj = scores + j * padded;
        __m512 vmax = _mm512_set1_ps(-INFINITY), vsum = _mm512_setzero_ps();
        for (int64_t t = 0; t < padded; t += DOT_TILE) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(sj + t));
        __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
        for (int64_t t = 0; t < padded; t += DOT_TILE) {
            __m512 x = _mm512_loadu_ps(sj + t);
            __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
            __m256bh e = _mm512_cvtneps_pbh(_mm512_maskz_mov_ps(live, vexp(_mm512_sub_ps(x, top))));
            vsum = _mm512_add_ps(vsum, _mm512_cvtpbh_ps(e));
            _mm256_storeu_si256((__m256i *)(p + j * padded + t), (__m256i)e);
        }
        inv[j] = 1.0f / _mm512_reduce_add_ps(vsum);
    }
}

/* res[j * dim + d] = inv[j] sum_t p[j, t] v[t][d] for heads j < heads (p and res from head 0 of
   this call), key pairs interleaved in registers: lane 4L + k of the low half of chunk c holds
   dim 32c + 8L + k, of the high half dim 32c + 8L + 4 + k */
static inline __attribute__((always_inline)) void dot_values(
        const uint16_t *values, const int64_t *table, int64_t len, int64_t padded, int64_t block_size,
        int64_t dim, const uint16_t *p, const float *inv, int heads, int chunks, float *res) {
    __m512 acc[8][16];
    for (int j = 0; j < heads; j++)
        for (int c = 0; c < 2 * chunks; c++) acc[j][c] = _mm512_setzero_ps();
    for (int64_t t0 = 0; t0 < len; t0 += DOT_TILE) {
        const uint16_t *rows[DOT_TILE];
        dot_rows(values, table, t0, len, block_size, dim, rows);
        dot_prefetch(values, table, t0 + DOT_AHEAD, len, block_size, dim);
        int64_t pairs = len - t0 >= DOT_TILE ? DOT_TILE / 2 : (len - t0 + 1) / 2;
        for (int64_t i = 0; i < pairs; i++) {
            __m512i lo[8], hi[8];
            for (int c = 0; c < chunks; c++) {
                __m512i a = _mm512_loadu_si512(rows[2 * i] + 32 * c), b = _mm512_loadu_si512(rows[2 * i + 1] + 32 * c);
                lo[c] = _mm512_unpacklo_epi16(a, b);
                hi[c] = _mm512_unpackhi_epi16(a, b);
            }
            for (int j = 0; j < heads; j++) {
                uint32_t pair;
                memcpy(&pair, p + j * padded + t0 + 2 * i, 4);
                __m512bh pb = (__m512bh)_mm512_set1_epi32((int)pair);
                for (int c = 0; c < chunks; c++) {
                    acc[j][2 * c] = _mm512_dpbf16_ps(acc[j][2 * c], pb, (__m512bh)lo[c]);
                    acc[j][2 * c + 1] = _mm512_dpbf16_ps(acc[j][2 * c + 1], pb, (__m512bh)hi[c]);
                }
            }
        }
    }
    for (int j = 0; j < heads; j++)
        for (int c = 0; c < chunks; c++) {
            float lanes[2][16];
            _mm512_storeu_ps(lanes[0], _mm512_mul_ps(acc[j][2 * c], _mm512_set1_ps(inv[j])));
            _mm512_storeu_ps(lanes[1], _mm512_mul_ps(acc[j][2 * c + 1], _mm512_set1_ps(inv[j])));
            for (int l = 0; l < 4; l++)
                for (int k = 0; k < 4; k++) {
                    res[j * dim + 32 * c + 8 * l + k] = lanes[0][4 * l + k];
                    res[j * dim + 32 * c + 8 * l + 4 + k] = lanes[1][4 * l + k];
                }
        }
}

/* simd_bf16's signature (acc and qf unused); scores holds 2 group (len + 16) floats: the scores,
   then the bf16 probabilities */
static int dot_bf16(const uint16_t *q, const uint16_t *keys, const uint16_t *values, const int64_t *table,
                    int64_t len, int64_t group, int64_t block_size, int64_t dim, float scale, float *scores,
                    float *acc, float *qf, float *out) {
    (void)acc; (void)qf;
    int chunks = (int)(dim / 32);
    int64_t padded = (len + DOT_TILE - 1) / DOT_TILE * DOT_TILE;
    uint16_t *p = (uint16_t *)(scores + group * padded);
    float inv[group];
    for (int64_t t = 0; t < DOT_AHEAD; t += DOT_TILE) dot_prefetch(keys, table, t, len, block_size, dim);
    /* constant chunk and head counts for the common head dims let the accumulators stay in registers */
    if (chunks == 2) dot_scores(q, keys, table, len, padded, group, block_size, dim, scale, scores, 2);
    else if (chunks == 4) dot_scores(q, keys, table, len, padded, group, block_size, dim, scale, scores, 4);
    else dot_scores(q, keys, table, len, padded, group, block_size, dim, scale, scores, chunks);
    for (int64_t t = 0; t < DOT_AHEAD; t += DOT_TILE) dot_prefetch(values, table, t, len, block_size, dim);
    dot_softmax(scores, padded, group, p, inv);
    int most = chunks <= 2 ? 4 : chunks <= 4 ? 2 : 1;  /* heads whose accumulators fit the registers */
    for (int64_t j = 0; j < group; j += most) {
        int heads = group - j < most ? (int)(group - j) : most;
        const uint16_t *pj = p + j * padded;
        float *oj = out + j * dim;
        if (chunks == 2 && heads == 3) dot_values(values, table, len, padded, block_size, dim, pj, inv + j, 3, 2, oj);
        else if (chunks == 2 && heads == 4) dot_values(values, table, len, padded, block_size, dim, pj, inv + j, 4, 2, oj);
        else if (chunks == 4 && heads == 2) dot_values(values, table, len, padded, block_size, dim, pj, inv + j, 2, 4, oj);
        else dot_values(values, table, len, padded, block_size, dim, pj, inv + j, heads, chunks, oj);
    }
    return 0;
}
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
    float *scores = malloc(sizeof(float) * (size_t)(2 * group * (max_len + VECPAD) + VECPAD));      \
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
#if HAVE_AVX512_BF16
static int pick_bf16(const uint16_t *q, const uint16_t *keys, const uint16_t *values, const int64_t *table,
                     int64_t len, int64_t group, int64_t block_size, int64_t dim, float scale, float *scores,
                     float *acc, float *qf, float *out) {
    return (dim % 32 == 0 ? dot_bf16 : simd_bf16)(q, keys, values, table, len, group, block_size, dim, scale,
                                                   scores, acc, qf, out);
}
#define SIMD_BF16 pick_bf16
#else
#define SIMD_BF16 simd_bf16  /* AVX-512 without BF16; PICK drops it without AVX-512 */
#endif
PAGED_DECODE(paged_decode_bf16, uint16_t, store_bf16, SIMD_BF16, scalar_bf16)
PAGED_DECODE(paged_decode_f32, float, store_f32, simd_f32, scalar_f32)

/* ---------------------------------------------------------------------------------------------
   Causal prefill attention of one chunk over the paged pool, bf16 in and out (flash-style).

   out[t, h] = softmax(scale * q[t, h] . K[0..first+t]) V[0..first+t] for the chunk's n tokens,
   whose first token sits at position first = context_len - n. Per KV head: its keys and values
   are read once through the block table into a packed copy (pairs of bf16 in the order
   AVX512-BF16's dot product wants), then blocks of PF_R query rows (token, query head of the
   group) walk the keys up to their last row's position PF_KB keys at a time: scores in float32,
   a running max and sum (online softmax), probabilities rounded to bf16 for the product with V,
   the output accumulated in float32. Key blocks past a row block's last position are never
   computed. Returns 2 where the CPU or the shape is not supported (the caller keeps torch's
   path), 1 when out of memory. */
#if HAVE_AVX512_BF16
#define PF_R 8      /* query rows per block */
#define PF_KB 128   /* keys per online-softmax step: eight tiles of 16 */

/* exp(x) with a degree-4 polynomial after the reduction by ln 2: relative error under 5e-5,
   far below the bf16 rounding (4e-3) the probabilities get before their product with V */
static inline __m512 vexp_bf16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693147180559945f), x);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 24), r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* the scores of PF_R rows against two 16-key tiles: acc[0..R) tile a, acc[R..2R) tile a+1 */
static inline void pf_scores2(const uint32_t *qs, const uint32_t *kt, int64_t pairs, __m512 *acc) {
    for (int i = 0; i < 2 * PF_R; i++) acc[i] = _mm512_setzero_ps();
    const uint32_t *kt2 = kt + pairs * 16;
    for (int64_t pp = 0; pp < pairs; pp++) {
        __m512bh k0 = (__m512bh)_mm512_loadu_si512(kt + pp * 16);
        __m512bh k1 = (__m512bh)_mm512_loadu_si512(kt2 + pp * 16);
        for (int i = 0; i < PF_R; i++) {
            __m512bh qb = (__m512bh)_mm512_set1_epi32((int)qs[i * pairs + pp]);
            acc[i] = _mm512_dpbf16_ps(acc[i], qb, k0);
            acc[PF_R + i] = _mm512_dpbf16_ps(acc[PF_R + i], qb, k1);
        }
    }
}

/* K of one KV head, tile by tile: word (tile, pair pp, key j) = dims 2pp, 2pp+1 of key j */
static void pf_pack_keys(const uint16_t *cache, const int64_t *table, int64_t len, int64_t padded,
                         int64_t block_size, int64_t dim, uint32_t *kp) {
    int64_t pairs = dim / 2;
    for (int64_t key = 0; key < padded; key++) {
        uint32_t *dst = kp + (key / 16) * pairs * 16 + key % 16;
        if (key >= len) { for (int64_t pp = 0; pp < pairs; pp++) dst[pp * 16] = 0; continue; }
        const uint32_t *src = (const uint32_t *)(cache + (table[key / block_size] * block_size + key % block_size) * dim);
        for (int64_t pp = 0; pp < pairs; pp++) dst[pp * 16] = src[pp];
    }
}

/* V of one KV head, key pair by key pair: word (pair jp, dim d) = v[2jp][d], v[2jp + 1][d] */
static void pf_pack_values(const uint16_t *cache, const int64_t *table, int64_t len, int64_t padded,
                           int64_t block_size, int64_t dim, uint16_t *vp) {
    static const uint16_t zeros[256] = {0};
    for (int64_t jp = 0; jp < padded / 2; jp++) {
        const uint16_t *rows[2];
        for (int e = 0; e < 2; e++) {
            int64_t key = 2 * jp + e;
            rows[e] = key < len ? cache + (table[key / block_size] * block_size + key % block_size) * dim : zeros;
        }
        uint16_t *dst = vp + jp * dim * 2;
        for (int64_t d = 0; d < dim; d += 16) {  /* interleave 16 dims of the two rows */
            __m256i a = _mm256_loadu_si256((const __m256i *)(rows[0] + d));
            __m256i b = _mm256_loadu_si256((const __m256i *)(rows[1] + d));
            __m512i ai = _mm512_cvtepu16_epi32(a), bi = _mm512_cvtepu16_epi32(b);
            _mm512_storeu_si512(dst + d * 2, _mm512_or_si512(ai, _mm512_slli_epi32(bi, 16)));
        }
    }
}

/* one block of PF_R rows over keys [0, kmax]: o (float32, [R, dim]) and the row sums l */
static void pf_row_block(const uint32_t *qs, const uint32_t *kp, const uint16_t *vp,
                         const int64_t *lim, int64_t kmax, int64_t dim, float *o, float *l,
                         float *s, uint16_t *p) {
    int64_t pairs = dim / 2;
    float m[PF_R], alpha[PF_R];
    __m512 sums[PF_R];  /* per-lane running sums: reduced once, at the end */
    for (int i = 0; i < PF_R; i++) { m[i] = -INFINITY; sums[i] = _mm512_setzero_ps(); }
    memset(o, 0, sizeof(float) * PF_R * (size_t)dim);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int64_t kb = 0; kb <= kmax; kb += PF_KB) {
        int64_t left = kmax + 1 - kb;
        int ntiles = left >= PF_KB ? PF_KB / 16 : (int)((left + 31) / 32) * 2;  /* pairs of tiles */
        __m512 vmax[PF_R];
        for (int i = 0; i < PF_R; i++) vmax[i] = _mm512_set1_ps(-INFINITY);
        for (int tile = 0; tile < ntiles; tile += 2) {
            __m512 acc[2 * PF_R];
            pf_scores2(qs, kp + ((kb / 16) + tile) * pairs * 16, pairs, acc);
            for (int half = 0; half < 2; half++) {
                int64_t k0 = kb + (tile + half) * 16;
                for (int i = 0; i < PF_R; i++) {
                    __m512 x = acc[half * PF_R + i];
                    if (k0 + 15 > lim[i]) {  /* keys past the row's own position */
                        __mmask16 keep = _mm512_cmple_epi32_mask(_mm512_add_epi32(lane, _mm512_set1_epi32((int)k0)),
                                                                 _mm512_set1_epi32((int)lim[i]));
                        x = _mm512_mask_blend_ps(keep, _mm512_set1_ps(-INFINITY), x);
                    }
                    vmax[i] = _mm512_max_ps(vmax[i], x);
                    _mm512_storeu_ps(s + i * PF_KB + (tile + half) * 16, x);
                }
            }
        }
        int nk = ntiles * 16;
        for (int i = 0; i < PF_R; i++) {
            float *si = s + i * PF_KB;
            float top = _mm512_reduce_max_ps(vmax[i]), mnew = top > m[i] ? top : m[i];
            alpha[i] = m[i] == -INFINITY ? 0.0f : expf(m[i] - mnew);
            m[i] = mnew;
            __m512 vm = _mm512_set1_ps(mnew), vsum = _mm512_mul_ps(sums[i], _mm512_set1_ps(alpha[i]));
            for (int k = 0; k < nk; k += 16) {
                __m512 x = _mm512_loadu_ps(si + k);
                __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
                __m512 e = _mm512_maskz_mov_ps(live, vexp_bf16(_mm512_sub_ps(x, vm)));
                __m256bh eb = _mm512_cvtneps_pbh(e);
                vsum = _mm512_add_ps(vsum, _mm512_cvtpbh_ps(eb));  /* sum what V is multiplied by */
                _mm256_storeu_si256((__m256i *)(p + i * PF_KB + k), (__m256i)eb);
            }
            sums[i] = vsum;
        }
        const uint32_t *p32 = (const uint32_t *)p;
        const uint16_t *vblock = vp + kb * dim;  /* key pairs from kb on: kb / 2 pairs of 2 dim */
        int64_t c = 0;
        for (; c + 32 <= dim; c += 32) {  /* two 16-dim chunks: each P broadcast feeds two products */
            __m512 acc[2 * PF_R];
            for (int i = 0; i < PF_R; i++) {
                acc[i] = _mm512_mul_ps(_mm512_loadu_ps(o + i * dim + c), _mm512_set1_ps(alpha[i]));
                acc[PF_R + i] = _mm512_mul_ps(_mm512_loadu_ps(o + i * dim + c + 16), _mm512_set1_ps(alpha[i]));
            }
            for (int jp = 0; jp < nk / 2; jp++) {
                __m512bh v0 = (__m512bh)_mm512_loadu_si512(vblock + (jp * dim + c) * 2);
                __m512bh v1 = (__m512bh)_mm512_loadu_si512(vblock + (jp * dim + c + 16) * 2);
                for (int i = 0; i < PF_R; i++) {
                    __m512bh pb = (__m512bh)_mm512_set1_epi32((int)p32[i * PF_KB / 2 + jp]);
                    acc[i] = _mm512_dpbf16_ps(acc[i], pb, v0);
                    acc[PF_R + i] = _mm512_dpbf16_ps(acc[PF_R + i], pb, v1);
                }
            }
            for (int i = 0; i < PF_R; i++) {
                _mm512_storeu_ps(o + i * dim + c, acc[i]);
                _mm512_storeu_ps(o + i * dim + c + 16, acc[PF_R + i]);
            }
        }
        for (; c < dim; c += 16) {
            __m512 acc[PF_R];
            for (int i = 0; i < PF_R; i++) acc[i] = _mm512_mul_ps(_mm512_loadu_ps(o + i * dim + c), _mm512_set1_ps(alpha[i]));
            for (int jp = 0; jp < nk / 2; jp++) {
                __m512bh vv = (__m512bh)_mm512_loadu_si512(vblock + (jp * dim + c) * 2);
                for (int i = 0; i < PF_R; i++)
                    acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)_mm512_set1_epi32((int)p32[i * PF_KB / 2 + jp]), vv);
            }
            for (int i = 0; i < PF_R; i++) _mm512_storeu_ps(o + i * dim + c, acc[i]);
        }
    }
    for (int i = 0; i < PF_R; i++) l[i] = _mm512_reduce_add_ps(sums[i]);
}
#endif

int paged_prefill_bf16(const uint16_t *q, const uint16_t *k_cache, const uint16_t *v_cache,
                       const int64_t *table, int64_t context_len, int64_t n, int64_t num_heads,
                       int64_t num_kv_heads, int64_t num_blocks, int64_t block_size, int64_t dim,
                       float scale, uint16_t *out) {
#if HAVE_AVX512_BF16
    if (dim % 16 != 0 || dim > 256 || n <= 0 || n > context_len) return 2;
    int64_t group = num_heads / num_kv_heads, first = context_len - n, pairs = dim / 2;
    int64_t padded = (context_len + PF_KB - 1) / PF_KB * PF_KB;
    int64_t rows = n * group, rows_padded = (rows + PF_R - 1) / PF_R * PF_R;
    uint32_t *kp = malloc(sizeof(uint32_t) * (size_t)(padded * pairs));
    uint16_t *vp = malloc(sizeof(uint16_t) * (size_t)(padded * dim));
    uint32_t *qs = malloc(sizeof(uint32_t) * (size_t)(rows_padded * pairs));
    float *o = malloc(sizeof(float) * (size_t)(PF_R * dim));
    float *s = malloc(sizeof(float) * PF_R * PF_KB);
    uint16_t *p = malloc(sizeof(uint16_t) * PF_R * PF_KB);
    if (!kp || !vp || !qs || !o || !s || !p) { free(kp); free(vp); free(qs); free(o); free(s); free(p); return 1; }
    int64_t head_stride = num_blocks * block_size * dim;
    for (int64_t h = 0; h < num_kv_heads; h++) {
        pf_pack_keys(k_cache + h * head_stride, table, context_len, padded, block_size, dim, kp);
        pf_pack_values(v_cache + h * head_stride, table, context_len, padded, block_size, dim, vp);
        uint16_t *q16 = (uint16_t *)qs;
        for (int64_t r = 0; r < rows_padded; r++) {  /* row r = token r / group, head h * group + r % group */
            const uint16_t *src = q + ((r / group) * num_heads + h * group + r % group) * dim;
            for (int64_t d = 0; d < dim; d++)
                q16[r * dim + d] = r < rows ? store_bf16(load_bf16(src[d]) * scale) : 0;
        }
        for (int64_t rb = 0; rb < rows_padded; rb += PF_R) {
            int64_t lim[PF_R], count = rows - rb < PF_R ? rows - rb : PF_R;  /* real rows here */
            float l[PF_R];
            for (int i = 0; i < PF_R; i++) lim[i] = first + ((i < count ? rb + i : rows - 1) / group);
            pf_row_block(qs + rb * pairs, kp, vp, lim, lim[PF_R - 1], dim, o, l, s, p);
            for (int64_t i = 0; i < count; i++) {
                int64_t r = rb + i;
                uint16_t *dst = out + ((r / group) * num_heads + h * group + r % group) * dim;
                float inv = 1.0f / l[i];
                for (int64_t d = 0; d < dim; d++) dst[d] = store_bf16(o[i * dim + d] * inv);
            }
        }
    }
    free(kp); free(vp); free(qs); free(o); free(s); free(p);
    return 0;
#else
    (void)q; (void)k_cache; (void)v_cache; (void)table; (void)context_len; (void)n; (void)num_heads;
    (void)num_kv_heads; (void)num_blocks; (void)block_size; (void)dim; (void)scale; (void)out;
    return 2;
#endif
}

/* 1 where this build has the bf16 prefill kernel (AVX512-BF16), else 0 */
int paged_prefill_supported(void) { return HAVE_AVX512_BF16; }
