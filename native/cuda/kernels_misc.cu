/* Element-wise and row kernels: rmsnorm, rope, bias, residual add, SwiGLU,
 * KV store and argmax. Arithmetic follows forward.c; products that the CPU
 * rounds separately are written with __fmul_rn / __fadd_rn / __fsub_rn so
 * nvcc does not contract them into FMAs (rmsnorm and rope then match the CPU
 * to the last bit apart from the double sum's order). */
#include "kernels_common.cuh"

#include <cuda_fp16.h>

namespace {

constexpr int ROW_THREADS = 256;

__global__ void __launch_bounds__(ROW_THREADS)
    rmsnorm_rows(float *out, const float *x, const float *__restrict__ w, int n, float eps)
{
    __shared__ double part[ROW_THREADS / 32];
    __shared__ float scale_s;
    const float *xr = x + (size_t)blockIdx.x * n;
    float *orow = out + (size_t)blockIdx.x * n;
    double sum = 0.0;
    for (int i = threadIdx.x; i < n; i += ROW_THREADS) {
        const float v = xr[i];
        sum += (double)__fmul_rn(v, v);
    }
    sum = st_cu_warp_sum_d(sum);
    if ((threadIdx.x & 31) == 0) {
        part[threadIdx.x >> 5] = sum;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int i = 0; i < ROW_THREADS / 32; i++) {
            total += part[i];
        }
        const float mean = (float)(total / n);
        scale_s = 1.0f / sqrtf(mean + eps);
    }
    __syncthreads();
    const float scale = scale_s;
    for (int i = threadIdx.x; i < n; i += ROW_THREADS) {
        orow[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]); /* out may alias x: same i read then written */
    }
}

__global__ void rope_rows(float *x, const float *__restrict__ cache, int n_rows, int n_heads, int head_dim,
                          int n_rot, bool neox)
{
    const int pairs = n_rot / 2;
    const int64_t total = (int64_t)n_rows * n_heads * pairs;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int p = (int)(idx % pairs);
        const int64_t th = idx / pairs; /* t * n_heads + h */
        const int64_t t = th / n_heads;
        const float c = cache[t * n_rot + 2 * p];
        const float s = cache[t * n_rot + 2 * p + 1];
        float *xh = x + th * head_dim;
        const int i0 = neox ? p : 2 * p;
        const int i1 = neox ? p + pairs : 2 * p + 1;
        const float x0 = xh[i0], x1 = xh[i1];
        xh[i0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
        xh[i1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
    }
}

__global__ void add_bias_rows(float *y, const float *__restrict__ b, int64_t total, int n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        y[i] += b[i % n];
    }
}

__global__ void add_vec(float *x, const float *__restrict__ y, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        x[i] += y[i];
    }
}

__global__ void swiglu_vec(float *gate, const float *__restrict__ up, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

template <bool F16>
__global__ void kv_store_rows(void *const *k_caches, void *const *v_caches, const int *__restrict__ seq,
                              const int *__restrict__ pos, const float *__restrict__ k,
                              const float *__restrict__ v, int n_rows, int kv_dim)
{
    const int64_t total = (int64_t)n_rows * kv_dim;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = idx / kv_dim;
        const int i = (int)(idx % kv_dim);
        const int s = seq[t];
        const size_t off = (size_t)pos[t] * kv_dim + i;
        if (F16) {
            ((__half *)k_caches[s])[off] = __float2half_rn(k[idx]);
            ((__half *)v_caches[s])[off] = __float2half_rn(v[idx]);
        } else {
            ((float *)k_caches[s])[off] = k[idx];
            ((float *)v_caches[s])[off] = v[idx];
        }
    }
}

/* First index of the maximum, as the CPU sampler's argmax: values compare
 * with '>', so NaN and -inf never win; a row without a finite winner gives
 * index 0 and max -inf. */
__global__ void __launch_bounds__(ROW_THREADS)
    argmax_rows(const float *__restrict__ logits, int n_vocab, int *out_idx, float *out_max)
{
    __shared__ float sv[ROW_THREADS / 32];
    __shared__ int si[ROW_THREADS / 32];
    const float *row = logits + (size_t)blockIdx.x * n_vocab;
    float best = -INFINITY;
    int bi = 0x7fffffff; /* none */
    for (int i = threadIdx.x; i < n_vocab; i += ROW_THREADS) {
        const float v = row[i];
        if (v > best) {
            best = v;
            bi = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > best || (ov == best && oi < bi)) {
            best = ov;
            bi = oi;
        }
    }
    if ((threadIdx.x & 31) == 0) {
        sv[threadIdx.x >> 5] = best;
        si[threadIdx.x >> 5] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        best = sv[0];
        bi = si[0];
        for (int wi = 1; wi < ROW_THREADS / 32; wi++) {
            if (sv[wi] > best || (sv[wi] == best && si[wi] < bi)) {
                best = sv[wi];
                bi = si[wi];
            }
        }
        if (out_idx != NULL) {
            out_idx[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
        }
        if (out_max != NULL) {
            out_max[blockIdx.x] = best;
        }
    }
}

/* Grid for a grid-stride loop over n elements. */
unsigned grid_for(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > 65535 * 16 ? 65535 * 16 : b);
}

} // namespace

extern "C" int st_cu_rmsnorm(float *out, const float *x, const float *w, int n_rows, int n, float eps, void *stream)
{
    if (n_rows < 0 || n <= 0) {
        return (int)cudaErrorInvalidValue;
    }
    if (n_rows == 0) {
        return 0;
    }
    rmsnorm_rows<<<(unsigned)n_rows, ROW_THREADS, 0, ST_CU_STREAM(stream)>>>(out, x, w, n, eps);
    return st_cu_launch_status();
}

extern "C" int st_cu_rope(float *x, const float *cache, int n_rows, int n_heads, int head_dim, int n_rot, bool neox,
                          void *stream)
{
    if (n_rows < 0 || n_heads <= 0 || head_dim <= 0 || n_rot < 0 || n_rot % 2 != 0 || n_rot > head_dim) {
        return (int)cudaErrorInvalidValue;
    }
    const int64_t total = (int64_t)n_rows * n_heads * (n_rot / 2);
    if (total == 0) {
        return 0;
    }
    rope_rows<<<grid_for(total, 256), 256, 0, ST_CU_STREAM(stream)>>>(x, cache, n_rows, n_heads, head_dim, n_rot,
                                                                      neox);
    return st_cu_launch_status();
}

extern "C" int st_cu_add_bias(float *y, const float *b, int n_rows, int n, void *stream)
{
    if (n_rows < 0 || n < 0) {
        return (int)cudaErrorInvalidValue;
    }
    const int64_t total = (int64_t)n_rows * n;
    if (total == 0) {
        return 0;
    }
    add_bias_rows<<<grid_for(total, 256), 256, 0, ST_CU_STREAM(stream)>>>(y, b, total, n);
    return st_cu_launch_status();
}

extern "C" int st_cu_add(float *x, const float *y, size_t n, void *stream)
{
    if (n == 0) {
        return 0;
    }
    add_vec<<<grid_for((int64_t)n, 256), 256, 0, ST_CU_STREAM(stream)>>>(x, y, n);
    return st_cu_launch_status();
}

extern "C" int st_cu_swiglu(float *gate, const float *up, size_t n, void *stream)
{
    if (n == 0) {
        return 0;
    }
    swiglu_vec<<<grid_for((int64_t)n, 256), 256, 0, ST_CU_STREAM(stream)>>>(gate, up, n);
    return st_cu_launch_status();
}

extern "C" int st_cu_kv_store(void *const *k_caches, void *const *v_caches, const int *seq, const int *pos,
                              const float *k, const float *v, int n_rows, int kv_dim, bool kv_f16, void *stream)
{
    if (n_rows < 0 || kv_dim <= 0) {
        return (int)cudaErrorInvalidValue;
    }
    const int64_t total = (int64_t)n_rows * kv_dim;
    if (total == 0) {
        return 0;
    }
    cudaStream_t s = ST_CU_STREAM(stream);
    if (kv_f16) {
        kv_store_rows<true><<<grid_for(total, 256), 256, 0, s>>>(k_caches, v_caches, seq, pos, k, v, n_rows, kv_dim);
    } else {
        kv_store_rows<false><<<grid_for(total, 256), 256, 0, s>>>(k_caches, v_caches, seq, pos, k, v, n_rows,
                                                                  kv_dim);
    }
    return st_cu_launch_status();
}

extern "C" int st_cu_argmax(const float *logits, int n_rows, int n_vocab, int *out_idx, float *out_max, void *stream)
{
    if (n_rows < 0 || n_vocab <= 0) {
        return (int)cudaErrorInvalidValue;
    }
    if (n_rows == 0) {
        return 0;
    }
    argmax_rows<<<(unsigned)n_rows, ROW_THREADS, 0, ST_CU_STREAM(stream)>>>(logits, n_vocab, out_idx, out_max);
    return st_cu_launch_status();
}
