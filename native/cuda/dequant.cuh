/* Per-block dequantization for the CUDA kernels, as __host__ __device__
 * inline functions so the host test (tests/kernels_host_test.cu) checks the
 * very same code against quant.c's scalar st_dequant_row on the CPU.
 *
 * Unit of work: a "chunk" of 8 consecutive elements. A block of a format holds
 * QK / 8 chunks; Fmt<T>::dq8(block, c, out) writes elements 8c..8c+7 of the
 * block. Weights are read 8 bytes at a time with the widest load the address
 * allows (st_cu_ld8): Q8_0 blocks are 34 bytes, Q4_0 18, Q6_K 210, so most
 * of their chunks are only 2-byte aligned; Q4_K / Q5_K / float chunks are
 * 8-byte aligned when the row start is.
 *
 * The arithmetic is written exactly as quant.c's (same operand order, float
 * products), so host results are bit-identical; on the device nvcc may fuse
 * d1 * q - m1 (Q4_K / Q5_K) into an FMA, a last-bit difference.
 *
 * Float weights (F32 / F16 / BF16) use "blocks" of 8 elements too, with a
 * bounded variant for the row tail when n_in is not a multiple of 8. */
#ifndef ST_CU_DEQUANT_CUH
#define ST_CU_DEQUANT_CUH

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "quant.h"
#ifdef __cplusplus
}
#endif

#ifdef __CUDACC__
#include <cuda_fp16.h>
#define ST_HD __host__ __device__ __forceinline__
#else
#define ST_HD inline
#endif

/* ------------------------------------------------------------ scalars -- */

ST_HD uint16_t st_cu_ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8)); /* little endian, any alignment */
}

ST_HD float st_cu_bits2f(uint32_t bits)
{
#ifdef __CUDA_ARCH__
    return __uint_as_float(bits);
#else
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
#endif
}

/* IEEE half -> float, exact (same result as common.c's st_fp16_to_fp32). */
ST_HD float st_cu_h2f(uint16_t h)
{
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half(h));
#else
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {
            exp = 127 - 15 + 1;
            while ((mant & 0x400) == 0) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    return st_cu_bits2f(bits);
#endif
}

ST_HD float st_cu_bf2f(uint16_t h)
{
    return st_cu_bits2f((uint32_t)h << 16);
}

/* Loads of 8 weight bytes at any alignment: one 8-byte load when p is 8-byte
 * aligned, else 4-, 2- or 1-byte loads; returned as two little-endian words.
 * (Device: real loads of that width; host: memcpy, so the host test runs
 * the same branch logic and byte order.) */
template <typename T> ST_HD T st_cu_ldt(const uint8_t *p)
{
#ifdef __CUDA_ARCH__
    return *(const T *)p;
#else
    T v;
    memcpy(&v, p, sizeof v);
    return v;
#endif
}

ST_HD void st_cu_ld8(const uint8_t *p, uint32_t *w)
{
    const uintptr_t a = (uintptr_t)p;
    if ((a & 7) == 0) {
        const uint64_t v = st_cu_ldt<uint64_t>(p);
        w[0] = (uint32_t)v;
        w[1] = (uint32_t)(v >> 32);
    } else if ((a & 3) == 0) {
        w[0] = st_cu_ldt<uint32_t>(p);
        w[1] = st_cu_ldt<uint32_t>(p + 4);
    } else if ((a & 1) == 0) {
        w[0] = st_cu_ldt<uint16_t>(p) | ((uint32_t)st_cu_ldt<uint16_t>(p + 2) << 16);
        w[1] = st_cu_ldt<uint16_t>(p + 4) | ((uint32_t)st_cu_ldt<uint16_t>(p + 6) << 16);
    } else {
        w[0] = p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        w[1] = p[4] | ((uint32_t)p[5] << 8) | ((uint32_t)p[6] << 16) | ((uint32_t)p[7] << 24);
    }
}

/* st_cu_ld8 for formats whose blocks are only 2-byte aligned (Q8_0 34 bytes,
 * Q4_0 18, Q6_K 210): always 16-bit loads (bytes if p is odd), so the lanes
 * of a warp, whose chunks have mixed alignments, take the same path. */
ST_HD void st_cu_ld8_h(const uint8_t *p, uint32_t *w)
{
    if (((uintptr_t)p & 1) == 0) {
        w[0] = st_cu_ldt<uint16_t>(p) | ((uint32_t)st_cu_ldt<uint16_t>(p + 2) << 16);
        w[1] = st_cu_ldt<uint16_t>(p + 4) | ((uint32_t)st_cu_ldt<uint16_t>(p + 6) << 16);
    } else {
        w[0] = p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        w[1] = p[4] | ((uint32_t)p[5] << 8) | ((uint32_t)p[6] << 16) | ((uint32_t)p[7] << 24);
    }
}

/* Byte e (0..7) of the 8 loaded by st_cu_ld8. */
ST_HD int st_cu_b8(const uint32_t *w, int e)
{
    return (int)((w[e >> 2] >> (8 * (e & 3))) & 0xff);
}

/* 16-bit value e (0..3) of the 8 bytes loaded by st_cu_ld8. */
ST_HD uint16_t st_cu_h4(const uint32_t *w, int e)
{
    return (uint16_t)(w[e >> 1] >> (16 * (e & 1)));
}

/* The 12 scale bytes of Q4_K / Q5_K hold 8 six-bit scales and 8 six-bit mins. */
ST_HD void st_cu_scale_min_k4(int j, const uint8_t *q, int *d, int *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

/* ------------------------------------------------------------ formats -- */

template <int T> struct StFmt;

/* F32: a "block" is 8 floats (32 bytes). */
template <> struct StFmt<ST_F32> {
    static constexpr int QK = 8;
    static constexpr int BYTES = 32;
    static constexpr bool FLOAT = true;
    ST_HD static float elem(const uint8_t *row, int64_t i)
    {
        return ((const float *)row)[i]; /* rows of F32 are 4-byte aligned */
    }
    ST_HD static void dq8(const uint8_t *b, int c, float *o)
    {
        for (int k = 0; k < 4; k++) {
            uint32_t w[2];
            st_cu_ld8(b + 32 * c + 8 * k, w);
            o[2 * k] = st_cu_bits2f(w[0]);
            o[2 * k + 1] = st_cu_bits2f(w[1]);
        }
    }
};

template <> struct StFmt<ST_F16> {
    static constexpr int QK = 8;
    static constexpr int BYTES = 16;
    static constexpr bool FLOAT = true;
    ST_HD static float elem(const uint8_t *row, int64_t i)
    {
        return st_cu_h2f(((const uint16_t *)row)[i]);
    }
    ST_HD static void dq8(const uint8_t *b, int c, float *o)
    {
        for (int k = 0; k < 2; k++) {
            uint32_t w[2];
            st_cu_ld8(b + 16 * c + 8 * k, w);
            for (int e = 0; e < 4; e++) {
                o[4 * k + e] = st_cu_h2f(st_cu_h4(w, e));
            }
        }
    }
};

template <> struct StFmt<ST_BF16> {
    static constexpr int QK = 8;
    static constexpr int BYTES = 16;
    static constexpr bool FLOAT = true;
    ST_HD static float elem(const uint8_t *row, int64_t i)
    {
        return st_cu_bf2f(((const uint16_t *)row)[i]);
    }
    ST_HD static void dq8(const uint8_t *b, int c, float *o)
    {
        for (int k = 0; k < 2; k++) {
            uint32_t w[2];
            st_cu_ld8(b + 16 * c + 8 * k, w);
            for (int e = 0; e < 4; e++) {
                o[4 * k + e] = st_cu_bf2f(st_cu_h4(w, e));
            }
        }
    }
};

/* Q8_0: d (f16), qs[32] int8. */
template <> struct StFmt<ST_Q8_0> {
    static constexpr int QK = 32;
    static constexpr int BYTES = 34;
    static constexpr bool FLOAT = false;
    ST_HD static void dq8(const uint8_t *b, int c, float *o)
    {
        const float d = st_cu_h2f(st_cu_ld16(b));
        uint32_t w[2];
        st_cu_ld8_h(b + 2 + 8 * c, w);
        for (int e = 0; e < 8; e++) {
            o[e] = (int8_t)st_cu_b8(w, e) * d;
        }
    }
};

/* Q4_0: d (f16), qs[16]: low nibbles = elements 0..15, high = 16..31. */
template <> struct StFmt<ST_Q4_0> {
    static constexpr int QK = 32;
    static constexpr int BYTES = 18;
    static constexpr bool FLOAT = false;
    ST_HD static void dq8(const uint8_t *b, int c, float *o)
    {
        const float d = st_cu_h2f(st_cu_ld16(b));
        uint32_t w[2];
        st_cu_ld8_h(b + 2 + 8 * (c & 1), w);
        const int shift = (c >> 1) * 4;
        for (int e = 0; e < 8; e++) {
            const int x = ((st_cu_b8(w, e) >> shift) & 0x0F) - 8;
            o[e] = x * d;
        }
    }
};

/* Q4_K: d, dmin (f16), scales[12], qs[128]. 64-element groups g: elements
 * 0..31 = low nibbles of qs[32g..], 32..63 = high nibbles, scale 2g / 2g+1. */
template <> struct StFmt<ST_Q4_K> {
    static constexpr int QK = 256;
    static constexpr int BYTES = 144;
    static constexpr bool FLOAT = false;
    ST_HD static void dq8(const uint8_t *b, int c, float *o)
    {
        const int j = 8 * c;
        const int g = j >> 6;        /* 64-element group */
        const int hi = (j >> 5) & 1; /* high nibbles */
        const int l = j & 31;
        int sc, m;
        st_cu_scale_min_k4(2 * g + hi, b + 4, &sc, &m);
        const float d1 = st_cu_h2f(st_cu_ld16(b)) * sc;
        const float m1 = st_cu_h2f(st_cu_ld16(b + 2)) * m;
        uint32_t w[2];
        st_cu_ld8(b + 16 + 32 * g + l, w);
        const int shift = 4 * hi;
        for (int e = 0; e < 8; e++) {
            o[e] = d1 * ((st_cu_b8(w, e) >> shift) & 0xF) - m1;
        }
    }
};

/* Q5_K: d, dmin, scales[12], qh[32], qs[128]; the fifth bit of element l of
 * group g's low/high half is bit (2g + hi) of qh[l]. */
template <> struct StFmt<ST_Q5_K> {
    static constexpr int QK = 256;
    static constexpr int BYTES = 176;
    static constexpr bool FLOAT = false;
    ST_HD static void dq8(const uint8_t *b, int c, float *o)
    {
        const int j = 8 * c;
        const int g = j >> 6;
        const int hi = (j >> 5) & 1;
        const int l = j & 31;
        int sc, m;
        st_cu_scale_min_k4(2 * g + hi, b + 4, &sc, &m);
        const float d1 = st_cu_h2f(st_cu_ld16(b)) * sc;
        const float m1 = st_cu_h2f(st_cu_ld16(b + 2)) * m;
        uint32_t wh[2], w[2];
        st_cu_ld8(b + 16 + l, wh);
        st_cu_ld8(b + 48 + 32 * g + l, w);
        const int shift = 4 * hi;
        const int hbit = 2 * g + hi;
        for (int e = 0; e < 8; e++) {
            o[e] = d1 * (((st_cu_b8(w, e) >> shift) & 0xF) + (((st_cu_b8(wh, e) >> hbit) & 1) ? 16 : 0)) - m1;
        }
    }
};

/* Q6_K: ql[128], qh[64], scales[16] int8, d (f16). Halves n of 128 elements;
 * quarter qq of 32: low/high nibble of ql[64n + 32(qq&1) + l], 2 bits
 * (qh[32n + l] >> 2qq) & 3, scale scales[8n + l/16 + 2qq]. */
template <> struct StFmt<ST_Q6_K> {
    static constexpr int QK = 256;
    static constexpr int BYTES = 210;
    static constexpr bool FLOAT = false;
    ST_HD static void dq8(const uint8_t *b, int c, float *o)
    {
        const int j = 8 * c;
        const int n = j >> 7;
        const int qq = (j >> 5) & 3;
        const int l = j & 31;
        const float d = st_cu_h2f(st_cu_ld16(b + 208));
        const int8_t *scales = (const int8_t *)(b + 192);
        const float ds = d * scales[8 * n + (l >> 4) + 2 * qq]; /* l..l+7 share l/16 */
        uint32_t wl[2], wh[2];
        st_cu_ld8_h(b + 64 * n + 32 * (qq & 1) + l, wl);
        st_cu_ld8_h(b + 128 + 32 * n + l, wh);
        const int shift = 4 * (qq >> 1);
        const int hshift = 2 * qq;
        for (int e = 0; e < 8; e++) {
            const int8_t q = (int8_t)(((st_cu_b8(wl, e) >> shift) & 0xF) | (((st_cu_b8(wh, e) >> hshift) & 3) << 4)) - 32;
            o[e] = ds * q;
        }
    }
};

/* Dequantize chunk `c` (elements 8c..8c+7) of a row of n_in elements.
 * Quant formats: n_in is a multiple of QK, the chunk is always whole. Float
 * formats: elements past n_in read as 0 (row tail). */
template <int T> ST_HD void st_cu_row_chunk(const uint8_t *row, int64_t c, int64_t n_in, float *o)
{
    typedef StFmt<T> F;
    constexpr int CPB = F::QK / 8; /* chunks per block */
    if constexpr (F::FLOAT) {
        if (8 * c + 8 > n_in) {
            for (int e = 0; e < 8; e++) {
                const int64_t i = 8 * c + e;
                o[e] = i < n_in ? F::elem(row, i) : 0.0f;
            }
            return;
        }
    } else {
        (void)n_in;
    }
    F::dq8(row + (c / CPB) * F::BYTES, (int)(c % CPB), o);
}

#endif
