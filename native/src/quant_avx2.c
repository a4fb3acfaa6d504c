/* AVX2 + FMA + F16C dot products and row conversions.
 *
 * Compiled for baseline x86-64: every function carries its own target
 * attribute and is only reached through st_vec_dot_get / the row converters,
 * which check the CPU first. The quantized kernels follow ggml's AVX2 code
 * (ggml-cpu/arch/x86/quants.c), so results match llama.cpp's closely.
 */
#include "quant.h"

#include "common.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#define ST_AVX2 __attribute__((target("avx2,fma,f16c")))

/* ------------------------------------------------------------- helpers -- */

static inline ST_AVX2 float hsum_f32x8(__m256 x)
{
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

static inline ST_AVX2 float h2f_f16c(st_half h)
{
    return _cvtsh_ss(h);
}

/* 32 nibbles -> 32 bytes: low nibbles first, then high nibbles. */
static inline ST_AVX2 __m256i nibbles_32(const uint8_t *p)
{
    const __m128i tmp = _mm_loadu_si128((const __m128i *)p);
    const __m256i bytes = _mm256_set_m128i(_mm_srli_epi16(tmp, 4), tmp);
    return _mm256_and_si256(_mm256_set1_epi8(0xF), bytes);
}

/* Signed int8 x int8 dot in groups of 4, as floats (8 lanes). */
static inline ST_AVX2 __m256 mul_sum_i8_pairs_float(__m256i x, __m256i y)
{
    const __m256i ax = _mm256_sign_epi8(x, x);
    const __m256i sy = _mm256_sign_epi8(y, x);
    const __m256i dot = _mm256_maddubs_epi16(ax, sy);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), dot));
}

/* pshufb pattern that spreads int16 lane i over all lanes of each 128-bit half */
static inline ST_AVX2 __m256i scale_shuffle_k4(int i)
{
    return _mm256_set1_epi16((short)((2 * i) | ((2 * i + 1) << 8)));
}

/* pshufb pattern: int8 scale 2i on bytes 0..7, scale 2i+1 on bytes 8..15 */
static inline ST_AVX2 __m128i scale_shuffle_q6(int i)
{
    return _mm_set_epi64x((long long)(0x0101010101010101ull * (uint64_t)(2 * i + 1)),
                          (long long)(0x0101010101010101ull * (uint64_t)(2 * i)));
}

/* Unpack a K-quant 12-byte scale field into 8 scales then 8 mins (bytes). */
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

/* --------------------------------------------------------- conversions -- */

ST_AVX2 void st_fp16_to_fp32_row_f16c(const st_half *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    }
    for (; i < n; i++) {
        dst[i] = _cvtsh_ss(src[i]);
    }
}

ST_AVX2 void st_fp32_to_fp16_row_f16c(const float *src, st_half *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++) {
        dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
    }
}

/* llama.cpp's quantize_row_q8_0 (AVX2 path), instruction for instruction. */
ST_AVX2 void st_quantize_row_q8_0_x86_avx2(const float *x, block_q8_0 *y, int64_t k)
{
    const int64_t nb = k / QK8_0;
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t i = 0; i < nb; i++) {
        __m256 v0 = _mm256_loadu_ps(x);
        __m256 v1 = _mm256_loadu_ps(x + 8);
        __m256 v2 = _mm256_loadu_ps(x + 16);
        __m256 v3 = _mm256_loadu_ps(x + 24);
        x += 32;
        __m256 max_abs = _mm256_andnot_ps(sign_bit, v0);
        max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v1));
        max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v2));
        max_abs = _mm256_max_ps(max_abs, _mm256_andnot_ps(sign_bit, v3));
        __m128 max4 = _mm_max_ps(_mm256_extractf128_ps(max_abs, 1), _mm256_castps256_ps128(max_abs));
        max4 = _mm_max_ps(max4, _mm_movehl_ps(max4, max4));
        max4 = _mm_max_ss(max4, _mm_movehdup_ps(max4));
        const float max_scalar = _mm_cvtss_f32(max4);
        const float d = max_scalar / 127.f;
        y[i].d = (st_half)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        const float id = max_scalar != 0.0f ? 127.f / max_scalar : 0.0f;
        const __m256 mul = _mm256_set1_ps(id);
        v0 = _mm256_round_ps(_mm256_mul_ps(v0, mul), _MM_ROUND_NEAREST);
        v1 = _mm256_round_ps(_mm256_mul_ps(v1, mul), _MM_ROUND_NEAREST);
        v2 = _mm256_round_ps(_mm256_mul_ps(v2, mul), _MM_ROUND_NEAREST);
        v3 = _mm256_round_ps(_mm256_mul_ps(v3, mul), _MM_ROUND_NEAREST);
        __m256i i0 = _mm256_cvtps_epi32(v0);
        __m256i i1 = _mm256_cvtps_epi32(v1);
        __m256i i2 = _mm256_cvtps_epi32(v2);
        __m256i i3 = _mm256_cvtps_epi32(v3);
        i0 = _mm256_packs_epi32(i0, i1);
        i2 = _mm256_packs_epi32(i2, i3);
        i0 = _mm256_packs_epi16(i0, i2);
        i0 = _mm256_permutevar8x32_epi32(i0, perm);
        _mm256_storeu_si256((__m256i *)y[i].qs, i0);
    }
}

/* ggml's quantize_row_q8_K_ref, vectorized with identical results: the same
 * float products, round half to even (cvtps2dq in the default rounding mode
 * equals ggml's nearest_int here, |v| <= 127.5), and the signed value of the
 * first element of largest magnitude. */
ST_AVX2 void st_quantize_row_q8_K_avx2(const float *x, block_q8_K *y, int64_t k)
{
    const int64_t nb = k / QK_K;
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t i = 0; i < nb; i++, x += QK_K) {
        __m256 vmax = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) {
            vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign_bit, _mm256_loadu_ps(x + j)));
        }
        __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(vmax, 1), _mm256_castps256_ps128(vmax));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        if (!amax) {
            y[i].d = 0;
            memset(y[i].qs, 0, QK_K);
            memset(y[i].bsums, 0, sizeof(y[i].bsums));
            continue;
        }
        float max = 0.0f;
        const __m256 va = _mm256_set1_ps(amax);
        for (int j = 0; j < QK_K; j += 8) {
            const __m256 v = _mm256_loadu_ps(x + j);
            const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign_bit, v), va, _CMP_EQ_OQ));
            if (mask) {
                max = x[j + __builtin_ctz((unsigned)mask)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        const __m256i q127 = _mm256_set1_epi32(127);
        for (int j = 0; j < QK_K; j += 32) {
            __m256i i0 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j))), q127);
            __m256i i1 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 8))), q127);
            __m256i i2 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 16))), q127);
            __m256i i3 = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 24))), q127);
            i0 = _mm256_packs_epi32(i0, i1);
            i2 = _mm256_packs_epi32(i2, i3);
            const __m256i q = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(i0, i2), perm);
            _mm256_storeu_si256((__m256i *)(y[i].qs + j), q);
            /* sums of 16: widen to int16 and add pairs of lanes */
            const __m256i w0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q));
            const __m256i w1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1));
            const __m256i s0 = _mm256_madd_epi16(w0, _mm256_set1_epi16(1));
            const __m256i s1 = _mm256_madd_epi16(w1, _mm256_set1_epi16(1));
            __m256i h = _mm256_hadd_epi32(s0, s1); /* lane-wise pairs */
            h = _mm256_hadd_epi32(h, h);
            /* h: [s0a s0b s1a s1b | s0c s0d s1c s1d] per 128-bit half, sums of 4 */
            const __m128i lo = _mm256_castsi256_si128(h), hi = _mm256_extracti128_si256(h, 1);
            const int32_t sum0 = _mm_extract_epi32(lo, 0) + _mm_extract_epi32(hi, 0);
            const int32_t sum1 = _mm_extract_epi32(lo, 1) + _mm_extract_epi32(hi, 1);
            y[i].bsums[j / 16] = (int16_t)sum0;
            y[i].bsums[j / 16 + 1] = (int16_t)sum1;
        }
        y[i].d = 1 / iscale;
    }
}

/* st_fp32_to_bf16 for 8 floats at a time (same rounding, NaN -> quiet). */
ST_AVX2 void st_fp32_to_bf16_row_avx2(const float *src, uint16_t *dst, int64_t n)
{
    int64_t i = 0;
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    const __m256i inf = _mm256_set1_epi32(0x7f800000);
    for (; i + 8 <= n; i += 8) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(src + i));
        const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), inf);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
        const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
        const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(64));
        const __m256i r = _mm256_blendv_epi8(rounded, quiet, is_nan);
        const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        _mm_storeu_si128((__m128i *)(dst + i), packed);
    }
    for (; i < n; i++) {
        dst[i] = st_fp32_to_bf16(src[i]);
    }
}

/* --------------------------------------------------------- float dots -- */

ST_AVX2 void st_vec_dot_f32_avx2(int n, float *s, const void *vw, const void *vx)
{
    const float *w = vw;
    const float *x = vx;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int k = 0; k < 4; k++) {
            acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8 * k), _mm256_loadu_ps(x + i + 8 * k), acc[k]);
        }
    }
    for (; i + 8 <= n; i += 8) {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), acc[0]);
    }
    float sum = hsum_f32x8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) {
        sum += w[i] * x[i];
    }
    *s = sum;
}

ST_AVX2 void st_vec_dot_f16_avx2(int n, float *s, const void *vw, const void *vx)
{
    const st_half *w = vw;
    const st_half *x = vx;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int k = 0; k < 4; k++) {
            const __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8 * k)));
            const __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + 8 * k)));
            acc[k] = _mm256_fmadd_ps(wv, xv, acc[k]);
        }
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 wv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
        const __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        acc[0] = _mm256_fmadd_ps(wv, xv, acc[0]);
    }
    float sum = hsum_f32x8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) {
        sum += h2f_f16c(w[i]) * h2f_f16c(x[i]);
    }
    *s = sum;
}

static inline ST_AVX2 __m256 bf16x8_load(const uint16_t *p)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

ST_AVX2 void st_vec_dot_bf16_avx2(int n, float *s, const void *vw, const void *vx)
{
    const uint16_t *w = vw;
    const uint16_t *x = vx;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        for (int k = 0; k < 4; k++) {
            acc[k] = _mm256_fmadd_ps(bf16x8_load(w + i + 8 * k), bf16x8_load(x + i + 8 * k), acc[k]);
        }
    }
    for (; i + 8 <= n; i += 8) {
        acc[0] = _mm256_fmadd_ps(bf16x8_load(w + i), bf16x8_load(x + i), acc[0]);
    }
    float sum = hsum_f32x8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) {
        sum += st_bf16_to_fp32(w[i]) * st_bf16_to_fp32(x[i]);
    }
    *s = sum;
}

/* ----------------------------------------------------- 32-element quants -- */

ST_AVX2 void st_vec_dot_q4_0_avx2(int n, float *s, const void *vw, const void *vx)
{
    const block_q4_0 *w = vw;
    const block_q8_0 *x = vx;
    const int nb = n / QK8_0;
    __m256 acc = _mm256_setzero_ps();
    const __m256i off = _mm256_set1_epi8(8);
    for (int ib = 0; ib < nb; ++ib) {
        const __m256 d = _mm256_set1_ps(h2f_f16c(w[ib].d) * h2f_f16c(x[ib].d));
        const __m256i qw = _mm256_sub_epi8(nibbles_32(w[ib].qs), off);
        const __m256i qx = _mm256_loadu_si256((const __m256i *)x[ib].qs);
        acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qw, qx), acc);
    }
    *s = hsum_f32x8(acc);
}

ST_AVX2 void st_vec_dot_q8_0_avx2(int n, float *s, const void *vw, const void *vx)
{
    const block_q8_0 *w = vw;
    const block_q8_0 *x = vx;
    const int nb = n / QK8_0;
    __m256 acc = _mm256_setzero_ps();
    for (int ib = 0; ib < nb; ++ib) {
        const __m256 d = _mm256_set1_ps(h2f_f16c(w[ib].d) * h2f_f16c(x[ib].d));
        const __m256i qw = _mm256_loadu_si256((const __m256i *)w[ib].qs);
        const __m256i qx = _mm256_loadu_si256((const __m256i *)x[ib].qs);
        acc = _mm256_fmadd_ps(d, mul_sum_i8_pairs_float(qw, qx), acc);
    }
    *s = hsum_f32x8(acc);
}

/* --------------------------------------------------------------- K-quants -- */

ST_AVX2 void st_vec_dot_q4_K_avx2(int n, float *s, const void *vw, const void *vx)
{
    const block_q4_K *w = vw;
    const block_q8_K *x = vx;
    const int nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    uint32_t utmp[4];
    for (int i = 0; i < nb; ++i) {
        const float d = x[i].d * h2f_f16c(w[i].d);
        const float dmin = -x[i].d * h2f_f16c(w[i].dmin);
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
            const __m256i scale_l = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 0));
            const __m256i scale_h = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 1));
            const __m256i q4bits = _mm256_loadu_si256((const __m256i *)q4);
            q4 += 32;
            const __m256i q4l = _mm256_and_si256(q4bits, m4);
            const __m256i q4h = _mm256_and_si256(_mm256_srli_epi16(q4bits, 4), m4);
            const __m256i q8l = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
            const __m256i q8h = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16l, p16h));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    acc_m = _mm_add_ss(acc_m, _mm_movehdup_ps(acc_m));
    *s = hsum_f32x8(acc) + _mm_cvtss_f32(acc_m);
}

ST_AVX2 void st_vec_dot_q5_K_avx2(int n, float *s, const void *vw, const void *vx)
{
    const block_q5_K *w = vw;
    const block_q8_K *x = vx;
    const int nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m128i mzero = _mm_setzero_si128();
    const __m256i mone = _mm256_set1_epi8(1);
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.f;
    uint32_t utmp[4];
    for (int i = 0; i < nb; ++i) {
        const uint8_t *q5 = w[i].qs;
        const int8_t *q8 = x[i].qs;
        const float d = x[i].d * h2f_f16c(w[i].d);
        const float dmin = -x[i].d * h2f_f16c(w[i].dmin);
        k4_scales_mins(w[i].scales, utmp);
        const __m256i mins_and_scales =
            _mm256_cvtepu8_epi16(_mm_set_epi32((int)utmp[3], (int)utmp[2], (int)utmp[1], (int)utmp[0]));
        const __m256i q8sums = _mm256_loadu_si256((const __m256i *)x[i].bsums);
        const __m128i q8s = _mm_hadd_epi16(_mm256_extracti128_si256(q8sums, 0), _mm256_extracti128_si256(q8sums, 1));
        const __m128i prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_and_scales, 1), q8s);
        const __m128i hsum = _mm_hadd_epi32(_mm_hadd_epi32(prod, mzero), mzero);
        summs += dmin * (float)_mm_extract_epi32(hsum, 0);
        const __m128i sc128 = _mm256_extracti128_si256(mins_and_scales, 0);
        const __m256i scales = _mm256_set_m128i(sc128, sc128);
        const __m256i hbits = _mm256_loadu_si256((const __m256i *)w[i].qh);
        __m256i hmask = mone;
        __m256i sumi = _mm256_setzero_si256();
        int bit = 0;
        for (int j = 0; j < QK_K / 64; ++j) {
            const __m256i scale_0 = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 0));
            const __m256i scale_1 = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 1));
            const __m256i q5bits = _mm256_loadu_si256((const __m256i *)q5);
            q5 += 32;
            const __m256i q5l_0 = _mm256_and_si256(q5bits, m4);
            const __m256i q5h_0 = _mm256_slli_epi16(_mm256_srl_epi16(_mm256_and_si256(hbits, hmask), _mm_cvtsi32_si128(bit++)), 4);
            const __m256i q5_0 = _mm256_add_epi8(q5l_0, q5h_0);
            hmask = _mm256_slli_epi16(hmask, 1);
            const __m256i q5l_1 = _mm256_and_si256(_mm256_srli_epi16(q5bits, 4), m4);
            const __m256i q5h_1 = _mm256_slli_epi16(_mm256_srl_epi16(_mm256_and_si256(hbits, hmask), _mm_cvtsi32_si128(bit++)), 4);
            const __m256i q5_1 = _mm256_add_epi8(q5l_1, q5h_1);
            hmask = _mm256_slli_epi16(hmask, 1);
            const __m256i q8_0 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i q8_1 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i p16_0 = _mm256_madd_epi16(scale_0, _mm256_maddubs_epi16(q5_0, q8_0));
            const __m256i p16_1 = _mm256_madd_epi16(scale_1, _mm256_maddubs_epi16(q5_1, q8_1));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_f32x8(acc) + summs;
}

ST_AVX2 void st_vec_dot_q6_K_avx2(int n, float *s, const void *vw, const void *vx)
{
    const block_q6_K *w = vw;
    const block_q8_K *x = vx;
    const int nb = n / QK_K;
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m256i m15 = _mm256_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < nb; ++i) {
        const float d = x[i].d * h2f_f16c(w[i].d);
        const uint8_t *q4 = w[i].ql;
        const uint8_t *qh = w[i].qh;
        const int8_t *q8 = x[i].qs;
        const __m256i q8sums = _mm256_loadu_si256((const __m256i *)x[i].bsums);
        const __m128i scales = _mm_loadu_si128((const __m128i *)w[i].scales);
        const __m256i scales_16 = _mm256_cvtepi8_epi16(scales);
        const __m256i q8sclsub = _mm256_slli_epi32(_mm256_madd_epi16(q8sums, scales_16), 5);
        __m256i sumi = _mm256_setzero_si256();
        int is = 0;
        for (int j = 0; j < QK_K / 128; ++j) {
            const __m256i q4bits1 = _mm256_loadu_si256((const __m256i *)q4);
            q4 += 32;
            const __m256i q4bits2 = _mm256_loadu_si256((const __m256i *)q4);
            q4 += 32;
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
            const __m256i q8_0 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i q8_1 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i q8_2 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            const __m256i q8_3 = _mm256_loadu_si256((const __m256i *)q8);
            q8 += 32;
            __m256i p16_0 = _mm256_maddubs_epi16(q4_0, q8_0);
            __m256i p16_1 = _mm256_maddubs_epi16(q4_1, q8_1);
            __m256i p16_2 = _mm256_maddubs_epi16(q4_2, q8_2);
            __m256i p16_3 = _mm256_maddubs_epi16(q4_3, q8_3);
            const __m128i scale_0 = _mm_shuffle_epi8(scales, scale_shuffle_q6(is + 0));
            const __m128i scale_1 = _mm_shuffle_epi8(scales, scale_shuffle_q6(is + 1));
            const __m128i scale_2 = _mm_shuffle_epi8(scales, scale_shuffle_q6(is + 2));
            const __m128i scale_3 = _mm_shuffle_epi8(scales, scale_shuffle_q6(is + 3));
            is += 4;
            p16_0 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_0), p16_0);
            p16_1 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_1), p16_1);
            p16_2 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_2), p16_2);
            p16_3 = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scale_3), p16_3);
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_0, p16_1));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p16_2, p16_3));
        }
        sumi = _mm256_sub_epi32(sumi, q8sclsub);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    *s = hsum_f32x8(acc);
}

#else
typedef int st_quant_avx2_unused; /* keep the translation unit non-empty */
#endif
