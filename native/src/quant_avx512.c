/* AVX-512 (F, BW, VL, DQ, VNNI) dot products; BF16 also with AVX512_BF16.
 *
 * Like quant_avx2.c, every function has its own target attribute and is only
 * reached through st_vec_dot_get after a CPU check. The integer kernels use
 * VNNI (vpdpbusd / vpdpwssd) instead of the maddubs + madd pairs of AVX2; the
 * float kernels use 512-bit vectors with masked tails.
 */
#include "quant.h"

#include "common.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#define ST_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define ST_AVX512BF16 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16,avx2,fma,f16c")))

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

#else
typedef int st_quant_avx512_unused; /* keep the translation unit non-empty */
#endif
