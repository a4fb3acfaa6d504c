/* Weight x activation products: the hot loop of every forward pass.
 *
 * Two shapes matter. Token generation (n_tok == 1) is a GEMV over the whole
 * weight set and memory bound: st_gemv_avx512 (quant_avx512.c) streams every
 * weight row once. Prompt processing (n_tok > 1) is compute bound: 16
 * quantized weight rows are repacked into a "strip" where each 32-bit lane of
 * a 512-bit register holds 4 consecutive weights of one row, so one vpdpbusd
 * with a broadcast activation word updates 16 rows at once, and a tile of up
 * to 8 tokens reuses every loaded weight register 8 times. Float weights
 * (F32/F16/BF16) need no repacking: 4x4 tiles of (row, token) accumulators.
 *
 * Integer strips hold unsigned bytes (vpdpbusd multiplies u8 x s8):
 *   Q8_0: w + 128, corrected by -128 * sum(x) per block;
 *   Q4_0: q in 0..15 (w = q - 8), corrected by -8 * sum(x);
 *   Q4_K/Q5_K/Q6_K: q as stored (0..15/31/63); the mins (and Q6_K's -32
 *   offset) come from the Q8_K block sums through vpdpwssd.
 *
 * Batch invariance: Y[t][o] is bit-identical however tokens are batched,
 * placed in tiles or split over threads (the scheduler's continuous batching
 * and prefix reuse rely on it). Every AVX-512 path computes the same
 * canonical per-(row, token) sequence: integer block dots are exact, then one
 * float chain per row in block order, e.g. for Q8_0
 *     f = fma((float)isum_b, d_w * d_x, f)   for b = 0, 1, ...
 * matmul_test checks it. The scalar and AVX2 levels use the per-row dot
 * kernels (st_vec_dot_get), batch-invariant by construction; results differ
 * between levels in the last bits.
 */
/* The batched and single-token kernels must round identically: no FMA
 * contraction beyond the explicit intrinsics (clang contracts a*b+c by
 * default, GCC in GNU modes). */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "matmul.h"

#include "common.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define STRIP 16 /* weight rows per packed strip: one zmm lane each */
#define TILE 8   /* tokens per register tile (10 and 12 measured no faster) */

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

#include "avx512_util.h"

typedef struct {
    float d;      /* activation block scale */
    int32_t corr; /* -offset * sum(q) of the block: undoes the unsigned weight offset */
} q8_info;

/* Packed strip layouts (bytes per block, 64-byte aligned):
 *   Q8 family (per 32 weights): q[8][64] u8, d[16] f32                 = 576
 *   K family (per 256 weights): q[64][64] u8, sc[NSUB][16] int32 (the
 *     sub-block scales), mp[8][16] int16 pairs (factors of the block sums),
 *     d[16] f32, negdmin[16] f32 (-dmin; unused by Q6_K)              */
#define Q8_PACK 576
#define KQ_PACK(nsb) (4096 + (nsb) * 64 + 512 + 128)

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
 * row r; out[j] (64 bytes) gets word j of rows 0..15. Rows r and r+8 share a
 * zmm; two unpack stages build, in each 128-bit lane, one word of 4 rows; a
 * two-source permute then gathers the four lanes of each output. */
ST_INLINE ST_AVX512 void transpose_16x8(const __m256i rows[16], uint8_t *out)
{
#define Z(r) _mm512_inserti64x4(_mm512_castsi256_si512(rows[r]), rows[(r) + 8], 1)
    const __m512i z0 = Z(0), z1 = Z(1), z2 = Z(2), z3 = Z(3), z4 = Z(4), z5 = Z(5), z6 = Z(6), z7 = Z(7);
#undef Z
    /* lanes: [r.w0-3 | r.w4-7 | (r+8).w0-3 | (r+8).w4-7] */
    const __m512i a0 = _mm512_unpacklo_epi32(z0, z1), a1 = _mm512_unpackhi_epi32(z0, z1);
    const __m512i a2 = _mm512_unpacklo_epi32(z2, z3), a3 = _mm512_unpackhi_epi32(z2, z3);
    const __m512i a4 = _mm512_unpacklo_epi32(z4, z5), a5 = _mm512_unpackhi_epi32(z4, z5);
    const __m512i a6 = _mm512_unpacklo_epi32(z6, z7), a7 = _mm512_unpackhi_epi32(z6, z7);
    /* b[k], b[k+4] (k < 4): lanes [w_k | w_k+4 | w_k (rows+8) | w_k+4 (rows+8)]
     * of rows 0-3 and 4-7 respectively */
    const __m512i b0 = _mm512_unpacklo_epi64(a0, a2), b1 = _mm512_unpackhi_epi64(a0, a2);
    const __m512i b2 = _mm512_unpacklo_epi64(a1, a3), b3 = _mm512_unpackhi_epi64(a1, a3);
    const __m512i b4 = _mm512_unpacklo_epi64(a4, a6), b5 = _mm512_unpackhi_epi64(a4, a6);
    const __m512i b6 = _mm512_unpacklo_epi64(a5, a7), b7 = _mm512_unpackhi_epi64(a5, a7);
    const __m512i idx_lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i idx_hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    _mm512_store_si512((__m512i *)(out + 0), _mm512_permutex2var_epi64(b0, idx_lo, b4));
    _mm512_store_si512((__m512i *)(out + 64), _mm512_permutex2var_epi64(b1, idx_lo, b5));
    _mm512_store_si512((__m512i *)(out + 128), _mm512_permutex2var_epi64(b2, idx_lo, b6));
    _mm512_store_si512((__m512i *)(out + 192), _mm512_permutex2var_epi64(b3, idx_lo, b7));
    _mm512_store_si512((__m512i *)(out + 256), _mm512_permutex2var_epi64(b0, idx_hi, b4));
    _mm512_store_si512((__m512i *)(out + 320), _mm512_permutex2var_epi64(b1, idx_hi, b5));
    _mm512_store_si512((__m512i *)(out + 384), _mm512_permutex2var_epi64(b2, idx_hi, b6));
    _mm512_store_si512((__m512i *)(out + 448), _mm512_permutex2var_epi64(b3, idx_hi, b7));
}

/* 16 fp16 values from 16 rows (zero for rows >= nr) to floats. */
ST_INLINE ST_AVX512 __m512 gather_f16x16(const uint8_t *p, size_t stride, int nr)
{
#define H(r) ((r) < nr ? (uint64_t)ld16(p + (size_t)(r) * stride) : 0u)
#define Q(k) (long long)(H(4 * (k)) | H(4 * (k) + 1) << 16 | H(4 * (k) + 2) << 32 | H(4 * (k) + 3) << 48)
    return _mm512_cvtph_ps(_mm256_setr_epi64x(Q(0), Q(1), Q(2), Q(3)));
#undef Q
#undef H
}

/* The 32 weights of one Q8_0/Q4_0 block as unsigned bytes. */
ST_INLINE ST_AVX512 __m256i q8_block_u8(bool q4, const uint8_t *blk)
{
    if (q4) {
        const __m128i tmp = _mm_loadu_si128((const __m128i *)(blk + 2));
        return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp), _mm256_set1_epi8(0xF));
    }
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), _mm256_set1_epi8((char)0x80));
}

ST_INLINE ST_AVX512 void pack_q8_blocks(const bool q4, const bool full, const uint8_t *W, size_t wrow, int nr,
                                        int64_t nb, uint8_t *strip)
{
    const size_t bsz = q4 ? sizeof(block_q4_0) : sizeof(block_q8_0);
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *pb = strip + b * Q8_PACK;
        const uint8_t *blk0 = W + (size_t)b * bsz;
        __m256i rows[STRIP];
#define ROW(r) rows[r] = full || (r) < nr ? q8_block_u8(q4, blk0 + (size_t)(r) * wrow) : _mm256_setzero_si256()
        ROW(0); ROW(1); ROW(2); ROW(3); ROW(4); ROW(5); ROW(6); ROW(7);
        ROW(8); ROW(9); ROW(10); ROW(11); ROW(12); ROW(13); ROW(14); ROW(15);
#undef ROW
        transpose_16x8(rows, pb);
        _mm512_store_ps((float *)(pb + 512), gather_f16x16(blk0, wrow, full ? STRIP : nr));
    }
}

/* Pack rows [0, nr) of a Q8_0 (q4 = false) or Q4_0 (q4 = true) strip. */
static ST_AVX512 void pack_q8_strip(bool q4, const uint8_t *W, size_t wrow, int nr, int64_t nb, uint8_t *strip)
{
    if (q4) {
        if (nr == STRIP) {
            pack_q8_blocks(true, true, W, wrow, nr, nb, strip);
        } else {
            pack_q8_blocks(true, false, W, wrow, nr, nb, strip);
        }
    } else {
        if (nr == STRIP) {
            pack_q8_blocks(false, true, W, wrow, nr, nb, strip);
        } else {
            pack_q8_blocks(false, false, W, wrow, nr, nb, strip);
        }
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

/* ---- K-quants ---- */

/* Elements 32c..32c+31 of one super-block as unsigned quants. */
ST_INLINE ST_AVX512 __m256i kq_chunk(const st_type t, const uint8_t *blk, int c)
{
    const __m256i m4 = _mm256_set1_epi8(0xF);
    if (t == ST_Q6_K) {
        const block_q6_K *x = (const block_q6_K *)blk;
        const int h = c / 4, within = c % 4;
        const __m256i ql = _mm256_loadu_si256((const __m256i *)(x->ql + 64 * h + 32 * (within & 1)));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(x->qh + 32 * h));
        const __m256i lo = within < 2 ? _mm256_and_si256(ql, m4) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
        const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * within)), _mm256_set1_epi8(3));
        return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
    }
    const uint8_t *qs = t == ST_Q4_K ? ((const block_q4_K *)blk)->qs : ((const block_q5_K *)blk)->qs;
    const __m256i bytes = _mm256_loadu_si256((const __m256i *)(qs + 32 * (c / 2)));
    __m256i q = c % 2 == 0 ? _mm256_and_si256(bytes, m4) : _mm256_and_si256(_mm256_srli_epi16(bytes, 4), m4);
    if (t == ST_Q5_K) {
        const __m256i qh = _mm256_loadu_si256((const __m256i *)((const block_q5_K *)blk)->qh);
        const __mmask32 hb = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((char)(1 << c)));
        q = _mm256_mask_add_epi8(q, hb, q, _mm256_set1_epi8(16));
    }
    return q;
}

/* Scales of one Q4_K/Q5_K super-block for all 16 rows at once: ggml's utmp
 * unpacking of the 12 scale bytes, on 16 rows in parallel. */
ST_INLINE ST_AVX512 void kq_scales_k4_strip(const uint8_t *blk0, size_t wrow, int nr, int32_t *scs, int16_t *mp,
                                            float *dv, float *dmin)
{
    __m512i u[4];
    rows_16x4_words(blk0, wrow, nr, 4, u);
    const __m512i kmask1 = _mm512_set1_epi32(0x3f3f3f3f), kmask2 = _mm512_set1_epi32(0x0f0f0f0f);
    const __m512i kmask3 = _mm512_set1_epi32(0x03030303);
    const __m512i sc_lo = _mm512_and_si512(u[0], kmask1);
    const __m512i sc_hi = _mm512_or_si512(_mm512_and_si512(u[2], kmask2),
                                          _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u[0], 6), kmask3), 4));
    const __m512i m_lo = _mm512_and_si512(u[1], kmask1);
    const __m512i m_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u[2], 4), kmask2),
                                         _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u[1], 6), kmask3), 4));
    const __m512 d = gather_f16x16(blk0, wrow, nr);
    const __m512 dm = gather_f16x16(blk0 + 2, wrow, nr);
    const __m512i byte = _mm512_set1_epi32(0xFF);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) {
        const __m512i sc = _mm512_and_si512(_mm512_srli_epi32(j < 4 ? sc_lo : sc_hi, 8 * (j % 4)), byte);
        const __m512i m = _mm512_and_si512(_mm512_srli_epi32(j < 4 ? m_lo : m_hi, 8 * (j % 4)), byte);
        _mm512_store_si512((__m512i *)(scs + 16 * j), sc);
        _mm512_store_si512((__m512i *)(mp + 32 * j), _mm512_or_si512(m, _mm512_slli_epi32(m, 16)));
    }
    _mm512_store_ps(dv, d);
    _mm512_store_ps(dmin, _mm512_sub_ps(_mm512_setzero_ps(), dm));
}

/* Q6_K: 16 int8 scales per row; mp pairs are 32 * scale (the -32 offset). */
ST_INLINE ST_AVX512 void kq_scales_q6_strip(const uint8_t *blk0, size_t wrow, int nr, int32_t *scs, int16_t *mp,
                                            float *dv, float *dmin)
{
    __m512i u[4];
    rows_16x4_words(blk0, wrow, nr, offsetof(block_q6_K, scales), u);
    const __m512 d = gather_f16x16(blk0 + offsetof(block_q6_K, d), wrow, nr);
#define SC(s) _mm512_srai_epi32(_mm512_slli_epi32(u[(s) / 4], 24 - 8 * ((s) % 4)), 24)
#pragma GCC unroll 16
    for (int s = 0; s < 16; s++) {
        _mm512_store_si512((__m512i *)(scs + 16 * s), SC(s));
    }
#pragma GCC unroll 8
    for (int p = 0; p < 8; p++) {
        const __m512i lo = _mm512_and_si512(_mm512_slli_epi32(SC(2 * p), 5), _mm512_set1_epi32(0xFFFF));
        const __m512i hi = _mm512_slli_epi32(SC(2 * p + 1), 21);
        _mm512_store_si512((__m512i *)(mp + 32 * p), _mm512_or_si512(lo, hi));
    }
#undef SC
    _mm512_store_ps(dv, d);
    _mm512_store_ps(dmin, _mm512_setzero_ps());
}

ST_INLINE ST_AVX512 void pack_kq_blocks(const st_type t, const bool full, const uint8_t *W, size_t wrow, int nr,
                                        int64_t nsb, uint8_t *strip)
{
    const int nsub = t == ST_Q6_K ? 16 : 8;
    const size_t bsz = t == ST_Q4_K ? sizeof(block_q4_K) : t == ST_Q5_K ? sizeof(block_q5_K) : sizeof(block_q6_K);
    const size_t pack = KQ_PACK(nsub);
    for (int64_t i = 0; i < nsb; i++) {
        uint8_t *pb = strip + i * pack;
        int32_t *scs = (int32_t *)(pb + 4096);
        int16_t *mp = (int16_t *)(pb + 4096 + nsub * 64);
        float *dv = (float *)(pb + 4096 + nsub * 64 + 512);
        float *dmin = dv + 16;
        const uint8_t *blk0 = W + (size_t)i * bsz;
        if (t == ST_Q6_K) {
            kq_scales_q6_strip(blk0, wrow, full ? STRIP : nr, scs, mp, dv, dmin);
        } else {
            kq_scales_k4_strip(blk0, wrow, full ? STRIP : nr, scs, mp, dv, dmin);
        }
        for (int c = 0; c < 8; c++) {
            __m256i rows[STRIP];
#define ROW(r) rows[r] = full || (r) < nr ? kq_chunk(t, blk0 + (size_t)(r) * wrow, c) : _mm256_setzero_si256()
            ROW(0); ROW(1); ROW(2); ROW(3); ROW(4); ROW(5); ROW(6); ROW(7);
            ROW(8); ROW(9); ROW(10); ROW(11); ROW(12); ROW(13); ROW(14); ROW(15);
#undef ROW
            transpose_16x8(rows, pb + c * 8 * 64);
        }
    }
}

static ST_AVX512 void pack_kq_strip(st_type t, const uint8_t *W, size_t wrow, int nr, int64_t nsb, uint8_t *strip)
{
    const bool full = nr == STRIP;
    if (t == ST_Q4_K) {
        if (full) {
            pack_kq_blocks(ST_Q4_K, true, W, wrow, nr, nsb, strip);
        } else {
            pack_kq_blocks(ST_Q4_K, false, W, wrow, nr, nsb, strip);
        }
    } else if (t == ST_Q5_K) {
        if (full) {
            pack_kq_blocks(ST_Q5_K, true, W, wrow, nr, nsb, strip);
        } else {
            pack_kq_blocks(ST_Q5_K, false, W, wrow, nr, nsb, strip);
        }
    } else {
        if (full) {
            pack_kq_blocks(ST_Q6_K, true, W, wrow, nr, nsb, strip);
        } else {
            pack_kq_blocks(ST_Q6_K, false, W, wrow, nr, nsb, strip);
        }
    }
}

/* 16 rows x T tokens over all super-blocks; NSUB = 8 (Q4_K/Q5_K) or 16
 * (Q6_K). Per row, token and super-block this computes the canonical
 *     f = fma((float)isum, d * d_x, f)        [then, Q4_K/Q5_K only:]
 *     f = fma((float)msum, -dmin * d_x, f)
 * with isum = sum_s sc_s * dot_s exactly in int32 (Q6_K: minus
 * 32 * sum_s sc_s * bsum_s) and msum = sum_j min_j * bsum_j. The GEMV
 * kernels (quant_avx512.c) compute the very same sequence, so results do not
 * depend on how tokens are batched. */
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
        const int32_t *scs = (const int32_t *)(pb + 4096);
        const uint8_t *mp = pb + 4096 + NSUB * 64;
        const __m512 dv = _mm512_load_ps((const float *)(pb + 4096 + NSUB * 64 + 512));
        const __m512 ndmin = _mm512_load_ps((const float *)(pb + 4096 + NSUB * 64 + 576));
        __m512i isum[TILE];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            isum[t] = _mm512_setzero_si512();
        }
        for (int s = 0; s < NSUB; s++) {
            __m512i w[8];
#pragma GCC unroll 8
            for (int j = 0; j < WPS; j++) {
                w[j] = _mm512_load_si512((const __m512i *)(pb + (s * WPS + j) * 64));
            }
            const __m512i scv = _mm512_load_si512((const __m512i *)(scs + s * 16));
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) {
                const uint8_t *xq = X + (size_t)t * xrow + (size_t)i * sizeof(block_q8_K) + 4 + s * WPS * 4;
                __m512i acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], _mm512_set1_epi32(ld32(xq)));
#pragma GCC unroll 8
                for (int j = 1; j < WPS; j++) {
                    acc = _mm512_dpbusd_epi32(acc, w[j], _mm512_set1_epi32(ld32(xq + 4 * j)));
                }
                isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(acc, scv));
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
            if (NSUB == 16) {
                facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(isum[t], macc)), _mm512_mul_ps(dv, dx),
                                          facc[t]);
            } else {
                facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dv, dx), facc[t]);
                facc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(macc), _mm512_mul_ps(ndmin, dx), facc[t]);
            }
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

/* F32, F16 and BF16 need no repacking: a tile of FR rows x FT tokens keeps
 * one 16-lane accumulator per (row, token) and walks k in chunks of 16 (32
 * bf16 pairs with AVX512_BF16), the last chunk masked; each result is then
 * reduced by hsum16. The same function serves one token (GEMV) and many, so
 * a row's result never depends on the batch. */
#define FR 4 /* rows per float tile */
#define FT 4 /* tokens per float tile */
#ifndef FR_GEMV
#define FR_GEMV 1
#endif

/* Fixed reduction order of 16 lanes (shared by every float result). */
ST_INLINE ST_AVX512 float hsum16(__m512 v)
{
    const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* 16 elements k..k+15 (masked) of a F32/F16/BF16 row as floats. */
ST_INLINE ST_AVX512 __m512 load_f16x(const st_type t, const uint8_t *row, int64_t k, __mmask16 m)
{
    if (t == ST_F32) {
        return _mm512_maskz_loadu_ps(m, (const float *)row + k);
    }
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + k);
    if (t == ST_F16) {
        return _mm512_cvtph_ps(h);
    }
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

ST_INLINE ST_AVX512 void tile_float(const st_type t, const int R, const int T, const uint8_t *W, size_t wrow,
                                    const uint8_t *X, size_t xrow, int64_t n_in, float *Y, int64_t n_out)
{
    __m512 acc[FR][FT];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            acc[r][j] = _mm512_setzero_ps();
        }
    }
    for (int64_t k = 0; k < n_in; k += 16) {
        const __mmask16 m = n_in - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n_in - k)) - 1);
        __m512 w[FR], x[FT];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            w[r] = load_f16x(t, W + (size_t)r * wrow, k, m);
        }
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            x[j] = load_f16x(t, X + (size_t)j * xrow, k, m);
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
            for (int j = 0; j < T; j++) {
                acc[r][j] = _mm512_fmadd_ps(w[r], x[j], acc[r][j]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            Y[(size_t)j * n_out + r] = hsum16(acc[r][j]);
        }
    }
}

/* BF16 with AVX512_BF16: vdpbf16ps over 32 elements (pairs) at a time. */
ST_INLINE ST_AVX512BF16 void tile_bf16(const int R, const int T, const uint8_t *W, size_t wrow, const uint8_t *X,
                                       size_t xrow, int64_t n_in, float *Y, int64_t n_out)
{
    __m512 acc[FR][FT];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            acc[r][j] = _mm512_setzero_ps();
        }
    }
    for (int64_t k = 0; k < n_in; k += 32) {
        const __mmask32 m = n_in - k >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (n_in - k)) - 1);
        __m512bh w[FR], x[FT];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            w[r] = (__m512bh)_mm512_maskz_loadu_epi16(m, (const uint16_t *)(W + (size_t)r * wrow) + k);
        }
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            x[j] = (__m512bh)_mm512_maskz_loadu_epi16(m, (const uint16_t *)(X + (size_t)j * xrow) + k);
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
            for (int j = 0; j < T; j++) {
                acc[r][j] = _mm512_dpbf16_ps(acc[r][j], w[r], x[j]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            Y[(size_t)j * n_out + r] = hsum16(acc[r][j]);
        }
    }
}

#define FLOAT_TILE_CASES(CALL)                                                                                       \
    switch (R * 8 + T) {                                                                                             \
    case 4 * 8 + 4: CALL(4, 4); break;                                                                               \
    case 4 * 8 + 3: CALL(4, 3); break;                                                                               \
    case 4 * 8 + 2: CALL(4, 2); break;                                                                               \
    case 4 * 8 + 1: CALL(4, 1); break;                                                                               \
    case 3 * 8 + 4: CALL(3, 4); break;                                                                               \
    case 3 * 8 + 3: CALL(3, 3); break;                                                                               \
    case 3 * 8 + 2: CALL(3, 2); break;                                                                               \
    case 3 * 8 + 1: CALL(3, 1); break;                                                                               \
    case 2 * 8 + 4: CALL(2, 4); break;                                                                               \
    case 2 * 8 + 3: CALL(2, 3); break;                                                                               \
    case 2 * 8 + 2: CALL(2, 2); break;                                                                               \
    case 2 * 8 + 1: CALL(2, 1); break;                                                                               \
    case 1 * 8 + 4: CALL(1, 4); break;                                                                               \
    case 1 * 8 + 3: CALL(1, 3); break;                                                                               \
    case 1 * 8 + 2: CALL(1, 2); break;                                                                               \
    default: CALL(1, 1); break;                                                                                      \
    }

static ST_AVX512 void tile_float_any(st_type t, int R, int T, const uint8_t *W, size_t wrow, const uint8_t *X,
                                     size_t xrow, int64_t n_in, float *Y, int64_t n_out)
{
    if (t == ST_F32) {
#define CALL(r, j) tile_float(ST_F32, r, j, W, wrow, X, xrow, n_in, Y, n_out)
        FLOAT_TILE_CASES(CALL)
#undef CALL
    } else if (t == ST_F16) {
#define CALL(r, j) tile_float(ST_F16, r, j, W, wrow, X, xrow, n_in, Y, n_out)
        FLOAT_TILE_CASES(CALL)
#undef CALL
    } else {
#define CALL(r, j) tile_float(ST_BF16, r, j, W, wrow, X, xrow, n_in, Y, n_out)
        FLOAT_TILE_CASES(CALL)
#undef CALL
    }
}

static ST_AVX512BF16 void tile_bf16_any(int R, int T, const uint8_t *W, size_t wrow, const uint8_t *X, size_t xrow,
                                        int64_t n_in, float *Y, int64_t n_out)
{
#define CALL(r, j) tile_bf16(r, j, W, wrow, X, xrow, n_in, Y, n_out)
    FLOAT_TILE_CASES(CALL)
#undef CALL
}

/* Rows [r0, r1) of a float matmul, any n_tok: row groups outside so each
 * weight row is read from memory once, token tiles inside. */
static ST_AVX512 void matmul_float_avx512(st_type t, const uint8_t *W, size_t wrow, int64_t n_out, int64_t n_in,
                                          const uint8_t *X, size_t xrow, int64_t n_tok, float *Y, int64_t r0, int64_t r1)
{
    const bool bf16_native = t == ST_BF16 && st_cpu_has_avx512bf16();
    /* one token: rows one at a time, so the weights are read in address order */
    const int fr = n_tok == 1 ? FR_GEMV : FR;
    for (int64_t r = r0; r < r1; r += fr) {
        const int R = (int)ST_MIN(fr, r1 - r);
        for (int64_t t0 = 0; t0 < n_tok; t0 += FT) {
            const int T = (int)ST_MIN(FT, n_tok - t0);
            const uint8_t *Wr = W + (size_t)r * wrow;
            const uint8_t *Xt = X + (size_t)t0 * xrow;
            float *Yt = Y + t0 * n_out + r;
            if (bf16_native) {
                tile_bf16_any(R, T, Wr, wrow, Xt, xrow, n_in, Yt, n_out);
            } else {
                tile_float_any(t, R, T, Wr, wrow, Xt, xrow, n_in, Yt, n_out);
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
    size_t strip_bytes, extra_bytes = 0;
    if (t == ST_Q8_0 || t == ST_Q4_0) {
        strip_bytes = (size_t)(a->n_in / QK8_0) * Q8_PACK;
        extra_bytes = (size_t)a->n_tok * (size_t)(a->n_in / QK8_0) * sizeof(q8_info);
    } else {
        strip_bytes = (size_t)(a->n_in / QK_K) * KQ_PACK(t == ST_Q6_K ? 16 : 8);
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
        default:
            pack_kq_strip(t, Wr, a->wrow, nr, nsb, strip);
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
            default:
                tile_kq16_any(T, strip, nsb, X, a->xrow, Y, a->n_out, nr);
                break;
            }
        }
    }
    st_aligned_free(scratch);
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
        if (wtype == ST_F32 || wtype == ST_F16 || wtype == ST_BF16) {
            matmul_float_avx512(wtype, W, wrow, n_out, n_in, X, xrow, n_tok, Y, r0, r1);
            return;
        }
        if (n_tok == 1) {
            if (st_gemv_avx512(wtype, (const uint8_t *)W + (size_t)r0 * wrow, wrow, r1 - r0, n_in, X, Y + r0)) {
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
