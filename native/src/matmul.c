/* Weight x activation products: the hot loop of every forward pass.
 *
 * Two shapes matter. Token generation (n_tok == 1) is a GEMV over the whole
 * weight set: memory bound, so it streams every weight row exactly once with
 * cheap per-block arithmetic. Prompt processing (n_tok > 1) is compute bound:
 * 16 weight rows are repacked into a "strip" where each 32-bit lane of a
 * 512-bit register holds 4 consecutive weights of one row, so one vpdpbusd
 * (or FMA) with a broadcast activation word updates 16 rows at once; a tile of
 * up to 8 tokens reuses every loaded weight register 8 times.
 *
 * Integer strips hold unsigned bytes (vpdpbusd multiplies u8 x s8):
 *   Q8_0: w + 128, corrected by -128 * sum(x) per block;
 *   Q4_0: q in 0..15 (w = q - 8), corrected by -8 * sum(x);
 *   Q4_K/Q5_K/Q6_K: q as stored (0..15/31/63); the mins (and Q6_K's -32
 *   offset) are applied through the Q8_K block sums with vpdpwssd.
 *
 * The scalar and AVX2 levels use the per-row dot kernels (st_vec_dot_get),
 * walking tokens in blocks so a weight row is reused from L1.
 */
#include "matmul.h"

#include "common.h"

#include <stdlib.h>
#include <string.h>

#define STRIP 16 /* weight rows per packed strip: one zmm lane each */
#define TILE 8   /* tokens per register tile */

/* -------------------------------------------------- activation formats -- */

size_t st_activation_bytes(st_type wtype, int64_t n_tok, int64_t n_in)
{
    return (size_t)n_tok * st_row_bytes(st_vec_dot_type(wtype), n_in);
}

void st_quantize_activations(st_type wtype, const float *x, int64_t n_tok, int64_t n_in, void *out)
{
    const st_type vt = st_vec_dot_type(wtype);
    const size_t rb = st_row_bytes(vt, n_in);
#if defined(__x86_64__)
    const bool avx2 = st_simd_level() >= 1;
#endif
    for (int64_t t = 0; t < n_tok; t++) {
        const float *src = x + t * n_in;
        uint8_t *dst = (uint8_t *)out + (size_t)t * rb;
        if (vt == ST_Q8_0) {
#if defined(__x86_64__)
            if (avx2) {
                st_quantize_row_q8_0_x86_avx2(src, (block_q8_0 *)dst, n_in);
                continue;
            }
#endif
            st_quantize_row_q8_0_x86(src, (block_q8_0 *)dst, n_in);
        } else {
            st_quantize_row(vt, src, dst, n_in);
        }
    }
}

/* ------------------------------------------------------- generic path -- */

/* Rows [r0, r1) with any dot kernel. Tokens go in blocks so one weight row
 * stays in L1 while it meets every token of the block. */
static void matmul_rows_dot(st_vec_dot_fn dot, const uint8_t *W, size_t wrow, int64_t n_out, int64_t n_in,
                            const uint8_t *X, size_t xrow, int64_t n_tok, float *Y, int64_t r0, int64_t r1)
{
    const int64_t tblock = 32;
    for (int64_t t0 = 0; t0 < n_tok; t0 += tblock) {
        const int64_t t1 = ST_MIN(n_tok, t0 + tblock);
        for (int64_t r = r0; r < r1; r++) {
            for (int64_t t = t0; t < t1; t++) {
                dot((int)n_in, &Y[t * n_out + r], W + (size_t)r * wrow, X + (size_t)t * xrow);
            }
        }
    }
}

/* ------------------------------------------------------------ AVX-512 -- */

#if defined(__x86_64__)

#include <immintrin.h>

#define ST_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define ST_AVX512BF16 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16,avx2,fma,f16c")))
#define ST_INLINE static inline __attribute__((always_inline))

typedef struct {
    float d;      /* activation block scale */
    int32_t corr; /* -offset * sum(q) of the block: undoes the unsigned weight offset */
} q8_info;

/* Packed strip layouts (bytes per block, 64-byte aligned):
 *   Q8 family (per 32 weights): q[8][64] u8, d[16] f32                 = 576
 *   K family (per 256 weights): q[64][64] u8, ds[NSB][16] f32 (d*scale),
 *                               mp[8][16] int16 pairs, dmin[16] f32    */
#define Q8_PACK 576
#define KQ_PACK(nsb) (4096 + (nsb) * 64 + 512 + 64)

static inline int32_t ld32(const void *p)
{
    int32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint16_t ld16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* Store the 16 lanes of a tile row; the last strip may be partial. */
ST_INLINE ST_AVX512 void store_rows(float *y, __m512 v, int nr)
{
    if (nr == STRIP) {
        _mm512_storeu_ps(y, v);
    } else {
        _mm512_mask_storeu_ps(y, (__mmask16)((1u << nr) - 1), v);
    }
}

/* ---- Q8_0 / Q4_0 ---- */

/* Transpose a 16x8 matrix of 32-bit words: rows[r] holds 8 words of weight
 * row r; out[j] (64 bytes) gets word j of rows 0..15. */
ST_INLINE ST_AVX512 void transpose_16x8(const __m256i rows[16], uint8_t *out)
{
    /* pair rows r and r+8 in one zmm, then an 8x8 transpose of 64-bit pairs */
    __m512i z[8];
    for (int r = 0; r < 8; r++) {
        z[r] = _mm512_inserti64x4(_mm512_castsi256_si512(rows[r]), rows[r + 8], 1);
    }
    /* z[r] = [r.w0..r.w7 | (r+8).w0..w7]; interleave words, then quads */
    __m512i a[8], b[8];
    for (int r = 0; r < 8; r += 2) {
        a[r] = _mm512_unpacklo_epi32(z[r], z[r + 1]);     /* r0 r1 r0 r1 (w0,w1 | w4,w5) */
        a[r + 1] = _mm512_unpackhi_epi32(z[r], z[r + 1]); /* (w2,w3 | w6,w7) */
    }
    for (int r = 0; r < 8; r += 4) {
        b[r] = _mm512_unpacklo_epi64(a[r], a[r + 2]);         /* w0 of r..r+3 | w4 */
        b[r + 1] = _mm512_unpackhi_epi64(a[r], a[r + 2]);     /* w1 | w5 */
        b[r + 2] = _mm512_unpacklo_epi64(a[r + 1], a[r + 3]); /* w2 | w6 */
        b[r + 3] = _mm512_unpackhi_epi64(a[r + 1], a[r + 3]); /* w3 | w7 */
    }
    /* b[0..3]: rows 0-3 (and 8-11), b[4..7]: rows 4-7 (and 12-15). Each 128-bit
     * lane L of b[k] holds word (k%4 + 4*(L%2)) of rows 4*(k/4)+(0..3) (+8 if L>=2). */
    const __m512i idx_lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i idx_hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    for (int k = 0; k < 4; k++) {
        /* rows 0-3 | 4-7 | 8-11 | 12-15 for word k and word k+4 */
        const __m512i lo = _mm512_permutex2var_epi64(b[k], idx_lo, b[k + 4]);
        const __m512i hi = _mm512_permutex2var_epi64(b[k], idx_hi, b[k + 4]);
        _mm512_store_si512((__m512i *)(out + 64 * k), lo);
        _mm512_store_si512((__m512i *)(out + 64 * (k + 4)), hi);
    }
}

/* Pack rows [0, nr) of a Q8_0 (q4 = false) or Q4_0 (q4 = true) strip. */
static ST_AVX512 void pack_q8_strip(bool q4, const uint8_t *W, size_t wrow, int nr, int64_t nb, uint8_t *strip)
{
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    const __m256i m4 = _mm256_set1_epi8(0xF);
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *pb = strip + b * Q8_PACK;
        float *d = (float *)(pb + 512);
        __m256i rows[STRIP];
        for (int r = 0; r < STRIP; r++) {
            if (r >= nr) {
                rows[r] = _mm256_setzero_si256();
                d[r] = 0.0f;
                continue;
            }
            const uint8_t *blk = W + (size_t)r * wrow;
            if (q4) {
                blk += b * sizeof(block_q4_0);
                const __m128i tmp = _mm_loadu_si128((const __m128i *)(blk + 2));
                rows[r] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp), m4);
            } else {
                blk += b * sizeof(block_q8_0);
                rows[r] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), flip);
            }
            d[r] = _cvtsh_ss(ld16(blk));
        }
        transpose_16x8(rows, pb);
    }
}

/* Per-block activation scale and offset correction for all tokens. */
static ST_AVX512 void q8_infos(const uint8_t *X, size_t xrow, int64_t n_tok, int64_t nb, int offset, q8_info *info)
{
    const __m256i ones = _mm256_set1_epi8(1);
    for (int64_t t = 0; t < n_tok; t++) {
        const block_q8_0 *x = (const block_q8_0 *)(X + (size_t)t * xrow);
        for (int64_t b = 0; b < nb; b++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)x[b].qs);
            const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, q);
            __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
            h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 1));
            info[t * nb + b].d = _cvtsh_ss(x[b].d);
            info[t * nb + b].corr = -offset * _mm_cvtsi128_si32(h);
        }
    }
}

/* 16 rows x T tokens over all blocks. */
ST_INLINE ST_AVX512 void tile_q8(const int T, const uint8_t *strip, int64_t nb, const uint8_t *X, size_t xrow,
                                 const q8_info *info, float *Y, int64_t n_out, int nr)
{
    __m512 facc[TILE];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        facc[t] = _mm512_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *pb = strip + b * Q8_PACK;
        const __m512i w0 = _mm512_load_si512((const __m512i *)(pb + 0));
        const __m512i w1 = _mm512_load_si512((const __m512i *)(pb + 64));
        const __m512i w2 = _mm512_load_si512((const __m512i *)(pb + 128));
        const __m512i w3 = _mm512_load_si512((const __m512i *)(pb + 192));
        const __m512i w4 = _mm512_load_si512((const __m512i *)(pb + 256));
        const __m512i w5 = _mm512_load_si512((const __m512i *)(pb + 320));
        const __m512i w6 = _mm512_load_si512((const __m512i *)(pb + 384));
        const __m512i w7 = _mm512_load_si512((const __m512i *)(pb + 448));
        const __m512 dw = _mm512_load_ps((const float *)(pb + 512));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const uint8_t *xq = X + (size_t)t * xrow + (size_t)b * sizeof(block_q8_0) + 2;
            const q8_info *in = info + t * nb + b;
            __m512i acc = _mm512_set1_epi32(in->corr);
            acc = _mm512_dpbusd_epi32(acc, w0, _mm512_set1_epi32(ld32(xq + 0)));
            acc = _mm512_dpbusd_epi32(acc, w1, _mm512_set1_epi32(ld32(xq + 4)));
            acc = _mm512_dpbusd_epi32(acc, w2, _mm512_set1_epi32(ld32(xq + 8)));
            acc = _mm512_dpbusd_epi32(acc, w3, _mm512_set1_epi32(ld32(xq + 12)));
            acc = _mm512_dpbusd_epi32(acc, w4, _mm512_set1_epi32(ld32(xq + 16)));
            acc = _mm512_dpbusd_epi32(acc, w5, _mm512_set1_epi32(ld32(xq + 20)));
            acc = _mm512_dpbusd_epi32(acc, w6, _mm512_set1_epi32(ld32(xq + 24)));
            acc = _mm512_dpbusd_epi32(acc, w7, _mm512_set1_epi32(ld32(xq + 28)));
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(dw, _mm512_set1_ps(in->d)), facc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        store_rows(Y + (size_t)t * n_out, facc[t], nr);
    }
}

static ST_AVX512 void tile_q8_any(int T, const uint8_t *strip, int64_t nb, const uint8_t *X, size_t xrow,
                                  const q8_info *info, float *Y, int64_t n_out, int nr)
{
    switch (T) {
    case 8:
        tile_q8(8, strip, nb, X, xrow, info, Y, n_out, nr);
        break;
    case 7:
        tile_q8(7, strip, nb, X, xrow, info, Y, n_out, nr);
        break;
    case 6:
        tile_q8(6, strip, nb, X, xrow, info, Y, n_out, nr);
        break;
    case 5:
        tile_q8(5, strip, nb, X, xrow, info, Y, n_out, nr);
        break;
    case 4:
        tile_q8(4, strip, nb, X, xrow, info, Y, n_out, nr);
        break;
    case 3:
        tile_q8(3, strip, nb, X, xrow, info, Y, n_out, nr);
        break;
    case 2:
        tile_q8(2, strip, nb, X, xrow, info, Y, n_out, nr);
        break;
    default:
        tile_q8(1, strip, nb, X, xrow, info, Y, n_out, nr);
        break;
    }
}

/* GEMV for Q8_0 / Q4_0 weights: R rows at a time share each activation block;
 * the u8 trick replaces the abs/sign pair of the plain dot. */
ST_INLINE ST_AVX512 void gemv_q8_rows(const int R, bool q4, const uint8_t *W, size_t wrow, int64_t nb,
                                      const uint8_t *x, const q8_info *info, float *y)
{
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const size_t bsz = q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    __m256 facc[4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        facc[r] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < nb; b++) {
        const __m256i xq = _mm256_loadu_si256((const __m256i *)(x + b * sizeof(block_q8_0) + 2));
        const __m256i corr = _mm256_zextsi128_si256(_mm_cvtsi32_si128(info[b].corr));
        const __m256 dx = _mm256_set1_ps(info[b].d);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = W + (size_t)r * wrow + (size_t)b * bsz;
            _mm_prefetch((const char *)blk + 8 * bsz, _MM_HINT_T0);
            __m256i w;
            if (q4) {
                const __m128i tmp = _mm_loadu_si128((const __m128i *)(blk + 2));
                w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp), m4);
            } else {
                w = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), flip);
            }
            const __m256i acc = _mm256_dpbusd_epi32(corr, w, xq);
            const __m256 dw = _mm256_cvtph_ps(_mm_set1_epi16((short)ld16(blk)));
            facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_mul_ps(dw, dx), facc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
        __m128 s = _mm_add_ps(_mm256_extractf128_ps(facc[r], 1), _mm256_castps256_ps128(facc[r]));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        y[r] = _mm_cvtss_f32(s);
    }
}

static ST_AVX512 void gemv_q8(bool q4, const uint8_t *W, size_t wrow, int64_t r0, int64_t r1, int64_t nb,
                              const uint8_t *x, const q8_info *info, float *y)
{
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        if (q4) {
            gemv_q8_rows(4, true, W + (size_t)r * wrow, wrow, nb, x, info, y + r);
        } else {
            gemv_q8_rows(4, false, W + (size_t)r * wrow, wrow, nb, x, info, y + r);
        }
    }
    for (; r < r1; r++) {
        if (q4) {
            gemv_q8_rows(1, true, W + (size_t)r * wrow, wrow, nb, x, info, y + r);
        } else {
            gemv_q8_rows(1, false, W + (size_t)r * wrow, wrow, nb, x, info, y + r);
        }
    }
}

/* ---- K-quants ---- */

/* Unpack one super-block of one row to 256 unsigned quants, the per-sub-block
 * float scales (d * sc) and the int16 min terms; returns -dmin (or -d for
 * Q6_K, whose "mins" undo the -32 offset). */
static ST_AVX512 float unpack_kq(st_type t, const uint8_t *blk, uint8_t q[QK_K], float *ds, int16_t mp[16])
{
    if (t == ST_Q6_K) {
        const block_q6_K *x = (const block_q6_K *)blk;
        const float d = _cvtsh_ss(x->d);
        const uint8_t *ql = x->ql;
        const uint8_t *qh = x->qh;
        for (int n = 0; n < QK_K; n += 128) {
            for (int l = 0; l < 32; ++l) {
                q[n + l + 0] = (uint8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4));
                q[n + l + 32] = (uint8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4));
                q[n + l + 64] = (uint8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4));
                q[n + l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
            }
            ql += 64;
            qh += 32;
        }
        for (int s = 0; s < 16; s++) {
            ds[s] = d * (float)x->scales[s];
            mp[s] = (int16_t)(32 * x->scales[s]);
        }
        return -d;
    }
    /* Q4_K / Q5_K share the header: d, dmin, 12 bytes of 6-bit scales/mins */
    const block_q4_K *x4 = (const block_q4_K *)blk;
    const float d = _cvtsh_ss(x4->d);
    const float dmin = _cvtsh_ss(x4->dmin);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        const uint8_t *sp = x4->scales;
        if (j < 4) {
            sc = sp[j] & 63;
            m = sp[j + 4] & 63;
        } else {
            sc = (uint8_t)((sp[j + 4] & 0xF) | ((sp[j - 4] >> 6) << 4));
            m = (uint8_t)((sp[j + 4] >> 4) | ((sp[j - 0] >> 6) << 4));
        }
        ds[j] = d * (float)sc;
        mp[2 * j] = m;
        mp[2 * j + 1] = m;
    }
    if (t == ST_Q4_K) {
        const uint8_t *qs = x4->qs;
        for (int j = 0; j < QK_K; j += 64) {
            for (int l = 0; l < 32; ++l) {
                q[j + l] = qs[l] & 0xF;
                q[j + l + 32] = qs[l] >> 4;
            }
            qs += 32;
        }
    } else {
        const block_q5_K *x5 = (const block_q5_K *)blk;
        const uint8_t *qs = x5->qs;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < QK_K; j += 64) {
            for (int l = 0; l < 32; ++l) {
                q[j + l] = (uint8_t)((qs[l] & 0xF) + (x5->qh[l] & u1 ? 16 : 0));
                q[j + l + 32] = (uint8_t)((qs[l] >> 4) + (x5->qh[l] & u2 ? 16 : 0));
            }
            qs += 32;
            u1 <<= 2;
            u2 <<= 2;
        }
    }
    return -dmin;
}

static ST_AVX512 void pack_kq_strip(st_type t, const uint8_t *W, size_t wrow, int nr, int64_t nsb, uint8_t *strip)
{
    const int nsub = t == ST_Q6_K ? 16 : 8;
    const size_t bsz = st_type_block_bytes(t);
    const size_t pack = KQ_PACK(nsub);
    for (int64_t i = 0; i < nsb; i++) {
        uint8_t *pb = strip + i * pack;
        float *ds = (float *)(pb + 4096);
        int16_t *mp = (int16_t *)(pb + 4096 + nsub * 64);
        float *dmin = (float *)(pb + 4096 + nsub * 64 + 512);
        for (int r = 0; r < STRIP; r++) {
            _Alignas(64) uint8_t q[QK_K];
            float rds[16];
            int16_t rmp[16];
            if (r < nr) {
                dmin[r] = unpack_kq(t, W + (size_t)r * wrow + (size_t)i * bsz, q, rds, rmp);
            } else {
                memset(q, 0, sizeof(q));
                memset(rds, 0, sizeof(rds));
                memset(rmp, 0, sizeof(rmp));
                dmin[r] = 0.0f;
            }
            for (int j = 0; j < 64; j++) {
                memcpy(pb + j * 64 + 4 * r, q + 4 * j, 4);
            }
            for (int s = 0; s < nsub; s++) {
                ds[s * 16 + r] = rds[s];
            }
            for (int p = 0; p < 8; p++) {
                mp[p * 32 + 2 * r] = rmp[2 * p];
                mp[p * 32 + 2 * r + 1] = rmp[2 * p + 1];
            }
        }
    }
}

/* 16 rows x T tokens over all super-blocks; NSUB = 8 (Q4_K/Q5_K) or 16 (Q6_K). */
ST_INLINE ST_AVX512 void tile_kq(const int T, const int NSUB, const uint8_t *strip, int64_t nsb, const uint8_t *X,
                                 size_t xrow, float *Y, int64_t n_out, int nr)
{
    const int WPS = 64 / NSUB; /* 32-bit weight words per sub-block and lane */
    __m512 facc[TILE];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        facc[t] = _mm512_setzero_ps();
    }
    for (int64_t i = 0; i < nsb; i++) {
        const uint8_t *pb = strip + i * KQ_PACK(NSUB);
        const float *ds = (const float *)(pb + 4096);
        const uint8_t *mp = pb + 4096 + NSUB * 64;
        const __m512 dmin = _mm512_load_ps((const float *)(pb + 4096 + NSUB * 64 + 512));
        __m512 blk[TILE];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            blk[t] = _mm512_setzero_ps();
        }
        for (int s = 0; s < NSUB; s++) {
            __m512i w[8];
#pragma GCC unroll 8
            for (int j = 0; j < WPS; j++) {
                w[j] = _mm512_load_si512((const __m512i *)(pb + (s * WPS + j) * 64));
            }
            const __m512 dsv = _mm512_load_ps(ds + s * 16);
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const uint8_t *xq = X + (size_t)t * xrow + (size_t)i * sizeof(block_q8_K) + 4 + s * WPS * 4;
                __m512i acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], _mm512_set1_epi32(ld32(xq)));
#pragma GCC unroll 8
                for (int j = 1; j < WPS; j++) {
                    acc = _mm512_dpbusd_epi32(acc, w[j], _mm512_set1_epi32(ld32(xq + 4 * j)));
                }
                blk[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), dsv, blk[t]);
            }
        }
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const block_q8_K *xb = (const block_q8_K *)(X + (size_t)t * xrow) + i;
            __m512i macc = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int p = 0; p < 8; p++) {
                macc = _mm512_dpwssd_epi32(macc, _mm512_load_si512((const __m512i *)(mp + p * 64)),
                                           _mm512_set1_epi32(ld32(&xb->bsums[2 * p])));
            }
            const __m512 dx = _mm512_set1_ps(xb->d);
            facc[t] = _mm512_fmadd_ps(blk[t], dx, facc[t]);
            facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(macc), _mm512_mul_ps(dmin, dx), facc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        store_rows(Y + (size_t)t * n_out, facc[t], nr);
    }
}

#define TILE_KQ_CASES(NSUB)                                                   \
    switch (T) {                                                              \
    case 8:                                                                   \
        tile_kq(8, NSUB, strip, nsb, X, xrow, Y, n_out, nr);                  \
        break;                                                                \
    case 7:                                                                   \
        tile_kq(7, NSUB, strip, nsb, X, xrow, Y, n_out, nr);                  \
        break;                                                                \
    case 6:                                                                   \
        tile_kq(6, NSUB, strip, nsb, X, xrow, Y, n_out, nr);                  \
        break;                                                                \
    case 5:                                                                   \
        tile_kq(5, NSUB, strip, nsb, X, xrow, Y, n_out, nr);                  \
        break;                                                                \
    case 4:                                                                   \
        tile_kq(4, NSUB, strip, nsb, X, xrow, Y, n_out, nr);                  \
        break;                                                                \
    case 3:                                                                   \
        tile_kq(3, NSUB, strip, nsb, X, xrow, Y, n_out, nr);                  \
        break;                                                                \
    case 2:                                                                   \
        tile_kq(2, NSUB, strip, nsb, X, xrow, Y, n_out, nr);                  \
        break;                                                                \
    default:                                                                  \
        tile_kq(1, NSUB, strip, nsb, X, xrow, Y, n_out, nr);                  \
        break;                                                                \
    }

static ST_AVX512 void tile_kq8_any(int T, const uint8_t *strip, int64_t nsb, const uint8_t *X, size_t xrow, float *Y,
                                   int64_t n_out, int nr)
{
    TILE_KQ_CASES(8)
}

static ST_AVX512 void tile_kq16_any(int T, const uint8_t *strip, int64_t nsb, const uint8_t *X, size_t xrow, float *Y,
                                    int64_t n_out, int nr)
{
    TILE_KQ_CASES(16)
}

/* ---- float weights ---- */

/* F32/F16 strips: p[k][16] = W[row][k] as float. BF16 strips (AVX512_BF16):
 * p[k/2][16][2] bf16 pairs. */
static ST_AVX512 void pack_float_strip(st_type t, const uint8_t *W, size_t wrow, int nr, int64_t n_in, float *strip)
{
    for (int r = 0; r < STRIP; r++) {
        if (r >= nr) {
            for (int64_t k = 0; k < n_in; k++) {
                strip[k * STRIP + r] = 0.0f;
            }
            continue;
        }
        const uint8_t *row = W + (size_t)r * wrow;
        int64_t k = 0;
        if (t == ST_F16) {
            for (; k + 16 <= n_in; k += 16) {
                _Alignas(64) float v[16];
                _mm512_store_ps(v, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 2 * k))));
                for (int i = 0; i < 16; i++) {
                    strip[(k + i) * STRIP + r] = v[i];
                }
            }
            for (; k < n_in; k++) {
                strip[k * STRIP + r] = _cvtsh_ss(ld16(row + 2 * k));
            }
        } else if (t == ST_BF16) {
            for (; k < n_in; k++) {
                strip[k * STRIP + r] = st_bf16_to_fp32(ld16(row + 2 * k));
            }
        } else {
            for (; k < n_in; k++) {
                memcpy(&strip[k * STRIP + r], row + 4 * k, 4);
            }
        }
    }
}

static ST_AVX512 void pack_bf16_strip(const uint8_t *W, size_t wrow, int nr, int64_t n_in, uint32_t *strip)
{
    for (int64_t kp = 0; kp < n_in / 2; kp++) {
        for (int r = 0; r < STRIP; r++) {
            strip[kp * STRIP + r] = r < nr ? (uint32_t)ld32(W + (size_t)r * wrow + 4 * kp) : 0u;
        }
    }
}

/* 16 rows x T tokens; xf holds T rows of n_in floats. */
ST_INLINE ST_AVX512 void tile_f32(const int T, const float *strip, int64_t n_in, const float *xf, size_t xstride,
                                  float *Y, int64_t n_out, int nr)
{
    __m512 facc[TILE];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        facc[t] = _mm512_setzero_ps();
    }
    for (int64_t k = 0; k < n_in; k++) {
        const __m512 w = _mm512_load_ps(strip + k * STRIP);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            facc[t] = _mm512_fmadd_ps(w, _mm512_set1_ps(xf[(size_t)t * xstride + k]), facc[t]);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        store_rows(Y + (size_t)t * n_out, facc[t], nr);
    }
}

static ST_AVX512 void tile_f32_any(int T, const float *strip, int64_t n_in, const float *xf, size_t xstride,
                                   float *Y, int64_t n_out, int nr)
{
    switch (T) {
    case 8:
        tile_f32(8, strip, n_in, xf, xstride, Y, n_out, nr);
        break;
    case 7:
        tile_f32(7, strip, n_in, xf, xstride, Y, n_out, nr);
        break;
    case 6:
        tile_f32(6, strip, n_in, xf, xstride, Y, n_out, nr);
        break;
    case 5:
        tile_f32(5, strip, n_in, xf, xstride, Y, n_out, nr);
        break;
    case 4:
        tile_f32(4, strip, n_in, xf, xstride, Y, n_out, nr);
        break;
    case 3:
        tile_f32(3, strip, n_in, xf, xstride, Y, n_out, nr);
        break;
    case 2:
        tile_f32(2, strip, n_in, xf, xstride, Y, n_out, nr);
        break;
    default:
        tile_f32(1, strip, n_in, xf, xstride, Y, n_out, nr);
        break;
    }
}

ST_INLINE ST_AVX512BF16 void tile_bf16(const int T, const uint32_t *strip, int64_t n_in, const uint8_t *X,
                                       size_t xrow, float *Y, int64_t n_out, int nr)
{
    __m512 facc[TILE];
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        facc[t] = _mm512_setzero_ps();
    }
    for (int64_t kp = 0; kp < n_in / 2; kp++) {
        const __m512bh w = (__m512bh)_mm512_load_si512((const __m512i *)(strip + kp * STRIP));
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const __m512bh xv = (__m512bh)_mm512_set1_epi32(ld32(X + (size_t)t * xrow + 4 * kp));
            facc[t] = _mm512_dpbf16_ps(facc[t], w, xv);
        }
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; t++) {
        store_rows(Y + (size_t)t * n_out, facc[t], nr);
    }
}

static ST_AVX512BF16 void tile_bf16_any(int T, const uint32_t *strip, int64_t n_in, const uint8_t *X, size_t xrow,
                                        float *Y, int64_t n_out, int nr)
{
    switch (T) {
    case 8:
        tile_bf16(8, strip, n_in, X, xrow, Y, n_out, nr);
        break;
    case 7:
        tile_bf16(7, strip, n_in, X, xrow, Y, n_out, nr);
        break;
    case 6:
        tile_bf16(6, strip, n_in, X, xrow, Y, n_out, nr);
        break;
    case 5:
        tile_bf16(5, strip, n_in, X, xrow, Y, n_out, nr);
        break;
    case 4:
        tile_bf16(4, strip, n_in, X, xrow, Y, n_out, nr);
        break;
    case 3:
        tile_bf16(3, strip, n_in, X, xrow, Y, n_out, nr);
        break;
    case 2:
        tile_bf16(2, strip, n_in, X, xrow, Y, n_out, nr);
        break;
    default:
        tile_bf16(1, strip, n_in, X, xrow, Y, n_out, nr);
        break;
    }
}

/* Convert T activation rows (F16 or BF16) to floats. */
static ST_AVX512 void activations_to_f32(st_type vt, const uint8_t *X, size_t xrow, int T, int64_t n_in, float *xf)
{
    for (int t = 0; t < T; t++) {
        const uint8_t *row = X + (size_t)t * xrow;
        if (vt == ST_F16) {
            st_fp16_to_fp32_row((const st_half *)row, xf + (size_t)t * n_in, n_in);
        } else {
            for (int64_t k = 0; k < n_in; k++) {
                xf[(size_t)t * n_in + k] = st_bf16_to_fp32(ld16(row + 2 * k));
            }
        }
    }
}

/* ---- driver ---- */

typedef struct {
    st_type wtype;
    const uint8_t *W;
    size_t wrow; /* bytes per weight row */
    int64_t n_out, n_in;
    const uint8_t *X;
    size_t xrow; /* bytes per activation row */
    int64_t n_tok;
    float *Y; /* (n_tok, n_out) */
} mm_args;

/* Rows [r0, r1) for n_tok >= 2. Returns false if scratch memory is missing. */
static bool gemm_avx512(const mm_args *a, int64_t r0, int64_t r1)
{
    const st_type t = a->wtype;
    const bool bf16_native = t == ST_BF16 && st_cpu_has_avx512bf16() && a->n_in % 2 == 0;
    size_t strip_bytes, extra_bytes = 0;
    if (t == ST_Q8_0 || t == ST_Q4_0) {
        strip_bytes = (size_t)(a->n_in / QK8_0) * Q8_PACK;
        extra_bytes = (size_t)a->n_tok * (size_t)(a->n_in / QK8_0) * sizeof(q8_info);
    } else if (t == ST_Q4_K || t == ST_Q5_K || t == ST_Q6_K) {
        strip_bytes = (size_t)(a->n_in / QK_K) * KQ_PACK(t == ST_Q6_K ? 16 : 8);
    } else if (bf16_native) {
        strip_bytes = (size_t)(a->n_in / 2) * STRIP * 4;
    } else {
        strip_bytes = (size_t)a->n_in * STRIP * sizeof(float);
        if (t != ST_F32) {
            extra_bytes = (size_t)TILE * (size_t)a->n_in * sizeof(float);
        }
    }
    uint8_t *scratch = st_aligned_alloc(64, strip_bytes + extra_bytes + 64);
    if (scratch == NULL) {
        return false;
    }
    uint8_t *strip = scratch;
    uint8_t *extra = scratch + ((strip_bytes + 63) & ~(size_t)63);
    const int64_t nb = a->n_in / QK8_0;
    const int64_t nsb = a->n_in / QK_K;
    if (t == ST_Q8_0 || t == ST_Q4_0) {
        q8_infos(a->X, a->xrow, a->n_tok, nb, t == ST_Q4_0 ? 8 : 128, (q8_info *)extra);
    }
    for (int64_t r = r0; r < r1; r += STRIP) {
        const int nr = (int)ST_MIN(STRIP, r1 - r);
        const uint8_t *Wr = a->W + (size_t)r * a->wrow;
        switch (t) {
        case ST_Q8_0:
        case ST_Q4_0:
            pack_q8_strip(t == ST_Q4_0, Wr, a->wrow, nr, nb, strip);
            break;
        case ST_Q4_K:
        case ST_Q5_K:
        case ST_Q6_K:
            pack_kq_strip(t, Wr, a->wrow, nr, nsb, strip);
            break;
        default:
            if (bf16_native) {
                pack_bf16_strip(Wr, a->wrow, nr, a->n_in, (uint32_t *)strip);
            } else {
                pack_float_strip(t, Wr, a->wrow, nr, a->n_in, (float *)strip);
            }
            break;
        }
        for (int64_t t0 = 0; t0 < a->n_tok; t0 += TILE) {
            const int T = (int)ST_MIN(TILE, a->n_tok - t0);
            const uint8_t *X = a->X + (size_t)t0 * a->xrow;
            float *Y = a->Y + t0 * a->n_out + r;
            switch (t) {
            case ST_Q8_0:
            case ST_Q4_0:
                tile_q8_any(T, strip, nb, X, a->xrow, (const q8_info *)extra + t0 * nb, Y, a->n_out, nr);
                break;
            case ST_Q4_K:
            case ST_Q5_K:
                tile_kq8_any(T, strip, nsb, X, a->xrow, Y, a->n_out, nr);
                break;
            case ST_Q6_K:
                tile_kq16_any(T, strip, nsb, X, a->xrow, Y, a->n_out, nr);
                break;
            case ST_F32:
                tile_f32_any(T, (const float *)strip, a->n_in, (const float *)X, a->n_in, Y, a->n_out, nr);
                break;
            default:
                if (bf16_native) {
                    tile_bf16_any(T, (const uint32_t *)strip, a->n_in, X, a->xrow, Y, a->n_out, nr);
                } else {
                    activations_to_f32(st_vec_dot_type(t), X, a->xrow, T, a->n_in, (float *)extra);
                    tile_f32_any(T, (const float *)strip, a->n_in, (const float *)extra, a->n_in, Y, a->n_out, nr);
                }
                break;
            }
        }
    }
    st_aligned_free(scratch);
    return true;
}

/* Rows [r0, r1) for one token of Q8_0/Q4_0. */
static bool gemv_q8_avx512(const mm_args *a, int64_t r0, int64_t r1)
{
    const int64_t nb = a->n_in / QK8_0;
    q8_info stack_info[512];
    q8_info *info = nb <= 512 ? stack_info : malloc((size_t)nb * sizeof(q8_info));
    if (info == NULL) {
        return false;
    }
    const bool q4 = a->wtype == ST_Q4_0;
    for (int64_t t = 0; t < a->n_tok; t++) {
        const uint8_t *x = a->X + (size_t)t * a->xrow;
        q8_infos(x, a->xrow, 1, nb, q4 ? 8 : 128, info);
        gemv_q8(q4, a->W, a->wrow, r0, r1, nb, x, info, a->Y + t * a->n_out);
    }
    if (info != stack_info) {
        free(info);
    }
    return true;
}

#endif /* __x86_64__ */

/* ------------------------------------------------------------- entry -- */

void st_matmul(int simd_level, st_type wtype, const void *W, int64_t n_out, int64_t n_in, const void *X,
               int64_t n_tok, float *Y, int ith, int nth)
{
    const int best = st_simd_level();
    const int level = simd_level < 0 || simd_level > best ? best : simd_level;
    /* thread ith gets a contiguous run of 16-row strips */
    const int64_t n_strips = (n_out + STRIP - 1) / STRIP;
    const int64_t r0 = ST_MIN(n_out, n_strips * ith / nth * STRIP);
    const int64_t r1 = ST_MIN(n_out, n_strips * (ith + 1) / nth * STRIP);
    if (r0 >= r1 || n_tok <= 0) {
        return;
    }
    const size_t wrow = st_row_bytes(wtype, n_in);
    const size_t xrow = st_row_bytes(st_vec_dot_type(wtype), n_in);
#if defined(__x86_64__)
    if (level >= 2) {
        const mm_args a = {wtype, W, wrow, n_out, n_in, X, xrow, n_tok, Y};
        const bool q8_family = wtype == ST_Q8_0 || wtype == ST_Q4_0;
        if (n_tok == 1 || (q8_family && n_tok < 3)) {
            if (q8_family && gemv_q8_avx512(&a, r0, r1)) {
                return;
            }
        } else if (gemm_avx512(&a, r0, r1)) {
            return;
        }
    }
#endif
    st_vec_dot_fn dot = st_vec_dot_get(wtype, level);
    if (dot == NULL) {
        return;
    }
    matmul_rows_dot(dot, W, wrow, n_out, n_in, X, xrow, n_tok, Y, r0, r1);
}
