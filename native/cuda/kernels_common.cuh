/* Shared helpers of the kernels*.cu files (device side only). */
#ifndef ST_CU_KERNELS_COMMON_CUH
#define ST_CU_KERNELS_COMMON_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "cu_kernels.h"
#include "dequant.cuh"

#define ST_CU_STREAM(s) ((cudaStream_t)(s))

/* Launch status: the error of the last launch (cudaGetLastError also clears
 * a sticky-free error so the next call starts clean). */
static inline int st_cu_launch_status(void)
{
    return (int)cudaGetLastError();
}

__device__ __forceinline__ float st_cu_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

__device__ __forceinline__ double st_cu_warp_sum_d(double v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

/* Eight activations x[k..k+7] of a row of n elements (elements past n read
 * as 0). vec: the row start is 16-byte aligned and n % 4 == 0, so whole
 * chunks load as two float4. */
__device__ __forceinline__ void st_cu_load_x8(const float *__restrict__ xrow, int64_t k, int64_t n, bool vec,
                                              float *v)
{
    if (vec && k + 8 <= n) {
        const float4 a = *(const float4 *)(xrow + k);
        const float4 b = *(const float4 *)(xrow + k + 4);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w;
        v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
        return;
    }
#pragma unroll
    for (int e = 0; e < 8; e++) {
        v[e] = k + e < n ? xrow[k + e] : 0.0f;
    }
}

#endif
