/* Tensor element types and block quantization formats, in one place.
 *
 * Layouts are bit-compatible with ggml/GGUF so GGUF tensors are used in place.
 * Every block's size is checked with static_assert. Type ids are GGUF's.
 */
#ifndef ST_QUANT_H
#define ST_QUANT_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum st_type {
    ST_F32 = 0,
    ST_F16 = 1,
    ST_Q4_0 = 2,
    ST_Q4_1 = 3,
    ST_Q5_0 = 6,
    ST_Q5_1 = 7,
    ST_Q8_0 = 8,
    ST_Q8_1 = 9,
    ST_Q2_K = 10,
    ST_Q3_K = 11,
    ST_Q4_K = 12,
    ST_Q5_K = 13,
    ST_Q6_K = 14,
    ST_Q8_K = 15,
    ST_BF16 = 30,
    ST_TYPE_COUNT = 40,
} st_type;

#define QK4_0 32
#define QK8_0 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef uint16_t st_half; /* IEEE fp16 bits */

typedef struct {
    st_half d;               /* scale */
    uint8_t qs[QK4_0 / 2];   /* nibbles: low = elements 0..15, high = 16..31 */
} block_q4_0;
static_assert(sizeof(block_q4_0) == 18, "block_q4_0 size");

typedef struct {
    st_half d;
    int8_t qs[QK8_0];
} block_q8_0;
static_assert(sizeof(block_q8_0) == 34, "block_q8_0 size");

typedef struct {
    st_half d;                   /* super-block scale for scales */
    st_half dmin;                /* super-block scale for mins */
    uint8_t scales[K_SCALE_SIZE]; /* 8 scales + 8 mins, 6 bits each */
    uint8_t qs[QK_K / 2];        /* 4-bit quants */
} block_q4_K;
static_assert(sizeof(block_q4_K) == 144, "block_q4_K size");

typedef struct {
    st_half d;
    st_half dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];        /* high bit */
    uint8_t qs[QK_K / 2];        /* low 4 bits */
} block_q5_K;
static_assert(sizeof(block_q5_K) == 176, "block_q5_K size");

typedef struct {
    uint8_t ql[QK_K / 2];        /* low 4 bits */
    uint8_t qh[QK_K / 4];        /* high 2 bits */
    int8_t scales[QK_K / 16];    /* 8-bit scales */
    st_half d;
} block_q6_K;
static_assert(sizeof(block_q6_K) == 210, "block_q6_K size");

/* Activation format for K-quant dot products (as ggml's block_q8_K). */
typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];    /* sums of groups of 16 */
} block_q8_K;
static_assert(sizeof(block_q8_K) == 292, "block_q8_K size");

/* Elements per block (1 for plain float types); 0 for unknown type ids.
 * Known GGUF formats we cannot compute with (Q4_1, Q5_0, Q5_1, Q8_1, Q2_K,
 * Q3_K) still report their sizes so files holding them can be walked. */
int64_t st_type_block_elems(st_type t);
/* Bytes per block; 0 for unknown type ids. */
size_t st_type_block_bytes(st_type t);
const char *st_type_name(st_type t);
/* True if we can dequantize and dot this type. */
bool st_type_supported(st_type t);
/* Bytes of a row of n elements (n must be a multiple of the block size). */
size_t st_row_bytes(st_type t, int64_t n);

/* Scalar reference dequantization of n elements. */
void st_dequant_row(st_type t, const void *src, float *dst, int64_t n);

/* Reference quantization (ggml's reference algorithms, bit-identical for
 * Q8_0, Q8_K, F16, BF16 so activations match llama.cpp). Supported: F32, F16,
 * BF16, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K, Q8_K. Returns false if t unsupported. */
bool st_quantize_row(st_type t, const float *src, void *dst, int64_t n);

/* Type the activations are converted to before a dot product with a weight
 * row of type t: F32->F32, F16->F16, BF16->BF16, Q4_0/Q8_0->Q8_0,
 * Q4_K/Q5_K/Q6_K->Q8_K (as llama.cpp's CPU backend does). */
st_type st_vec_dot_type(st_type t);

/* s = dot(w[0..n), x[0..n)) with w of type t and x of type st_vec_dot_type(t). */
typedef void (*st_vec_dot_fn)(int n, float *s, const void *w, const void *x);

/* Plain C loops: the reference that tests compare fast paths against. */
st_vec_dot_fn st_vec_dot_ref(st_type t);
/* Fastest kernel this CPU supports (AVX-512 / AVX2 / scalar), chosen at run time.
 * simd_level: 0 = scalar, 1 = avx2, 2 = avx512, -1 = best available. */
st_vec_dot_fn st_vec_dot_get(st_type t, int simd_level);
/* Best SIMD level of this CPU (0, 1, 2) and its name. */
int st_simd_level(void);
const char *st_simd_name(int level);

/* ------------------------------------------------------------------------
 * Additions (quant module): conversions and kernels shared by quant*.c and
 * matmul.c. Not for use outside the engine's numeric code.
 * ---------------------------------------------------------------------- */

/* Q8_0 quantization exactly as llama.cpp's x86 CPU backend quantizes
 * activations (quantize_row_q8_0, AVX path: id = 127/amax, round half to
 * even). It differs from quantize_row_q8_0_ref (id = 1/d, roundf) only in
 * rare ties and last-bit cases. st_quantize_activations uses this one so
 * our logits track llama.cpp's on x86; st_quantize_row uses the reference. */
void st_quantize_row_q8_0_x86(const float *src, block_q8_0 *dst, int64_t n);

/* st_quantize_row in plain C only (st_quantize_row may use bit-identical SIMD
 * versions); tests compare the two. */
bool st_quantize_row_scalar(st_type t, const float *src, void *dst, int64_t n);

/* Row conversions with SIMD fast paths (results identical to the scalar
 * st_fp16_to_fp32 / st_fp32_to_fp16 / bf16 conversions). */
void st_fp16_to_fp32_row(const st_half *src, float *dst, int64_t n);
void st_fp32_to_fp16_row(const float *src, st_half *dst, int64_t n);
void st_fp32_to_bf16_row(const float *src, uint16_t *dst, int64_t n);

/* Per-level dot kernels (same contract as st_vec_dot_fn). Defined only on
 * x86-64; pick them through st_vec_dot_get, which checks the CPU. Float types
 * take any n; Q4_0/Q8_0 need n % 32 == 0; K-quants n % 256 == 0. */
void st_vec_dot_f32_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_f16_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_bf16_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_0_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q8_0_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_K_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_K_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_q6_K_avx2(int n, float *s, const void *w, const void *x);
void st_vec_dot_f32_avx512(int n, float *s, const void *w, const void *x);
void st_vec_dot_f16_avx512(int n, float *s, const void *w, const void *x);
void st_vec_dot_bf16_avx512(int n, float *s, const void *w, const void *x);    /* AVX512F only */
void st_vec_dot_bf16_avx512bf16(int n, float *s, const void *w, const void *x); /* needs AVX512_BF16 */
void st_vec_dot_q4_0_avx512(int n, float *s, const void *w, const void *x);
void st_vec_dot_q8_0_avx512(int n, float *s, const void *w, const void *x);
void st_vec_dot_q4_K_avx512(int n, float *s, const void *w, const void *x);
void st_vec_dot_q5_K_avx512(int n, float *s, const void *w, const void *x);
void st_vec_dot_q6_K_avx512(int n, float *s, const void *w, const void *x);
void st_fp16_to_fp32_row_f16c(const st_half *src, float *dst, int64_t n);
void st_fp32_to_fp16_row_f16c(const float *src, st_half *dst, int64_t n);
void st_quantize_row_q8_0_x86_avx2(const float *src, block_q8_0 *dst, int64_t n);
void st_quantize_row_q8_K_avx2(const float *src, block_q8_K *dst, int64_t n); /* = reference */
void st_fp32_to_bf16_row_avx2(const float *src, uint16_t *dst, int64_t n);

/* GEMV at the AVX-512 level for Q8_0, Q4_0, Q4_K, Q5_K, Q6_K: y[r] =
 * dot(row r of W, x) for n_rows rows of wrow bytes, x one activation row of
 * st_vec_dot_type(t). Bit-identical to st_matmul's batched kernels (same
 * canonical arithmetic, see matmul.c). Returns false for other types. */
bool st_gemv_avx512(st_type t, const void *W, size_t wrow, int64_t n_rows, int64_t n_in, const void *x, float *y);

/* True if this CPU has AVX512_BF16 (used for the BF16 dot at level 2). */
bool st_cpu_has_avx512bf16(void);

/* The 12 scale bytes hold 8 six-bit scales and 8 six-bit mins. */
static inline void st_k4_scale_min(int j, const uint8_t *q, uint8_t *d, uint8_t *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
    }
}

#endif
