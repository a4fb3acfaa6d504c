/* Causal GQA attention over per-sequence KV caches.
 *
 * One block per (row t, query head h), ATT_WARPS warps. Each warp walks keys
 * j = warp, warp + ATT_WARPS, ... <= pos[t] with an online softmax (running
 * max m, sum l, accumulator acc): a lane holds head dims lane + 32i (NPL of
 * them, head_dim <= 32 * NPL <= 256) of q and acc, so K/V rows are read
 * coalesced. The warps' partial (m, l, acc) are merged through shared memory.
 * Cache layout as the CPU's: position j of KV head g at j * kv_dim + g * head_dim. */
#include "kernels_common.cuh"

#include <cuda_fp16.h>

namespace {

constexpr int ATT_WARPS = 8;
constexpr int ATT_MAX_HD = 256;

template <bool F16> __device__ __forceinline__ float kv_load(const void *base, size_t i)
{
    if (F16) {
        return __half2float(((const __half *)base)[i]);
    }
    return ((const float *)base)[i];
}

template <int NPL, bool F16>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_rows(float *__restrict__ out, const float *__restrict__ q, void *const *k_caches,
                   void *const *v_caches, const int *__restrict__ seq, const int *__restrict__ pos, int n_head,
                   int n_head_kv, int head_dim, float scale)
{
    __shared__ float sm_m[ATT_WARPS];
    __shared__ float sm_l[ATT_WARPS];
    __shared__ float sm_acc[ATT_WARPS][ATT_MAX_HD];
    const int h = blockIdx.x % n_head;
    const int64_t t = blockIdx.x / n_head;
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int g = h / (n_head / n_head_kv);
    const size_t kv_dim = (size_t)n_head_kv * head_dim;
    const int n_keys = pos[t] + 1;
    const int s = seq[t];
    const void *kc = k_caches[s];
    const void *vc = v_caches[s];
    const float *qh = q + ((size_t)t * n_head + h) * head_dim;

    float qv[NPL], acc[NPL];
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        const int d = lane + 32 * i;
        qv[i] = d < head_dim ? qh[d] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j = warp; j < n_keys; j += ATT_WARPS) {
        const size_t off = (size_t)j * kv_dim + (size_t)g * head_dim;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            const int d = lane + 32 * i;
            if (d < head_dim) {
                dot += qv[i] * kv_load<F16>(kc, off + d);
            }
        }
        const float sc = st_cu_warp_sum(dot) * scale;
        const float m_new = fmaxf(m, sc);
        const float corr = m == m_new ? 1.0f : expf(m - m_new);
        const float p = expf(sc - m_new);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            const int d = lane + 32 * i;
            const float vv = d < head_dim ? kv_load<F16>(vc, off + d) : 0.0f;
            acc[i] = acc[i] * corr + p * vv;
        }
        m = m_new;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < NPL; i++) {
        const int d = lane + 32 * i;
        if (d < head_dim) {
            sm_acc[warp][d] = acc[i];
        }
    }
    __syncthreads();
    /* merge: warp 0 held key 0, so the max M is finite for finite inputs */
    float M = sm_m[0];
    for (int wi = 1; wi < ATT_WARPS; wi++) {
        M = fmaxf(M, sm_m[wi]);
    }
    float f[ATT_WARPS];
    float L = 0.0f;
#pragma unroll
    for (int wi = 0; wi < ATT_WARPS; wi++) {
        f[wi] = sm_l[wi] > 0.0f ? expf(sm_m[wi] - M) : 0.0f; /* idle warps: l = 0, m = -inf */
        L += sm_l[wi] * f[wi];
    }
    const float inv = 1.0f / L;
    float *oh = out + ((size_t)t * n_head + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += ATT_WARPS * 32) {
        float o = 0.0f;
#pragma unroll
        for (int wi = 0; wi < ATT_WARPS; wi++) {
            o += sm_acc[wi][d] * f[wi];
        }
        oh[d] = o * inv;
    }
}

template <bool F16>
void launch_attention(int npl, dim3 grid, cudaStream_t s, float *out, const float *q, void *const *kc,
                      void *const *vc, const int *seq, const int *pos, int n_head, int n_head_kv, int head_dim,
                      float scale)
{
    const dim3 block(ATT_WARPS * 32);
    if (npl <= 2) {
        attention_rows<2, F16><<<grid, block, 0, s>>>(out, q, kc, vc, seq, pos, n_head, n_head_kv, head_dim, scale);
    } else if (npl <= 4) {
        attention_rows<4, F16><<<grid, block, 0, s>>>(out, q, kc, vc, seq, pos, n_head, n_head_kv, head_dim, scale);
    } else {
        attention_rows<8, F16><<<grid, block, 0, s>>>(out, q, kc, vc, seq, pos, n_head, n_head_kv, head_dim, scale);
    }
}

} // namespace

extern "C" int st_cu_attention(float *out, const float *q, void *const *k_caches, void *const *v_caches,
                               const int *seq, const int *pos, int n_rows, int n_head, int n_head_kv, int head_dim,
                               bool kv_f16, void *stream)
{
    if (n_rows < 0 || n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv != 0 || head_dim <= 0 ||
        head_dim > ATT_MAX_HD) {
        return (int)cudaErrorInvalidValue;
    }
    if (n_rows == 0) {
        return 0;
    }
    const int64_t blocks = (int64_t)n_rows * n_head;
    if (blocks > 0x7fffffff) {
        return (int)cudaErrorInvalidValue;
    }
    const int npl = (head_dim + 31) / 32;
    const float scale = 1.0f / sqrtf((float)head_dim);
    const dim3 grid((unsigned)blocks);
    cudaStream_t s = ST_CU_STREAM(stream);
    if (kv_f16) {
        launch_attention<true>(npl, grid, s, out, q, k_caches, v_caches, seq, pos, n_head, n_head_kv, head_dim,
                               scale);
    } else {
        launch_attention<false>(npl, grid, s, out, q, k_caches, v_caches, seq, pos, n_head, n_head_kv, head_dim,
                                scale);
    }
    return st_cu_launch_status();
}
