/* Shared pieces of the AVX-512 kernels (quant_avx512.c, matmul.c): the
 * target attributes of the VNNI level and the 16-row word transpose the
 * K-quant scale unpacking and the GEMM tiles both read weights through.
 * x86-64 only; include inside #if defined(__x86_64__). */
#ifndef ST_AVX512_UTIL_H
#define ST_AVX512_UTIL_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define ST_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define ST_AVX512BF16 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16,avx2,fma,f16c")))
#define ST_INLINE static inline __attribute__((always_inline))

/* Bytes off..off+15 of 16 rows as four zmm: u[w] lane r = 32-bit word w of
 * row r. Absent rows (r >= nr) read row 0; callers zero their scale. */
ST_INLINE ST_AVX512 void rows_16x4_words(const uint8_t *blk0, size_t wrow, int nr, size_t off, __m512i u[4])
{
    __m512i A[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
#define ROWP(r) (blk0 + (size_t)((r) < nr ? (r) : 0) * wrow + off)
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)ROWP(k)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)ROWP(k + 4)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)ROWP(k + 8)), 2);
        A[k] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)ROWP(k + 12)), 3);
#undef ROWP
    }
    /* A[k] lane L = row k + 4L; a 4x4 word transpose inside each 128-bit
     * lane puts word w of row 4L + j at lane 4L + j of u[w] */
    const __m512i t0 = _mm512_unpacklo_epi32(A[0], A[1]), t1 = _mm512_unpackhi_epi32(A[0], A[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(A[2], A[3]), t3 = _mm512_unpackhi_epi32(A[2], A[3]);
    u[0] = _mm512_unpacklo_epi64(t0, t2);
    u[1] = _mm512_unpackhi_epi64(t0, t2);
    u[2] = _mm512_unpacklo_epi64(t1, t3);
    u[3] = _mm512_unpackhi_epi64(t1, t3);
}

#endif
