/* Tensor types: the type table, scalar dequantization and the plain-C dot
 * products that every SIMD kernel is tested against, plus run-time kernel
 * selection (the quantizers are in quant_encode.c).
 *
 * Everything here is bit-exact with ggml (ggml-quants.c, ggml-cpu/quants.c).
 * That needs unfused float arithmetic: clang contracts a*b+c into an FMA by
 * default, GCC does in GNU modes, so contraction is switched off for this file.
 */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "quant.h"

#include "common.h"

#include <math.h>
#include <string.h>


/* ------------------------------------------------------------ type table -- */

typedef struct {
    const char *name;
    int64_t block_elems; /* elements per block */
    size_t block_bytes;  /* bytes per block */
    bool supported;      /* can be a weight we dequantize and dot */
} type_info;

static const type_info type_table[ST_TYPE_COUNT] = {
    [ST_F32] = {"f32", 1, 4, true},
    [ST_F16] = {"f16", 1, 2, true},
    [ST_Q4_0] = {"q4_0", QK4_0, sizeof(block_q4_0), true},
    [ST_Q4_1] = {"q4_1", 32, 20, false},
    [ST_Q5_0] = {"q5_0", 32, 22, false},
    [ST_Q5_1] = {"q5_1", 32, 24, false},
    [ST_Q8_0] = {"q8_0", QK8_0, sizeof(block_q8_0), true},
    [ST_Q8_1] = {"q8_1", 32, 36, false},
    [ST_Q2_K] = {"q2_K", QK_K, 84, false},
    [ST_Q3_K] = {"q3_K", QK_K, 110, false},
    [ST_Q4_K] = {"q4_K", QK_K, sizeof(block_q4_K), true},
    [ST_Q5_K] = {"q5_K", QK_K, sizeof(block_q5_K), true},
    [ST_Q6_K] = {"q6_K", QK_K, sizeof(block_q6_K), true},
    [ST_Q8_K] = {"q8_K", QK_K, sizeof(block_q8_K), false}, /* activations only */
    [ST_BF16] = {"bf16", 1, 2, true},
};

static const type_info *info(st_type t)
{
    if ((unsigned)t >= ST_TYPE_COUNT || type_table[t].name == NULL) {
        return NULL;
    }
    return &type_table[t];
}

int64_t st_type_block_elems(st_type t)
{
    const type_info *ti = info(t);
    return ti != NULL ? ti->block_elems : 0;
}

size_t st_type_block_bytes(st_type t)
{
    const type_info *ti = info(t);
    return ti != NULL ? ti->block_bytes : 0;
}

const char *st_type_name(st_type t)
{
    const type_info *ti = info(t);
    return ti != NULL ? ti->name : "unknown";
}

bool st_type_supported(st_type t)
{
    const type_info *ti = info(t);
    return ti != NULL && ti->supported;
}

size_t st_row_bytes(st_type t, int64_t n)
{
    const type_info *ti = info(t);
    if (ti == NULL || n < 0) {
        return 0;
    }
    return (size_t)(n / ti->block_elems) * ti->block_bytes;
}

st_type st_vec_dot_type(st_type t)
{
    switch (t) {
    case ST_Q4_0:
    case ST_Q8_0:
        return ST_Q8_0;
    case ST_Q4_K:
    case ST_Q5_K:
    case ST_Q6_K:
        return ST_Q8_K;
    default:
        return t; /* F32, F16, BF16 */
    }
}

/* ------------------------------------------------------- dequantization -- */

static inline float h2f(st_half h)
{
    return st_fp16_to_fp32(h);
}

static void dequant_q4_0(const block_q4_0 *x, float *y, int64_t k)
{
    const int64_t nb = k / QK4_0;
    for (int64_t i = 0; i < nb; i++) {
        const float d = h2f(x[i].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            const int x0 = (x[i].qs[j] & 0x0F) - 8;
            const int x1 = (x[i].qs[j] >> 4) - 8;
            y[i * QK4_0 + j] = x0 * d;
            y[i * QK4_0 + j + QK4_0 / 2] = x1 * d;
        }
    }
}

static void dequant_q8_0(const block_q8_0 *x, float *y, int64_t k)
{
    const int64_t nb = k / QK8_0;
    for (int64_t i = 0; i < nb; i++) {
        const float d = h2f(x[i].d);
        for (int j = 0; j < QK8_0; ++j) {
            y[i * QK8_0 + j] = x[i].qs[j] * d;
        }
    }
}

static void dequant_q4_K(const block_q4_K *x, float *y, int64_t k)
{
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = x[i].qs;
        const float d = h2f(x[i].d);
        const float min = h2f(x[i].dmin);
        int is = 0;
        uint8_t sc, m;
        for (int j = 0; j < QK_K; j += 64) {
            st_k4_scale_min(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc;
            const float m1 = min * m;
            st_k4_scale_min(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc;
            const float m2 = min * m;
            for (int l = 0; l < 32; ++l) {
                *y++ = d1 * (q[l] & 0xF) - m1;
            }
            for (int l = 0; l < 32; ++l) {
                *y++ = d2 * (q[l] >> 4) - m2;
            }
            q += 32;
            is += 2;
        }
    }
}

static void dequant_q5_K(const block_q5_K *x, float *y, int64_t k)
{
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *ql = x[i].qs;
        const uint8_t *qh = x[i].qh;
        const float d = h2f(x[i].d);
        const float min = h2f(x[i].dmin);
        int is = 0;
        uint8_t sc, m;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < QK_K; j += 64) {
            st_k4_scale_min(is + 0, x[i].scales, &sc, &m);
            const float d1 = d * sc;
            const float m1 = min * m;
            st_k4_scale_min(is + 1, x[i].scales, &sc, &m);
            const float d2 = d * sc;
            const float m2 = min * m;
            for (int l = 0; l < 32; ++l) {
                *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            }
            for (int l = 0; l < 32; ++l) {
                *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            }
            ql += 32;
            is += 2;
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

static void dequant_q6_K(const block_q6_K *x, float *y, int64_t k)
{
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        const float d = h2f(x[i].d);
        const uint8_t *ql = x[i].ql;
        const uint8_t *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int n = 0; n < QK_K; n += 128) {
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int8_t q1 = (int8_t)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int8_t q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int8_t q3 = (int8_t)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int8_t q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l + 0] = d * sc[is + 0] * q1;
                y[l + 32] = d * sc[is + 2] * q2;
                y[l + 64] = d * sc[is + 4] * q3;
                y[l + 96] = d * sc[is + 6] * q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
    }
}

static void dequant_q8_K(const block_q8_K *x, float *y, int64_t k)
{
    const int64_t nb = k / QK_K;
    for (int64_t i = 0; i < nb; i++) {
        for (int j = 0; j < QK_K; ++j) {
            *y++ = x[i].d * x[i].qs[j];
        }
    }
}

void st_dequant_row(st_type t, const void *src, float *dst, int64_t n)
{
    switch (t) {
    case ST_F32:
        memcpy(dst, src, (size_t)n * sizeof(float));
        break;
    case ST_F16:
        st_fp16_to_fp32_row(src, dst, n);
        break;
    case ST_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) {
            dst[i] = st_bf16_to_fp32(s[i]);
        }
        break;
    }
    case ST_Q4_0:
        dequant_q4_0(src, dst, n);
        break;
    case ST_Q8_0:
        dequant_q8_0(src, dst, n);
        break;
    case ST_Q4_K:
        dequant_q4_K(src, dst, n);
        break;
    case ST_Q5_K:
        dequant_q5_K(src, dst, n);
        break;
    case ST_Q6_K:
        dequant_q6_K(src, dst, n);
        break;
    case ST_Q8_K:
        dequant_q8_K(src, dst, n);
        break;
    default:
        memset(dst, 0, (size_t)n * sizeof(float));
        break;
    }
}

/* ------------------------------------------------------ row conversions -- */

#if defined(__x86_64__)
/* F16C. GCC's __builtin_cpu_supports knows it; clang's does not, and asking
 * cpuid directly costs microseconds under a hypervisor (every call traps), so
 * there it is taken as implied by AVX2: every AVX2 CPU shipped has F16C. */
static bool cpu_has_f16c(void)
{
#if defined(__clang__)
    return __builtin_cpu_supports("avx2");
#else
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#endif
}
#endif

void st_fp16_to_fp32_row(const st_half *src, float *dst, int64_t n)
{
#if defined(__x86_64__)
    if (cpu_has_f16c()) {
        st_fp16_to_fp32_row_f16c(src, dst, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        dst[i] = st_fp16_to_fp32(src[i]);
    }
}

void st_fp32_to_fp16_row(const float *src, st_half *dst, int64_t n)
{
#if defined(__x86_64__)
    if (cpu_has_f16c()) {
        st_fp32_to_fp16_row_f16c(src, dst, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        dst[i] = st_fp32_to_fp16(src[i]);
    }
}

void st_fp32_to_bf16_row(const float *src, uint16_t *dst, int64_t n)
{
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
        st_fp32_to_bf16_row_avx2(src, dst, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        dst[i] = st_fp32_to_bf16(src[i]);
    }
}

/* ------------------------------------------------- reference dot products -- */
/* Same arithmetic order as ggml's *_generic kernels. */

static void dot_f32_ref(int n, float *s, const void *vw, const void *vx)
{
    const float *w = vw;
    const float *x = vx;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        sum += (double)(w[i] * x[i]);
    }
    *s = (float)sum;
}

static void dot_f16_ref(int n, float *s, const void *vw, const void *vx)
{
    const st_half *w = vw;
    const st_half *x = vx;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        sum += (double)(h2f(w[i]) * h2f(x[i]));
    }
    *s = (float)sum;
}

static void dot_bf16_ref(int n, float *s, const void *vw, const void *vx)
{
    const uint16_t *w = vw;
    const uint16_t *x = vx;
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        sum += (double)(st_bf16_to_fp32(w[i]) * st_bf16_to_fp32(x[i]));
    }
    *s = (float)sum;
}

static void dot_q4_0_ref(int n, float *s, const void *vw, const void *vx)
{
    const block_q4_0 *w = vw;
    const block_q8_0 *x = vx;
    const int nb = n / QK8_0;
    float sumf = 0;
    for (int ib = 0; ib < nb; ++ib) {
        int sumi0 = 0;
        int sumi1 = 0;
        for (int j = 0; j < QK8_0 / 2; ++j) {
            const int v0 = (w[ib].qs[j] & 0x0F) - 8;
            const int v1 = (w[ib].qs[j] >> 4) - 8;
            sumi0 += v0 * x[ib].qs[j];
            sumi1 += v1 * x[ib].qs[j + QK8_0 / 2];
        }
        int sumi = sumi0 + sumi1;
        sumf += sumi * h2f(w[ib].d) * h2f(x[ib].d);
    }
    *s = sumf;
}

static void dot_q8_0_ref(int n, float *s, const void *vw, const void *vx)
{
    const block_q8_0 *w = vw;
    const block_q8_0 *x = vx;
    const int nb = n / QK8_0;
    float sumf = 0;
    for (int ib = 0; ib < nb; ++ib) {
        int sumi = 0;
        for (int j = 0; j < QK8_0; j++) {
            sumi += w[ib].qs[j] * x[ib].qs[j];
        }
        sumf += sumi * (h2f(w[ib].d) * h2f(x[ib].d));
    }
    *s = sumf;
}

/* The K-quant references share one shape: unpack the weights of a super-block
 * into int8, then accumulate scale * q * x in 8 int32 lanes as ggml does. */
static void dot_kquant_accumulate(const int8_t *aux8, const int8_t *q8, const int32_t *scales, int group,
                                  int32_t aux32[8])
{
    int16_t aux16[8];
    for (int j = 0; j < QK_K / group; ++j) {
        const int32_t scale = scales[j];
        for (int k = 0; k < group / 8; ++k) {
            for (int l = 0; l < 8; ++l) {
                aux16[l] = (int16_t)(q8[l] * aux8[l]);
            }
            for (int l = 0; l < 8; ++l) {
                aux32[l] += scale * aux16[l];
            }
            q8 += 8;
            aux8 += 8;
        }
    }
}

static void unpack_k4_scales(const uint8_t *packed, int32_t scales[8], int32_t mins[8])
{
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        st_k4_scale_min(j, packed, &sc, &m);
        scales[j] = sc;
        mins[j] = m;
    }
}

static void dot_q4_K_ref(int n, float *s, const void *vw, const void *vx)
{
    const block_q4_K *w = vw;
    const block_q8_K *x = vx;
    const int nb = n / QK_K;
    int8_t aux8[QK_K];
    float sums[8] = {0};
    float sumf = 0;
    for (int i = 0; i < nb; ++i) {
        const uint8_t *q4 = w[i].qs;
        int8_t *a = aux8;
        for (int j = 0; j < QK_K / 64; ++j) {
            for (int l = 0; l < 32; ++l) {
                a[l] = (int8_t)(q4[l] & 0xF);
            }
            a += 32;
            for (int l = 0; l < 32; ++l) {
                a[l] = (int8_t)(q4[l] >> 4);
            }
            a += 32;
            q4 += 32;
        }
        int32_t scales[8], mins[8];
        unpack_k4_scales(w[i].scales, scales, mins);
        int sumi = 0;
        for (int j = 0; j < QK_K / 16; ++j) {
            sumi += x[i].bsums[j] * mins[j / 2];
        }
        int32_t aux32[8] = {0};
        dot_kquant_accumulate(aux8, x[i].qs, scales, 32, aux32);
        const float d = h2f(w[i].d) * x[i].d;
        for (int l = 0; l < 8; ++l) {
            sums[l] += d * aux32[l];
        }
        const float dmin = h2f(w[i].dmin) * x[i].d;
        sumf -= dmin * sumi;
    }
    for (int l = 0; l < 8; ++l) {
        sumf += sums[l];
    }
    *s = sumf;
}

static void dot_q5_K_ref(int n, float *s, const void *vw, const void *vx)
{
    const block_q5_K *w = vw;
    const block_q8_K *x = vx;
    const int nb = n / QK_K;
    int8_t aux8[QK_K];
    float sums[8] = {0};
    float sumf = 0;
    for (int i = 0; i < nb; ++i) {
        const uint8_t *q4 = w[i].qs;
        const uint8_t *hm = w[i].qh;
        int8_t *a = aux8;
        uint8_t m = 1;
        for (int j = 0; j < QK_K / 64; ++j) {
            for (int l = 0; l < 32; ++l) {
                a[l] = (int8_t)((q4[l] & 0xF) + (hm[l] & m ? 16 : 0));
            }
            a += 32;
            m <<= 1;
            for (int l = 0; l < 32; ++l) {
                a[l] = (int8_t)((q4[l] >> 4) + (hm[l] & m ? 16 : 0));
            }
            a += 32;
            m <<= 1;
            q4 += 32;
        }
        int32_t scales[8], mins[8];
        unpack_k4_scales(w[i].scales, scales, mins);
        int sumi = 0;
        for (int j = 0; j < QK_K / 16; ++j) {
            sumi += x[i].bsums[j] * mins[j / 2];
        }
        int32_t aux32[8] = {0};
        dot_kquant_accumulate(aux8, x[i].qs, scales, 32, aux32);
        const float d = h2f(w[i].d) * x[i].d;
        for (int l = 0; l < 8; ++l) {
            sums[l] += d * aux32[l];
        }
        const float dmin = h2f(w[i].dmin) * x[i].d;
        sumf -= dmin * sumi;
    }
    for (int l = 0; l < 8; ++l) {
        sumf += sums[l];
    }
    *s = sumf;
}

static void dot_q6_K_ref(int n, float *s, const void *vw, const void *vx)
{
    const block_q6_K *w = vw;
    const block_q8_K *x = vx;
    const int nb = n / QK_K;
    int8_t aux8[QK_K];
    float sums[8] = {0};
    float sumf = 0;
    for (int i = 0; i < nb; ++i) {
        const uint8_t *q4 = w[i].ql;
        const uint8_t *qh = w[i].qh;
        int8_t *a = aux8;
        for (int j = 0; j < QK_K; j += 128) {
            for (int l = 0; l < 32; ++l) {
                a[l + 0] = (int8_t)((q4[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                a[l + 32] = (int8_t)((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                a[l + 64] = (int8_t)((q4[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                a[l + 96] = (int8_t)((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            }
            a += 128;
            q4 += 64;
            qh += 32;
        }
        int32_t scales[16];
        for (int j = 0; j < 16; j++) {
            scales[j] = w[i].scales[j];
        }
        int32_t aux32[8] = {0};
        dot_kquant_accumulate(aux8, x[i].qs, scales, 16, aux32);
        const float d = h2f(w[i].d) * x[i].d;
        for (int l = 0; l < 8; ++l) {
            sums[l] += d * aux32[l];
        }
    }
    for (int l = 0; l < 8; ++l) {
        sumf += sums[l];
    }
    *s = sumf;
}

st_vec_dot_fn st_vec_dot_ref(st_type t)
{
    switch (t) {
    case ST_F32:
        return dot_f32_ref;
    case ST_F16:
        return dot_f16_ref;
    case ST_BF16:
        return dot_bf16_ref;
    case ST_Q4_0:
        return dot_q4_0_ref;
    case ST_Q8_0:
        return dot_q8_0_ref;
    case ST_Q4_K:
        return dot_q4_K_ref;
    case ST_Q5_K:
        return dot_q5_K_ref;
    case ST_Q6_K:
        return dot_q6_K_ref;
    default:
        return NULL;
    }
}

/* ------------------------------------------------------------- dispatch -- */

int st_simd_level(void)
{
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c()) {
        return 2;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c()) {
        return 1;
    }
#endif
    return 0;
}

const char *st_simd_name(int level)
{
    switch (level) {
    case 2:
        return "avx512";
    case 1:
        return "avx2";
    case 0:
        return "scalar";
    default:
        return "unknown";
    }
}

bool st_cpu_has_avx512bf16(void)
{
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

st_vec_dot_fn st_vec_dot_get(st_type t, int simd_level)
{
    const int best = st_simd_level();
    int level = simd_level < 0 || simd_level > best ? best : simd_level;
#if defined(__x86_64__)
    if (level == 2) {
        switch (t) {
        case ST_F32:
            return st_vec_dot_f32_avx512;
        case ST_F16:
            return st_vec_dot_f16_avx512;
        case ST_BF16:
            return st_cpu_has_avx512bf16() ? st_vec_dot_bf16_avx512bf16 : st_vec_dot_bf16_avx512;
        case ST_Q4_0:
            return st_vec_dot_q4_0_avx512;
        case ST_Q8_0:
            return st_vec_dot_q8_0_avx512;
        case ST_Q4_K:
            return st_vec_dot_q4_K_avx512;
        case ST_Q5_K:
            return st_vec_dot_q5_K_avx512;
        case ST_Q6_K:
            return st_vec_dot_q6_K_avx512;
        default:
            return NULL;
        }
    }
    if (level == 1) {
        switch (t) {
        case ST_F32:
            return st_vec_dot_f32_avx2;
        case ST_F16:
            return st_vec_dot_f16_avx2;
        case ST_BF16:
            return st_vec_dot_bf16_avx2;
        case ST_Q4_0:
            return st_vec_dot_q4_0_avx2;
        case ST_Q8_0:
            return st_vec_dot_q8_0_avx2;
        case ST_Q4_K:
            return st_vec_dot_q4_K_avx2;
        case ST_Q5_K:
            return st_vec_dot_q5_K_avx2;
        case ST_Q6_K:
            return st_vec_dot_q6_K_avx2;
        default:
            return NULL;
        }
    }
#else
    (void)level;
#endif
    return st_vec_dot_ref(t);
}
