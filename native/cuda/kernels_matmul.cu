/* Weight matmul and embedding gather for every supported weight type.
 *
 * y[t][o] = sum_i x[t][i] * W[o][i], weights dequantized in registers
 * (dequant.cuh), F32 accumulation. Two regimes:
 *  - n_tok <= 8 (decode): a warp per output row; each lane dequantizes chunks
 *    of 8 weights once and applies them to all n_tok activation rows
 *    (templated on NT = 1, 2, 4, 8 rows of accumulators).
 *  - n_tok > 8 (prefill / batches): 64 tokens x 64 outputs per block, K in
 *    slices of 32: the weight slice is dequantized into shared memory once
 *    and reused by all 64 tokens; each of the 256 threads owns 4 x 4 outputs,
 *    read from K-major shared tiles as float4. */
#include "kernels_common.cuh"

namespace {

constexpr int GEMV_WARPS = 8; /* output rows per block */
constexpr int TILE_T = 64;    /* tokens per block */
constexpr int TILE_O = 64;    /* outputs per block */
constexpr int TILE_K = 32;    /* K slice */
constexpr int TILE_THREADS = 256;
static_assert(TILE_THREADS == TILE_O * (TILE_K / 8) && TILE_O == TILE_T, "one loader thread per tile row and chunk");
static_assert(TILE_THREADS == (TILE_T / 4) * (TILE_O / 4), "4 x 4 outputs per thread");

template <int T, int NT>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    mm_gemv(const uint8_t *__restrict__ w, size_t row_bytes, int64_t n_in, int64_t n_out,
            const float *__restrict__ x, int n_tok, float *__restrict__ y, bool xvec)
{
    const int lane = threadIdx.x & 31;
    const int64_t o = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (o >= n_out) {
        return; /* a whole warp: no block-level sync below */
    }
    const uint8_t *row = w + (size_t)o * row_bytes;
    const int64_t n_chunks = (n_in + 7) / 8;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        acc[t] = 0.0f;
    }
    for (int64_t c = lane; c < n_chunks; c += 32) {
        float wv[8];
        st_cu_row_chunk<T>(row, c, n_in, wv);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (t < n_tok) {
                float xv[8];
                st_cu_load_x8(x + (size_t)t * n_in, 8 * c, n_in, xvec, xv);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    acc[t] += wv[e] * xv[e];
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float s = st_cu_warp_sum(acc[t]);
        if (lane == 0 && t < n_tok) {
            y[(size_t)t * n_out + o] = s;
        }
    }
}

template <int T>
__global__ void __launch_bounds__(TILE_THREADS)
    mm_tiled(const uint8_t *__restrict__ w, size_t row_bytes, int64_t n_in, int64_t n_out,
             const float *__restrict__ x, int n_tok, float *__restrict__ y, bool xvec)
{
    /* K-major tiles: a thread's 4 tokens / 4 outputs at one k are one float4 */
    __shared__ __align__(16) float ws[TILE_K][TILE_O];
    __shared__ __align__(16) float xs[TILE_K][TILE_T];
    const int tid = threadIdx.x;
    const int64_t o0 = (int64_t)blockIdx.x * TILE_O;
    const int t0 = blockIdx.y * TILE_T;
    /* loader role: tile row lr (output for ws, token for xs), chunk lc (8
     * elements) of the K slice; a warp's 32 lanes store 32 consecutive
     * columns of one k row: no bank conflicts */
    const int lr = tid & (TILE_O - 1);
    const int lc = tid / TILE_O;
    const int64_t o_l = o0 + lr;
    const int t_l = t0 + lr;
    const bool w_ok = o_l < n_out;
    const bool x_ok = t_l < n_tok;
    const uint8_t *wrow = w + (size_t)(w_ok ? o_l : 0) * row_bytes;
    const float *xrow = x + (size_t)(x_ok ? t_l : 0) * n_in;
    /* compute role: tokens 4ty..4ty+3, outputs 4tx..4tx+3 */
    const int tx = tid & 15;
    const int ty = tid >> 4;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int j = 0; j < 4; j++) {
            acc[i][j] = 0.0f;
        }
    }
    for (int64_t k0 = 0; k0 < n_in; k0 += TILE_K) {
        const int64_t c = k0 / 8 + lc;
        float v[8];
        if (w_ok && 8 * c < n_in) {
            st_cu_row_chunk<T>(wrow, c, n_in, v);
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) {
                v[e] = 0.0f;
            }
        }
#pragma unroll
        for (int e = 0; e < 8; e++) {
            ws[lc * 8 + e][lr] = v[e];
        }
        if (x_ok) {
            st_cu_load_x8(xrow, 8 * c, n_in, xvec, v);
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) {
                v[e] = 0.0f;
            }
        }
#pragma unroll
        for (int e = 0; e < 8; e++) {
            xs[lc * 8 + e][lr] = v[e];
        }
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < TILE_K; k++) {
            const float4 a4 = *(const float4 *)&xs[k][4 * ty];
            const float4 b4 = *(const float4 *)&ws[k][4 * tx];
            const float a[4] = {a4.x, a4.y, a4.z, a4.w};
            const float b[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    acc[i][j] += a[i] * b[j];
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int t = t0 + 4 * ty + i;
        if (t >= n_tok) {
            continue;
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int64_t o = o0 + 4 * tx + j;
            if (o < n_out) {
                y[(size_t)t * n_out + o] = acc[i][j];
            }
        }
    }
}

template <int T>
__global__ void embed_rows(const uint8_t *__restrict__ table, size_t row_bytes, int64_t n_embd,
                           const int *__restrict__ ids, float *__restrict__ out)
{
    const int t = blockIdx.x;
    const int64_t c = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    if (8 * c >= n_embd) {
        return;
    }
    const uint8_t *row = table + (size_t)ids[t] * row_bytes;
    float v[8];
    st_cu_row_chunk<T>(row, c, n_embd, v);
    float *o = out + (size_t)t * n_embd + 8 * c;
#pragma unroll
    for (int e = 0; e < 8; e++) {
        if (8 * c + e < n_embd) {
            o[e] = v[e];
        }
    }
}

template <int T>
int launch_matmul(const void *w, int64_t n_in, int64_t n_out, const float *x, int n_tok, float *y,
                  cudaStream_t s)
{
    typedef StFmt<T> F;
    const int64_t qk = F::FLOAT ? 1 : F::QK;
    if (n_in <= 0 || n_in % qk != 0 || n_out < 0 || n_tok < 0) {
        return (int)cudaErrorInvalidValue;
    }
    if (n_out == 0 || n_tok == 0) {
        return 0;
    }
    const size_t row_bytes = F::FLOAT ? (size_t)n_in * (F::BYTES / 8) : (size_t)(n_in / F::QK) * F::BYTES;
    const uint8_t *wb = (const uint8_t *)w;
    const bool xvec = n_in % 4 == 0 && ((uintptr_t)x & 15) == 0;
    if (n_tok <= 8) {
        const int64_t blocks = (n_out + GEMV_WARPS - 1) / GEMV_WARPS;
        if (blocks > 0x7fffffff) {
            return (int)cudaErrorInvalidValue;
        }
        const dim3 grid((unsigned)blocks);
        const dim3 block(GEMV_WARPS * 32);
        if (n_tok == 1) {
            mm_gemv<T, 1><<<grid, block, 0, s>>>(wb, row_bytes, n_in, n_out, x, n_tok, y, xvec);
        } else if (n_tok == 2) {
            mm_gemv<T, 2><<<grid, block, 0, s>>>(wb, row_bytes, n_in, n_out, x, n_tok, y, xvec);
        } else if (n_tok <= 4) {
            mm_gemv<T, 4><<<grid, block, 0, s>>>(wb, row_bytes, n_in, n_out, x, n_tok, y, xvec);
        } else {
            mm_gemv<T, 8><<<grid, block, 0, s>>>(wb, row_bytes, n_in, n_out, x, n_tok, y, xvec);
        }
    } else {
        const int64_t gx = (n_out + TILE_O - 1) / TILE_O;
        const int64_t gy = ((int64_t)n_tok + TILE_T - 1) / TILE_T;
        if (gx > 0x7fffffff || gy > 65535) {
            return (int)cudaErrorInvalidValue;
        }
        mm_tiled<T><<<dim3((unsigned)gx, (unsigned)gy), TILE_THREADS, 0, s>>>(wb, row_bytes, n_in, n_out, x,
                                                                               n_tok, y, xvec);
    }
    return st_cu_launch_status();
}

template <int T>
int launch_embed(const void *table, int64_t n_embd, const int *ids, int n_rows, float *out, cudaStream_t s)
{
    typedef StFmt<T> F;
    const int64_t qk = F::FLOAT ? 1 : F::QK;
    if (n_embd <= 0 || n_embd % qk != 0 || n_rows < 0) {
        return (int)cudaErrorInvalidValue;
    }
    if (n_rows == 0) {
        return 0;
    }
    const size_t row_bytes = F::FLOAT ? (size_t)n_embd * (F::BYTES / 8) : (size_t)(n_embd / F::QK) * F::BYTES;
    const int threads = 128;
    const int64_t n_chunks = (n_embd + 7) / 8;
    const int64_t gy = (n_chunks + threads - 1) / threads;
    if (gy > 65535) {
        return (int)cudaErrorInvalidValue;
    }
    embed_rows<T><<<dim3((unsigned)n_rows, (unsigned)gy), threads, 0, s>>>((const uint8_t *)table, row_bytes,
                                                                            n_embd, ids, out);
    return st_cu_launch_status();
}

} // namespace

extern "C" bool st_cu_type_supported(int type)
{
    switch (type) {
    case ST_F32:
    case ST_F16:
    case ST_BF16:
    case ST_Q8_0:
    case ST_Q4_0:
    case ST_Q4_K:
    case ST_Q5_K:
    case ST_Q6_K:
        return true;
    default:
        return false;
    }
}

extern "C" int st_cu_matmul(int type, const void *w, int64_t n_in, int64_t n_out, const float *x, int n_tok,
                            float *y, void *stream)
{
    cudaStream_t s = ST_CU_STREAM(stream);
    switch (type) {
    case ST_F32:
        return launch_matmul<ST_F32>(w, n_in, n_out, x, n_tok, y, s);
    case ST_F16:
        return launch_matmul<ST_F16>(w, n_in, n_out, x, n_tok, y, s);
    case ST_BF16:
        return launch_matmul<ST_BF16>(w, n_in, n_out, x, n_tok, y, s);
    case ST_Q8_0:
        return launch_matmul<ST_Q8_0>(w, n_in, n_out, x, n_tok, y, s);
    case ST_Q4_0:
        return launch_matmul<ST_Q4_0>(w, n_in, n_out, x, n_tok, y, s);
    case ST_Q4_K:
        return launch_matmul<ST_Q4_K>(w, n_in, n_out, x, n_tok, y, s);
    case ST_Q5_K:
        return launch_matmul<ST_Q5_K>(w, n_in, n_out, x, n_tok, y, s);
    case ST_Q6_K:
        return launch_matmul<ST_Q6_K>(w, n_in, n_out, x, n_tok, y, s);
    default:
        return (int)cudaErrorInvalidValue;
    }
}

extern "C" int st_cu_embed(int type, const void *table, int64_t n_embd, const int *ids, int n_rows, float *out,
                           void *stream)
{
    cudaStream_t s = ST_CU_STREAM(stream);
    switch (type) {
    case ST_F32:
        return launch_embed<ST_F32>(table, n_embd, ids, n_rows, out, s);
    case ST_F16:
        return launch_embed<ST_F16>(table, n_embd, ids, n_rows, out, s);
    case ST_BF16:
        return launch_embed<ST_BF16>(table, n_embd, ids, n_rows, out, s);
    case ST_Q8_0:
        return launch_embed<ST_Q8_0>(table, n_embd, ids, n_rows, out, s);
    case ST_Q4_0:
        return launch_embed<ST_Q4_0>(table, n_embd, ids, n_rows, out, s);
    case ST_Q4_K:
        return launch_embed<ST_Q4_K>(table, n_embd, ids, n_rows, out, s);
    case ST_Q5_K:
        return launch_embed<ST_Q5_K>(table, n_embd, ids, n_rows, out, s);
    case ST_Q6_K:
        return launch_embed<ST_Q6_K>(table, n_embd, ids, n_rows, out, s);
    default:
        return (int)cudaErrorInvalidValue;
    }
}
