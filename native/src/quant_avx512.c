/* AVX-512 (F, BW, VL, DQ, VNNI) kernels; BF16 also with AVX512_BF16:
 *   - single-row dot products (st_vec_dot_*_avx512), reached through
 *     st_vec_dot_get after a CPU check. The integer kernels use VNNI
 *     (vpdpbusd / vpdpwssd) instead of the maddubs + madd pairs of AVX2; the
 *     float kernels use 512-bit vectors with masked tails.
 *   - the multi-row GEMV behind st_matmul's n_tok == 1 (st_gemv_avx512),
 *     which rounds exactly like the batched kernels in matmul.c.
 * Like quant_avx2.c, every function has its own target attribute, so the
 * library is built for baseline x86-64.
 */
/* The batched and single-token kernels must round identically: no FMA
 * contraction beyond the explicit intrinsics (clang contracts a*b+c by
 * default, GCC in GNU modes). */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quant.h"

#include "common.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "avx512_util.h"

static inline ST_AVX512 float hsum_f32x8(__m256 x)
{
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

static inline ST_AVX512 float h2f(st_half h)
{
    return _cvtsh_ss(h);
}

static inline ST_AVX512 __m256i nibbles_32(const uint8_t *p)
{
    const __m128i tmp = _mm_loadu_si128((const __m128i *)p);
    const __m256i bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    return _mm256_and_si256(_mm256_set1_epi8(0xF), bytes);
}

/* Signed int8 x int8 in groups of 4 with VNNI (u8 operand = |w|). */
static inline ST_AVX512 __m256i dot_i8x32(__m256i w, __m256i x)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
}

/* pshufb pattern that spreads int16 lane i over all lanes of each 128-bit half */
static inline ST_AVX512 __m256i scale_shuffle_k4(int i)
{
    return _mm256_set1_epi16((short)((2 * i) | ((2 * i + 1) << 8)));
}

static inline void k4_scales_mins(const uint8_t *packed, uint32_t utmp[4])
{
    const uint32_t kmask1 = 0x3f3f3f3f;
    const uint32_t kmask2 = 0x0f0f0f0f;
    const uint32_t kmask3 = 0x03030303;
    memcpy(utmp, packed, 12);
    utmp[3] = ((utmp[2] >> 4) & kmask2) | (((utmp[1] >> 6) & kmask3) << 4);
    const uint32_t uaux = utmp[1] & kmask1;
    utmp[1] = (utmp[2] & kmask2) | (((utmp[0] >> 6) & kmask3) << 4);
    utmp[2] = uaux;
    utmp[0] &= kmask1;
}

/* ---------------------------------------------------------- float dots -- */

ST_AVX512 void st_vec_dot_f32_avx512(int n, float *s, const void *vw, const void *vx)
{
    const float *w = vw;
    const float *x = vx;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, x + i), a0);
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

ST_AVX512 void st_vec_dot_f16_avx512(int n, float *s, const void *vw, const void *vx)
{
    const st_half *w = vw;
    const st_half *x = vx;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int i = 0;
#define LD16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_fmadd_ps(LD16(w + i), LD16(x + i), a0);
        a1 = _mm512_fmadd_ps(LD16(w + i + 16), LD16(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(LD16(w + i + 32), LD16(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(LD16(w + i + 48), LD16(x + i + 48), a3);
    }
#undef LD16
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        const __m512 wv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + i));
        const __m512 xv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i));
        a0 = _mm512_fmadd_ps(wv, xv, a0);
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

static inline ST_AVX512 __m512 bf16x16_load(__mmask16 m, const uint16_t *p)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

ST_AVX512 void st_vec_dot_bf16_avx512(int n, float *s, const void *vw, const void *vx)
{
    const uint16_t *w = vw;
    const uint16_t *x = vx;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(bf16x16_load(0xFFFF, w + i), bf16x16_load(0xFFFF, x + i), a0);
        a1 = _mm512_fmadd_ps(bf16x16_load(0xFFFF, w + i + 16), bf16x16_load(0xFFFF, x + i + 16), a1);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        a0 = _mm512_fmadd_ps(bf16x16_load(m, w + i), bf16x16_load(m, x + i), a0);
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

/* vdpbf16ps: pairs of bf16 products summed into fp32 lanes, as ggml does
 * when built with AVX512_BF16 (inputs below the normal range count as 0). */
ST_AVX512BF16 void st_vec_dot_bf16_avx512bf16(int n, float *s, const void *vw, const void *vx)
{
    const uint16_t *w = vw;
    const uint16_t *x = vx;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_loadu_si512(w + i), (__m512bh)_mm512_loadu_si512(x + i));
        a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_loadu_si512(w + i + 32), (__m512bh)_mm512_loadu_si512(x + i + 32));
    }
    for (; i < n; i += 32) {
        const __mmask32 m = n - i >= 32 ? (__mmask32)0xFFFFFFFFu : (__mmask32)((1u << (n - i)) - 1);
        a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(m, w + i),
                              (__m512bh)_mm512_maskz_loadu_epi16(m, x + i));
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

/* ----------------------------------------------------- 32-element quants -- */

ST_AVX512 void st_vec_dot_q8_0_avx512(int n, float *s, const void *vw, const void *vx)
{
    const block_q8_0 *w = vw;
    const block_q8_0 *x = vx;
    const int nb = n / QK8_0;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int ib = 0;
    for (; ib + 2 <= nb; ib += 2) {
        const __m256i d0 = dot_i8x32(_mm256_loadu_si256((const __m256i *)w[ib].qs),
                                     _mm256_loadu_si256((const __m256i *)x[ib].qs));
        const __m256i d1 = dot_i8x32(_mm256_loadu_si256((const __m256i *)w[ib + 1].qs),
                                     _mm256_loadu_si256((const __m256i *)x[ib + 1].qs));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[ib].d) * h2f(x[ib].d)), _mm256_cvtepi32_ps(d0), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[ib + 1].d) * h2f(x[ib + 1].d)), _mm256_cvtepi32_ps(d1), acc1);
    }
    for (; ib < nb; ib++) {
        const __m256i d0 = dot_i8x32(_mm256_loadu_si256((const __m256i *)w[ib].qs),
                                     _mm256_loadu_si256((const __m256i *)x[ib].qs));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[ib].d) * h2f(x[ib].d)), _mm256_cvtepi32_ps(d0), acc0);
    }
    *s = hsum_f32x8(_mm256_add_ps(acc0, acc1));
}

/* q in 0..15 is already unsigned: dot(q - 8, x) = dot(q, x) - 8 * sum(x). */
ST_AVX512 void st_vec_dot_q4_0_avx512(int n, float *s, const void *vw, const void *vx)
{
    const block_q4_0 *w = vw;
    const block_q8_0 *x = vx;
    const int nb = n / QK8_0;
    const __m256i eight = _mm256_set1_epi8(8);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int ib = 0;
    for (; ib + 2 <= nb; ib += 2) {
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)x[ib].qs);
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)x[ib + 1].qs);
        const __m256i c0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), eight, x0);
        const __m256i c1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), eight, x1);
        const __m256i d0 = _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles_32(w[ib].qs), x0), c0);
        const __m256i d1 =
            _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles_32(w[ib + 1].qs), x1), c1);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[ib].d) * h2f(x[ib].d)), _mm256_cvtepi32_ps(d0), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[ib + 1].d) * h2f(x[ib + 1].d)), _mm256_cvtepi32_ps(d1), acc1);
    }
    for (; ib < nb; ib++) {
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)x[ib].qs);
        const __m256i c0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), eight, x0);
        const __m256i d0 = _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), nibbles_32(w[ib].qs), x0), c0);
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(h2f(w[ib].d) * h2f(x[ib].d)), _mm256_cvtepi32_ps(d0), acc0);
    }
    *s = hsum_f32x8(_mm256_add_ps(acc0, acc1));
}

/* --------------------------------------------------------------- K-quants -- */
/* ggml's AVX2 structure, with vpdpwssd folding "madd with scales, add". */

ST_AVX512 void st_vec_dot_q4_K_avx512(int n, float *s, const void *vw, const void *vx)
{
    const block_q4_K *w = vw;
    const block_q8_K *x = vx;
    const int nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    uint32_t utmp[4];
    for (int i = 0; i < nb; ++i) {
        const float d = x[i].d * h2f(w[i].d);
        const float dmin = -x[i].d * h2f(w[i].dmin);
        k4_scales_mins(w[i].scales, utmp);
        const uint8_t *q4 = w[i].qs;
        const int8_t *q8 = x[i].qs;
        const __m256i mins_and_scales =
            _mm256_cvtepu8_epi16(_mm_set_epi32((int)utmp[3], (int)utmp[2], (int)utmp[1], (int)utmp[0]));
        const __m256i q8sums = _mm256_loadu_si256((const __m256i *)x[i].bsums);
        const __m128i q8s = _mm_hadd_epi16(_mm256_extracti128_si256(q8sums, 0), _mm256_extracti128_si256(q8sums, 1));
        const __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        const __m128i sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
        const __m256i scales = _mm256_set_m128i(sc128, sc128);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; ++j) {
            const __m256i q4bits = _mm256_loadu_si256((const __m256i *)q4);
            q4 += 32;
            const __m256i q8l = _mm256_loadu_si256((const __m256i *)q8);
            const __m256i q8h = _mm256_loadu_si256((const __m256i *)(q8 + 32));
            q8 += 64;
            const __m256i p16l = _mm256_maddubs_epi16(_mm256_and_si256(q4bits, m4), q8l);
            const __m256i p16h = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4), q8h);
            sumi = _mm256_dpwssd_epi32(sumi, _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 0)), p16l);
            sumi = _mm256_dpwssd_epi32(sumi, _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 1)), p16h);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    *s = hsum_f32x8(acc) + _mm_cvtss_f32(acc_m);
}

ST_AVX512 void st_vec_dot_q5_K_avx512(int n, float *s, const void *vw, const void *vx)
{
    const block_q5_K *w = vw;
    const block_q8_K *x = vx;
    const int nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i sixteen = _mm256_set1_epi8(16);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    uint32_t utmp[4];
    for (int i = 0; i < nb; ++i) {
        const uint8_t *q5 = w[i].qs;
        const int8_t *q8 = x[i].qs;
        const float d = x[i].d * h2f(w[i].d);
        const float dmin = -x[i].d * h2f(w[i].dmin);
        k4_scales_mins(w[i].scales, utmp);
        const __m256i mins_and_scales =
            _mm256_cvtepu8_epi16(_mm_set_epi32((int)utmp[3], (int)utmp[2], (int)utmp[1], (int)utmp[0]));
        const __m256i q8sums = _mm256_loadu_si256((const __m256i *)x[i].bsums);
        const __m128i q8s = _mm_hadd_epi16(_mm256_extracti128_si256(q8sums, 0), _mm256_extracti128_si256(q8sums, 1));
        const __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        const __m128i sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
        const __m256i scales = _mm256_set_m128i(sc128, sc128);
        const __m256i hbits = _mm256_loadu_si256((const __m256i *)w[i].qh);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 64; ++j) {
            const __m256i q5bits = _mm256_loadu_si256((const __m256i *)q5);
            q5 += 32;
            /* bit 2j of qh -> +16 for the low nibbles, bit 2j+1 for the high */
            const __mmask32 h0 = _mm256_test_epi8_mask(hbits, _mm256_set1_epi8((char)(1 << (2 * j))));
            const __mmask32 h1 = _mm256_test_epi8_mask(hbits, _mm256_set1_epi8((char)(1 << (2 * j + 1))));
            const __m256i q5_0 = _mm256_mask_add_epi8(_mm256_and_si256(q5bits, m4), h0, _mm256_and_si256(q5bits, m4), sixteen);
            const __m256i lo1 = _mm256_and_si256(_mm256_srli_epi16(q5bits, 4), m4);
            const __m256i q5_1 = _mm256_mask_add_epi8(lo1, h1, lo1, sixteen);
            const __m256i q8_0 = _mm256_loadu_si256((const __m256i *)q8);
            const __m256i q8_1 = _mm256_loadu_si256((const __m256i *)(q8 + 32));
            q8 += 64;
            sumi = _mm256_dpwssd_epi32(sumi, _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 0)),
                                       _mm256_maddubs_epi16(q5_0, q8_0));
            sumi = _mm256_dpwssd_epi32(sumi, _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 1)),
                                       _mm256_maddubs_epi16(q5_1, q8_1));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    *s = hsum_f32x8(acc) + _mm_cvtss_f32(acc_m);
}

ST_AVX512 void st_vec_dot_q6_K_avx512(int n, float *s, const void *vw, const void *vx)
{
    const block_q6_K *w = vw;
    const block_q8_K *x = vx;
    const int nb = n / QK_K;
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i m15 = _mm256_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; ++i) {
        const float d = x[i].d * h2f(w[i].d);
        const uint8_t *q4 = w[i].ql;
        const uint8_t *qh = w[i].qh;
        const int8_t *q8 = x[i].qs;
        const __m256i q8sums = _mm256_loadu_si256((const __m256i *)x[i].bsums);
        const __m256i scales_16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[i].scales));
        const __m256i q8sclsub = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales_16), 5);
        __m256i sumi = _mm256_setzero_si256();
        for (int j = 0; j < QK_K / 128; ++j) {
            const __m256i q4bits1 = _mm256_loadu_si256((const __m256i *)q4);
            const __m256i q4bits2 = _mm256_loadu_si256((const __m256i *)(q4 + 32));
            q4 += 64;
            const __m256i q4bits_h = _mm256_loadu_si256((const __m256i *)qh);
            qh += 32;
            const __m256i q4h_0 = _mm256_slli_epi16(_mm256_and_si256(q4bits_h, m3), 4);
            const __m256i q4h_1 = _mm256_slli_epi16(_mm256_and_si256(q4bits_h, _mm256_set1_epi8(12)), 2);
            const __m256i q4h_2 = _mm256_and_si256(q4bits_h, _mm256_set1_epi8(48));
            const __m256i q4h_3 = _mm256_srli_epi16(_mm256_and_si256(q4bits_h, _mm256_set1_epi8(-64)), 2);
            const __m256i q4_0 = _mm256_or_si256(_mm256_and_si256(q4bits1, m15), q4h_0);
            const __m256i q4_1 = _mm256_or_si256(_mm256_and_si256(q4bits2, m15), q4h_1);
            const __m256i q4_2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits1, 4), m15), q4h_2);
            const __m256i q4_3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q4bits2, 4), m15), q4h_3);
            /* int16 scales of this 128's 8 sub-blocks of 16: the low half holds
             * scales 0..7, the high half 1..8, so shuffle row 2m puts scale 2m
             * on lanes 0..7 and scale 2m+1 on lanes 8..15 */
            const __m128i sc = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(w[i].scales + 8 * j)));
            const __m256i sc2 = _mm256_set_m128i(_mm_srli_si128(sc, 2), sc);
            const __m256i q8_0 = _mm256_loadu_si256((const __m256i *)q8);
            const __m256i q8_1 = _mm256_loadu_si256((const __m256i *)(q8 + 32));
            const __m256i q8_2 = _mm256_loadu_si256((const __m256i *)(q8 + 64));
            const __m256i q8_3 = _mm256_loadu_si256((const __m256i *)(q8 + 96));
            q8 += 128;
            sumi = _mm256_dpwssd_epi32(sumi, _mm256_shuffle_epi8(sc2, scale_shuffle_k4(0)), _mm256_maddubs_epi16(q4_0, q8_0));
            sumi = _mm256_dpwssd_epi32(sumi, _mm256_shuffle_epi8(sc2, scale_shuffle_k4(2)), _mm256_maddubs_epi16(q4_1, q8_1));
            sumi = _mm256_dpwssd_epi32(sumi, _mm256_shuffle_epi8(sc2, scale_shuffle_k4(4)), _mm256_maddubs_epi16(q4_2, q8_2));
            sumi = _mm256_dpwssd_epi32(sumi, _mm256_shuffle_epi8(sc2, scale_shuffle_k4(6)), _mm256_maddubs_epi16(q4_3, q8_3));
        }
        sumi = _mm256_sub_epi32(sumi, q8sclsub);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_f32x8(acc);
}

/* ------------------------------------------------------------------ GEMV -- */
/* Several weight rows against one activation row, for token generation.
 *
 * Results must be bit-identical to the batched kernels in matmul.c (the
 * scheduler relies on logits not depending on how tokens are batched), so
 * each kernel computes exactly the canonical sequence of the GEMM tiles:
 *   Q8_0/Q4_0, per block b in order:  f = fma((float)isum_b, d_w * d_x, f)
 *   K-quants, per super-block:         see k4_pass2 / q6_pass2
 * where isum is the exact integer dot (vpdpbusd on unsigned weights: Q8_0
 * uses w + 128, Q4_0 uses q = w + 8, both corrected by -offset * sum(x)).
 * Vectorization is therefore across rows: each lane of the float chain is
 * one row, and the per-row integer dots are transposed and reduced into
 * lanes. The weights stream from memory once; see pf_stream for prefetch. */

#define GEMV_Q8_ROWS 4 /* rows per Q8_0/Q4_0 group: one xmm lane each */
#define GEMV_ROWS 4    /* rows per K-quant pass-2 group */
#define GEMV_NB 512    /* 32-blocks per pass (longer rows go in chunks) */
#define GEMV_NSB 64    /* K-quant super-blocks per pass */

static inline uint16_t ld16(const void *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* A software prefetch stream running PF_DIST bytes ahead of the weights
 * being consumed, in address order, into L2. The hardware prefetchers follow
 * one address-ordered stream well but not the access pattern of the K-quant
 * GEMV (scale headers of 16 rows, then 4 rows interleaved). Measured on the
 * Zen 4 dev VM, Q4_K 5632x2048 from DRAM, one thread: 5.4 GB/s without the
 * stream, 10 / 13 / ~19-20 GB/s at 8 / 16 / 32-64 KiB ahead; prefetching
 * into L1 (T0) or in bursts does worse. The Q8_0/Q4_0 kernels read every
 * cache line in address order; on Zen 4 they did better without the stream,
 * on the Zen 5 VM (2026-12) a short one (Q8_PF_DIST) lifts them from ~27 to
 * 43-50 GB/s at 2 threads (5632x2048; pure reads: ~55 GB/s), while longer
 * distances lose it again: 4 / 8 / 16 / 32 KiB ahead gave 45-50 / 43-45 /
 * 34-38 / 28 GB/s. K-quants keep 48 KiB (16 and 8 KiB: -15 to -30%). */
#ifndef PF_DIST
#define PF_DIST 49152
#endif
#ifndef Q8_PF
#define Q8_PF 1 /* 0: no prefetch stream in the Q8_0/Q4_0 GEMV */
#endif
#ifndef Q8_PF_DIST
#define Q8_PF_DIST 4096
#endif

typedef struct {
    const uint8_t *line; /* next line to prefetch */
    const uint8_t *end;  /* end of the weights this call reads */
    int64_t dist;        /* bytes ahead of the consumer */
} pf_stream;

static inline void pf_init(pf_stream *ps, const uint8_t *W, int64_t bytes, bool enabled, int64_t dist)
{
    ps->dist = dist;
    ps->line = (const uint8_t *)((uintptr_t)(W + dist) & ~(uintptr_t)63);
    ps->end = enabled ? W + bytes : W; /* disabled: nothing left to fetch */
}

/* The consumer has reached pos: keep the stream dist ahead of it. */
static inline ST_AVX512 void pf_to(pf_stream *ps, const uint8_t *pos)
{
    const uint8_t *target = pos + ps->dist < ps->end ? pos + ps->dist : ps->end;
    while (ps->line < target) {
        _mm_prefetch((const char *)ps->line, _MM_HINT_T1);
        ps->line += 64;
    }
}

/* Exact int32 sum of the 8 lanes of v. */
static inline ST_AVX512 int32_t hsum_i32x8(__m256i v)
{
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 1));
    return _mm_cvtsi128_si32(h);
}

/* Activation block scales and offset corrections (-offset * sum x). */
static ST_AVX512 void q8_prep(const block_q8_0 *x, int64_t nb, int offset, float *dx, int32_t *corr)
{
    const __m256i ones = _mm256_set1_epi8(1);
    for (int64_t b = 0; b < nb; b++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)x[b].qs);
        dx[b] = h2f(x[b].d);
        corr[b] = -offset * hsum_i32x8(_mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, q));
    }
}

/* Transpose-and-reduce of 4 rows' int32 lane vectors: lane 4h + r of the
 * result = sum of the 4 lanes of 128-bit half h of a[r]. */
ST_INLINE ST_AVX512 __m256i reduce_rows_halves(const __m256i a[4])
{
    const __m256i u0 = _mm256_add_epi32(_mm256_unpacklo_epi32(a[0], a[1]), _mm256_unpackhi_epi32(a[0], a[1]));
    const __m256i u1 = _mm256_add_epi32(_mm256_unpacklo_epi32(a[2], a[3]), _mm256_unpackhi_epi32(a[2], a[3]));
    return _mm256_add_epi32(_mm256_unpacklo_epi64(u0, u1), _mm256_unpackhi_epi64(u0, u1));
}

/* Pass 1: s[b][r] = d_w(row r, block b) * dx[b] for the group's rows. Row by
 * row, in address order: reading every block header touches every cache
 * line of the row, which is what streams the rows in from DRAM (measured:
 * ~22 GB/s per core this way; reading rows interleaved, or 8-row groups,
 * streams far slower on the Zen 4 dev VM). */
ST_INLINE ST_AVX512 void q8_scales(const uint8_t *const rows[GEMV_Q8_ROWS], int64_t bsz, int64_t nb,
                                   const float *dx, float *s)
{
    const int64_t nb8 = nb & ~(int64_t)7;
#pragma GCC unroll 4
    for (int r = 0; r < GEMV_Q8_ROWS; r++) {
        for (int64_t b = 0; b < nb8; b += 8) {
            const uint8_t *p = rows[r] + b * bsz;
            const uint64_t lo = (uint64_t)ld16(p) | (uint64_t)ld16(p + bsz) << 16 | (uint64_t)ld16(p + 2 * bsz) << 32 |
                                (uint64_t)ld16(p + 3 * bsz) << 48;
            const uint64_t hi = (uint64_t)ld16(p + 4 * bsz) | (uint64_t)ld16(p + 5 * bsz) << 16 |
                                (uint64_t)ld16(p + 6 * bsz) << 32 | (uint64_t)ld16(p + 7 * bsz) << 48;
            _Alignas(32) float v[8];
            _mm256_store_ps(v, _mm256_mul_ps(_mm256_cvtph_ps(_mm_set_epi64x((long long)hi, (long long)lo)),
                                             _mm256_loadu_ps(dx + b)));
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                s[(b + k) * GEMV_Q8_ROWS + r] = v[k];
            }
        }
        for (int64_t b = nb8; b < nb; b++) {
            s[b * GEMV_Q8_ROWS + r] = h2f(ld16(rows[r] + b * bsz)) * dx[b];
        }
    }
}

/* 4 rows (lanes) of Q8_0 or Q4_0 over nb blocks, continuing the chains in f. */
ST_INLINE ST_AVX512 __m128 gemv_q8_group(const bool q4, const uint8_t *const rows[GEMV_Q8_ROWS], int64_t nb,
                                         const uint8_t *x, const uint8_t *xlo, const uint8_t *xhi, const float *dx,
                                         const int32_t *corr, __m128 f)
{
    const int64_t bsz = q4 ? (int64_t)sizeof(block_q4_0) : (int64_t)sizeof(block_q8_0);
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    const __m256i m4 = _mm256_set1_epi8(0xF);
    _Alignas(64) float s[GEMV_NB * GEMV_Q8_ROWS];
    q8_scales(rows, bsz, nb, dx, s);
    int64_t b = 0;
    if (q4) {
        /* two blocks per ymm: one load and and/shift unpacks 64 weights;
         * the halves of the products belong to blocks b and b + 1 */
        for (; b + 2 <= nb; b += 2) {
            const __m256i xl = _mm256_load_si256((const __m256i *)(xlo + 16 * b));
            const __m256i xh = _mm256_load_si256((const __m256i *)(xhi + 16 * b));
            __m256i a[GEMV_Q8_ROWS];
#pragma GCC unroll 4
            for (int r = 0; r < GEMV_Q8_ROWS; r++) {
                const uint8_t *blk = rows[r] + b * bsz;
                const __m256i v = _mm256_loadu2_m128i((const __m128i *)(blk + bsz + 2), (const __m128i *)(blk + 2));
                a[r] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_and_si256(v, m4), xl);
                a[r] = _mm256_dpbusd_epi32(a[r], _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), xh);
            }
            const __m256i h = reduce_rows_halves(a);
            const __m128i s0 = _mm_add_epi32(_mm256_castsi256_si128(h), _mm_set1_epi32(corr[b]));
            const __m128i s1 = _mm_add_epi32(_mm256_extracti128_si256(h, 1), _mm_set1_epi32(corr[b + 1]));
            f = _mm_fmadd_ps(_mm_cvtepi32_ps(s0), _mm_load_ps(s + b * GEMV_Q8_ROWS), f);
            f = _mm_fmadd_ps(_mm_cvtepi32_ps(s1), _mm_load_ps(s + (b + 1) * GEMV_Q8_ROWS), f);
        }
    }
    for (; b < nb; b++) {
        const __m256i xq = _mm256_loadu_si256((const __m256i *)(x + b * (int64_t)sizeof(block_q8_0) + 2));
        __m256i a[GEMV_Q8_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < GEMV_Q8_ROWS; r++) {
            const uint8_t *blk = rows[r] + b * bsz;
            const __m256i w = q4 ? nibbles_32(blk + 2)
                                 : _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), flip);
            a[r] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, xq);
        }
        const __m256i h = reduce_rows_halves(a);
        const __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        f = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_add_epi32(sum, _mm_set1_epi32(corr[b]))),
                         _mm_load_ps(s + b * GEMV_Q8_ROWS), f);
    }
    return f;
}

static ST_AVX512 void gemv_q8_family(bool q4, const uint8_t *W, size_t wrow, int64_t n_rows, int64_t n_in,
                                     const block_q8_0 *x, float *y)
{
    const int64_t nb_all = n_in / QK8_0;
    const int64_t bsz = q4 ? (int64_t)sizeof(block_q4_0) : (int64_t)sizeof(block_q8_0);
    _Alignas(64) float dx[GEMV_NB];
    _Alignas(64) int32_t corr[GEMV_NB];
    _Alignas(64) uint8_t xlo[GEMV_NB * 16], xhi[GEMV_NB * 16];
    pf_stream ps;
    pf_init(&ps, W, n_rows * (int64_t)wrow, Q8_PF && nb_all <= GEMV_NB, Q8_PF_DIST);
    for (int64_t b0 = 0; b0 < nb_all; b0 += GEMV_NB) {
        const int64_t nb = ST_MIN(GEMV_NB, nb_all - b0);
        const block_q8_0 *xb = x + b0;
        q8_prep(xb, nb, q4 ? 8 : 128, dx, corr);
        if (q4) {
            for (int64_t b = 0; b < nb; b++) {
                memcpy(xlo + 16 * b, xb[b].qs, 16);
                memcpy(xhi + 16 * b, xb[b].qs + 16, 16);
            }
        }
        for (int64_t r = 0; r < n_rows; r += GEMV_Q8_ROWS) {
            const int nr = (int)ST_MIN(GEMV_Q8_ROWS, n_rows - r);
            const __mmask8 m = (__mmask8)((1u << nr) - 1); /* nr <= 4 */
            const uint8_t *rows[GEMV_Q8_ROWS];
            for (int k = 0; k < GEMV_Q8_ROWS; k++) { /* a short group repeats its last row */
                rows[k] = W + (size_t)(r + ST_MIN(k, nr - 1)) * wrow + b0 * bsz;
            }
            pf_to(&ps, rows[GEMV_Q8_ROWS - 1] + nb * bsz);
            /* chunks continue the chains where the previous chunk left them */
            __m128 f = b0 == 0 ? _mm_setzero_ps() : _mm_maskz_loadu_ps(m, y + r);
            if (q4) {
                f = gemv_q8_group(true, rows, nb, (const uint8_t *)xb, xlo, xhi, dx, corr, f);
            } else {
                f = gemv_q8_group(false, rows, nb, (const uint8_t *)xb, xlo, xhi, dx, corr, f);
            }
            _mm_mask_storeu_ps(y + r, m, f);
        }
    }
}

/* K-quants. Pass 1 works on 16 rows at once: their scale fields are
 * transposed so each 32-bit word of the 16 rows sits in one zmm, and the
 * unpacking runs across rows (as the GEMM packing in matmul.c does). Pass 2
 * takes 4 rows at a time. The rows are read out of address order, so a
 * software prefetch stream (pf_stream) keeps DRAM busy. */
#define KQ_GROUP 16

/* 16 fp16 values at p + r * stride (0 for rows >= nr) as floats. */
ST_INLINE ST_AVX512 __m512 gather_f16x16(const uint8_t *p, size_t stride, int nr)
{
#define H(r) ((r) < nr ? (uint64_t)ld16(p + (size_t)(r) * stride) : 0u)
#define Q(k) (long long)(H(4 * (k)) | H(4 * (k) + 1) << 16 | H(4 * (k) + 2) << 32 | H(4 * (k) + 3) << 48)
    return _mm512_cvtph_ps(_mm256_setr_epi64x(Q(0), Q(1), Q(2), Q(3)));
#undef Q
#undef H
}

/* Per 16-row group and super-block i, pass 1 leaves (index [i][r]):
 *   dd = d * d_x, ndd = -dmin * d_x (Q6_K: 0), msum (exact int32):
 *   Q4_K/Q5_K sum_j min_j * bsum_j over the 8 sub-blocks of 32,
 *   Q6_K 32 * sum_k sc_k * bsum_k over the 16 sub-blocks of 16;
 * and per sub-block the scale as an int16 pair (sc, sc) in scp[i][s][r].
 * Pass 2 then runs, per row, the canonical chain of matmul.c's tile_kq:
 *   f = fma((float)isum, dd, f); f = fma((float)msum, ndd, f)  (Q4_K/Q5_K)
 *   f = fma((float)(isum - msum), dd, f)                        (Q6_K)
 * isum = sum_s sc_s * dot_s, exact: maddubs pair sums (<= 2*63*127) then
 * vpdpwssd with the scale pairs. */
typedef struct {
    float dd[GEMV_NSB * KQ_GROUP];
    float ndd[GEMV_NSB * KQ_GROUP];
    int32_t msum[GEMV_NSB * KQ_GROUP];
    int32_t scp[GEMV_NSB * 8 * KQ_GROUP]; /* Q6_K: 16 per super-block, half the super-blocks */
} kq_pass1;

/* acc + dpwssd(p, {s, s, ...}) with the scale pair broadcast from memory
 * inside the instruction (GCC does not fold a set1 load into it). */
static inline ST_AVX512 __m256i dpwssd_bcast(__m256i acc, __m256i p, const int32_t *s)
{
    __asm__("vpdpwssd %2%{1to8%}, %1, %0" : "+v"(acc) : "v"(p), "m"(*s));
    return acc;
}

static inline ST_AVX512 __m512i int16_pair(__m512i v)
{
    return _mm512_or_si512(_mm512_and_si512(v, _mm512_set1_epi32(0xFFFF)), _mm512_slli_epi32(v, 16));
}

ST_INLINE ST_AVX512 void k4_pass1(const uint8_t *W, size_t wrow, int nr, int64_t bsz, int64_t nsb,
                                  const block_q8_K *x, const int32_t *bs32, kq_pass1 *p1)
{
    const __m512i kmask1 = _mm512_set1_epi32(0x3f3f3f3f), kmask2 = _mm512_set1_epi32(0x0f0f0f0f);
    const __m512i kmask3 = _mm512_set1_epi32(0x03030303), byte = _mm512_set1_epi32(0xFF);
    for (int64_t i = 0; i < nsb; i++) {
        const uint8_t *blk0 = W + i * bsz;
        __m512i u[4];
        rows_16x4_words(blk0, wrow, nr, offsetof(block_q4_K, scales), u);
        const __m512i sc_lo = _mm512_and_si512(u[0], kmask1);
        const __m512i sc_hi = _mm512_or_si512(_mm512_and_si512(u[2], kmask2),
                                              _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u[0], 6), kmask3), 4));
        const __m512i m_lo = _mm512_and_si512(u[1], kmask1);
        const __m512i m_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u[2], 4), kmask2),
                                             _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u[1], 6), kmask3), 4));
        const __m512 dx = _mm512_set1_ps(x[i].d);
        const __m512 d = gather_f16x16(blk0, wrow, nr);
        const __m512 ndmin = _mm512_sub_ps(_mm512_setzero_ps(), gather_f16x16(blk0 + 2, wrow, nr));
        _mm512_store_ps(p1->dd + 16 * i, _mm512_mul_ps(d, dx));
        _mm512_store_ps(p1->ndd + 16 * i, _mm512_mul_ps(ndmin, dx));
        __m512i msum = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            const __m512i sc = _mm512_and_si512(_mm512_srli_epi32(j < 4 ? sc_lo : sc_hi, 8 * (j % 4)), byte);
            const __m512i m = _mm512_and_si512(_mm512_srli_epi32(j < 4 ? m_lo : m_hi, 8 * (j % 4)), byte);
            _mm512_store_si512((__m512i *)(p1->scp + (8 * i + j) * 16), int16_pair(sc));
            msum = _mm512_add_epi32(msum, _mm512_mullo_epi32(m, _mm512_set1_epi32(bs32[8 * i + j])));
        }
        _mm512_store_si512((__m512i *)(p1->msum + 16 * i), msum);
    }
}

ST_INLINE ST_AVX512 void q6_pass1(const uint8_t *W, size_t wrow, int nr, int64_t nsb, const block_q8_K *x,
                                  kq_pass1 *p1)
{
    for (int64_t i = 0; i < nsb; i++) {
        const uint8_t *blk0 = W + i * (int64_t)sizeof(block_q6_K);
        __m512i u[4];
        rows_16x4_words(blk0, wrow, nr, offsetof(block_q6_K, scales), u);
        const __m512 d = gather_f16x16(blk0 + offsetof(block_q6_K, d), wrow, nr);
        _mm512_store_ps(p1->dd + 16 * i, _mm512_mul_ps(d, _mm512_set1_ps(x[i].d)));
        _mm512_store_ps(p1->ndd + 16 * i, _mm512_setzero_ps());
        __m512i msum = _mm512_setzero_si512();
#pragma GCC unroll 16
        for (int k = 0; k < 16; k++) {
            const __m512i sc = _mm512_srai_epi32(_mm512_slli_epi32(u[k / 4], 24 - 8 * (k % 4)), 24);
            _mm512_store_si512((__m512i *)(p1->scp + (16 * i + k) * 16), int16_pair(sc));
            msum = _mm512_add_epi32(msum, _mm512_mullo_epi32(sc, _mm512_set1_epi32(32 * x[i].bsums[k])));
        }
        _mm512_store_si512((__m512i *)(p1->msum + 16 * i), msum);
    }
}

/* Exact int32 sums of 4 rows' lane vectors, one row per lane. */
static inline ST_AVX512 __m128i hsum4_i32x8(const __m256i a[4])
{
    const __m256i u0 = _mm256_add_epi32(_mm256_unpacklo_epi32(a[0], a[1]), _mm256_unpackhi_epi32(a[0], a[1]));
    const __m256i u1 = _mm256_add_epi32(_mm256_unpacklo_epi32(a[2], a[3]), _mm256_unpackhi_epi32(a[2], a[3]));
    const __m256i h = _mm256_add_epi32(_mm256_unpacklo_epi64(u0, u1), _mm256_unpackhi_epi64(u0, u1));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* 4 rows (r0 within the 16-row group; rows past the end repeat the last
 * valid one and are not stored): the chains of the 4 rows in one xmm. */
ST_INLINE ST_AVX512 __m128 k4_pass2(const bool q5, const uint8_t *const rows[GEMV_ROWS], int64_t bsz, int64_t nsb,
                                    const block_q8_K *x, const kq_pass1 *p1, int r0, __m128 f, pf_stream *ps)
{
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i sixteen = _mm256_set1_epi8(16);
    for (int64_t i = 0; i < nsb; i++) {
        pf_to(ps, rows[0] + GEMV_ROWS * i * bsz);
        __m256i acc[GEMV_ROWS], qh[GEMV_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < GEMV_ROWS; r++) {
            acc[r] = _mm256_setzero_si256();
            if (q5) {
                qh[r] = _mm256_loadu_si256((const __m256i *)((const block_q5_K *)(rows[r] + i * bsz))->qh);
            }
        }
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            const __m256i xl = _mm256_loadu_si256((const __m256i *)(x[i].qs + 64 * c));
            const __m256i xh = _mm256_loadu_si256((const __m256i *)(x[i].qs + 64 * c + 32));
            const int32_t *sp = p1->scp + (8 * i + 2 * c) * 16 + r0;
#pragma GCC unroll 4
            for (int r = 0; r < GEMV_ROWS; r++) {
                const uint8_t *blk = rows[r] + i * bsz;
                const uint8_t *qs = q5 ? ((const block_q5_K *)blk)->qs : ((const block_q4_K *)blk)->qs;
                const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
                __m256i lo = _mm256_and_si256(v, m4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (q5) {
                    lo = _mm256_mask_add_epi8(lo, _mm256_test_epi8_mask(qh[r], _mm256_set1_epi8((char)(1 << (2 * c)))),
                                              lo, sixteen);
                    hi = _mm256_mask_add_epi8(hi, _mm256_test_epi8_mask(qh[r], _mm256_set1_epi8((char)(2 << (2 * c)))),
                                              hi, sixteen);
                }
                acc[r] = dpwssd_bcast(acc[r], _mm256_maddubs_epi16(lo, xl), sp + r);
                acc[r] = dpwssd_bcast(acc[r], _mm256_maddubs_epi16(hi, xh), sp + 16 + r);
            }
        }
        const int k = (int)(16 * i) + r0;
        f = _mm_fmadd_ps(_mm_cvtepi32_ps(hsum4_i32x8(acc)), _mm_loadu_ps(p1->dd + k), f);
        f = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm_loadu_si128((const __m128i *)(p1->msum + k))), _mm_loadu_ps(p1->ndd + k), f);
    }
    return f;
}

ST_INLINE ST_AVX512 __m128 q6_pass2(const uint8_t *const rows[GEMV_ROWS], int64_t nsb, const block_q8_K *x,
                                    const kq_pass1 *p1, int r0, __m128 f, pf_stream *ps)
{
    const int64_t bsz = sizeof(block_q6_K);
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < nsb; i++) {
        pf_to(ps, rows[0] + GEMV_ROWS * i * bsz);
        __m256i acc[GEMV_ROWS];
#pragma GCC unroll 4
        for (int r = 0; r < GEMV_ROWS; r++) {
            acc[r] = _mm256_setzero_si256();
        }
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const int c = 4 * h + k; /* weights 32c..32c+31: scales 2c, 2c+1 */
                const __m256i xq = _mm256_loadu_si256((const __m256i *)(x[i].qs + 32 * c));
                const int32_t *sp = p1->scp + (16 * i + 2 * c) * 16 + r0;
#pragma GCC unroll 4
                for (int r = 0; r < GEMV_ROWS; r++) {
                    const block_q6_K *b = (const block_q6_K *)(rows[r] + i * bsz);
                    const __m256i ql = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (k & 1)));
                    const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
                    const __m256i lo = k < 2 ? _mm256_and_si256(ql, m4) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4);
                    const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m3), 4);
                    /* int16 lanes 0-7 (weights 0-15) take scale 2c, lanes 8-15 scale 2c+1 */
                    const __m256i scv = _mm256_blend_epi32(_mm256_set1_epi32(sp[r]), _mm256_set1_epi32(sp[16 + r]), 0xF0);
                    acc[r] = _mm256_dpwssd_epi32(acc[r], _mm256_maddubs_epi16(_mm256_or_si256(lo, hi), xq), scv);
                }
            }
        }
        const int k = (int)(16 * i) + r0;
        const __m128i isum = _mm_sub_epi32(hsum4_i32x8(acc), _mm_loadu_si128((const __m128i *)(p1->msum + k)));
        f = _mm_fmadd_ps(_mm_cvtepi32_ps(isum), _mm_loadu_ps(p1->dd + k), f);
    }
    return f;
}

static ST_AVX512 void gemv_kquant(st_type t, const uint8_t *W, size_t wrow, int64_t n_rows, int64_t n_in,
                                  const block_q8_K *x, float *y)
{
    const int64_t nsb_all = n_in / QK_K;
    const int64_t bsz = (int64_t)st_type_block_bytes(t);
    const bool q6 = t == ST_Q6_K;
    const int64_t step = q6 ? GEMV_NSB / 2 : GEMV_NSB;
    _Alignas(64) int32_t bs32[GEMV_NSB * 8]; /* block sums of 32 (Q4_K/Q5_K) */
    _Alignas(64) kq_pass1 p1;
    for (int64_t r = 0; r < n_rows; r++) {
        y[r] = 0.0f;
    }
    pf_stream ps;
    pf_init(&ps, W, n_rows * (int64_t)wrow, nsb_all <= step, PF_DIST); /* address order only without chunks */
    for (int64_t i0 = 0; i0 < nsb_all; i0 += step) {
        const int64_t nsb = ST_MIN(step, nsb_all - i0);
        const block_q8_K *xb = x + i0;
        if (!q6) {
            for (int64_t i = 0; i < nsb; i++) {
                for (int j = 0; j < 8; j++) {
                    bs32[8 * i + j] = xb[i].bsums[2 * j] + xb[i].bsums[2 * j + 1];
                }
            }
        }
        const uint8_t *Wb = W + i0 * bsz;
        for (int64_t g = 0; g < n_rows; g += KQ_GROUP) {
            const int nr = (int)ST_MIN(KQ_GROUP, n_rows - g);
            const uint8_t *Wg = Wb + (size_t)g * wrow;
            if (q6) {
                q6_pass1(Wg, wrow, nr, nsb, xb, &p1);
            } else {
                k4_pass1(Wg, wrow, nr, bsz, nsb, xb, bs32, &p1);
            }
            for (int r = 0; r < nr; r += GEMV_ROWS) {
                const int n4 = ST_MIN(GEMV_ROWS, nr - r);
                const __mmask8 m = (__mmask8)((1u << n4) - 1);
                const uint8_t *rows[GEMV_ROWS];
                for (int k = 0; k < GEMV_ROWS; k++) { /* a short group repeats its last row */
                    rows[k] = Wg + (size_t)(r + ST_MIN(k, n4 - 1)) * wrow;
                }
                /* the chains live in y across chunks */
                __m128 f = _mm_maskz_loadu_ps(m, y + g + r);
                if (t == ST_Q4_K) {
                    f = k4_pass2(false, rows, bsz, nsb, xb, &p1, r, f, &ps);
                } else if (t == ST_Q5_K) {
                    f = k4_pass2(true, rows, bsz, nsb, xb, &p1, r, f, &ps);
                } else {
                    f = q6_pass2(rows, nsb, xb, &p1, r, f, &ps);
                }
                _mm_mask_storeu_ps(y + g + r, m, f);
            }
        }
    }
}

ST_AVX512 bool st_gemv_avx512(st_type t, const void *W, size_t wrow, int64_t n_rows, int64_t n_in, const void *x,
                              float *y)
{
    switch (t) {
    case ST_Q8_0:
    case ST_Q4_0:
        gemv_q8_family(t == ST_Q4_0, W, wrow, n_rows, n_in, x, y);
        return true;
    case ST_Q4_K:
    case ST_Q5_K:
    case ST_Q6_K:
        gemv_kquant(t, W, wrow, n_rows, n_in, x, y);
        return true;
    default:
        return false;
    }
}

#else
typedef int st_quant_avx512_unused; /* keep the translation unit non-empty */
#endif
