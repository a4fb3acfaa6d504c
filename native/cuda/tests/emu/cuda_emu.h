/* A CPU emulator for the subset of CUDA the kernels and their GPU test use,
 * so kernels_gpu_test runs without a GPU (make cuda-test-emu). Each block's
 * threads are cooperative user-space contexts (ucontext) run one at a time;
 * __syncthreads and warp shuffles are barriers that switch contexts. Blocks
 * run one after another, so __shared__ becomes a static. Launch syntax
 * kernel<<<g, b, shm, s>>>(args) is rewritten to emu_launch(...) by
 * emu_transform.py. Built with -D__CUDA_ARCH__ so the device branches of
 * dequant.cuh (pointer-cast loads, __half2float) are the ones that run.
 * Test tool only. */
#ifndef ST_CUDA_EMU_H
#define ST_CUDA_EMU_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include <functional>
#include <vector>

extern "C" uint16_t st_fp32_to_fp16(float f);
extern "C" float st_fp16_to_fp32(uint16_t h);

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct emu_uint3 {
    unsigned x, y, z;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct __half {
    uint16_t bits;
};
inline float __half2float(__half h)
{
    return st_fp16_to_fp32(h.bits);
}
inline __half __float2half_rn(float f)
{
    return __half{st_fp32_to_fp16(f)};
}
inline __half __ushort_as_half(unsigned short v)
{
    return __half{v};
}
inline float __uint_as_float(unsigned v)
{
    float f;
    memcpy(&f, &v, sizeof f);
    return f;
}
inline float __fmul_rn(float a, float b)
{
    return a * b;
}
inline float __fadd_rn(float a, float b)
{
    return a + b;
}
inline float __fsub_rn(float a, float b)
{
    return a - b;
}

inline emu_uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

/* ------------------------------------------------------- scheduler -- */

struct emu_thread {
    ucontext_t ctx;
    bool done;
};
inline ucontext_t emu_main_ctx;
inline std::vector<emu_thread> emu_threads;
inline std::vector<char> emu_stacks;
inline int emu_cur;
inline std::function<void()> emu_body;
constexpr size_t EMU_STACK = 256 * 1024;

inline void emu_yield()
{
    swapcontext(&emu_threads[emu_cur].ctx, &emu_main_ctx);
}

inline void emu_trampoline()
{
    emu_body();
    emu_threads[emu_cur].done = true;
}

struct emu_barrier {
    int count = 0;
    int gen = 0;
};
inline void emu_barrier_wait(emu_barrier &b, int n)
{
    const int g = b.gen;
    if (++b.count == n) {
        b.count = 0;
        b.gen++;
        return;
    }
    while (b.gen == g) {
        emu_yield();
    }
}

inline emu_barrier emu_block_bar;
inline emu_barrier emu_warp_bar[32];
inline uint64_t emu_warp_slot[32][32];

inline void __syncthreads()
{
    emu_barrier_wait(emu_block_bar, (int)blockDim.x);
}

template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int o)
{
    (void)mask;
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    emu_warp_slot[warp][lane] = bits;
    emu_barrier_wait(emu_warp_bar[warp], 32);
    bits = emu_warp_slot[warp][lane ^ o];
    emu_barrier_wait(emu_warp_bar[warp], 32);
    T r;
    memcpy(&r, &bits, sizeof r);
    return r;
}

/* Runs body for every thread of every block (1-D blocks, x/y grids). */
inline void emu_launch(dim3 grid, dim3 block, std::function<void()> body)
{
    if (block.x > 1024 || block.y != 1 || block.z != 1 || block.x % 32 != 0) {
        fprintf(stderr, "emu: unsupported block shape\n");
        abort();
    }
    gridDim = grid;
    blockDim = block;
    emu_body = body;
    const int n = (int)block.x;
    emu_threads.assign(n, emu_thread{});
    emu_stacks.resize((size_t)n * EMU_STACK);
    for (unsigned by = 0; by < grid.y; by++) {
        for (unsigned bx = 0; bx < grid.x; bx++) {
            blockIdx = emu_uint3{bx, by, 0};
            emu_block_bar = emu_barrier{};
            for (int w = 0; w < 32; w++) {
                emu_warp_bar[w] = emu_barrier{};
            }
            for (int i = 0; i < n; i++) {
                emu_thread &t = emu_threads[i];
                t.done = false;
                getcontext(&t.ctx);
                t.ctx.uc_stack.ss_sp = emu_stacks.data() + (size_t)i * EMU_STACK;
                t.ctx.uc_stack.ss_size = EMU_STACK;
                t.ctx.uc_link = &emu_main_ctx;
                makecontext(&t.ctx, emu_trampoline, 0);
            }
            int remaining = n;
            while (remaining > 0) {
                for (int i = 0; i < n; i++) {
                    if (emu_threads[i].done) {
                        continue;
                    }
                    emu_cur = i;
                    threadIdx = emu_uint3{(unsigned)i, 0, 0};
                    swapcontext(&emu_main_ctx, &emu_threads[i].ctx);
                    if (emu_threads[i].done) {
                        remaining--;
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------ runtime API -- */

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
} cudaError_t;
typedef void *cudaStream_t;
typedef void *cudaEvent_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
struct cudaDeviceProp {
    char name[256];
    int major, minor;
};

inline const char *cudaGetErrorString(cudaError_t e)
{
    return e == cudaSuccess ? "no error" : e == cudaErrorInvalidValue ? "invalid argument" : "emulated error";
}
inline cudaError_t cudaGetLastError()
{
    return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int)
{
    snprintf(p->name, sizeof p->name, "CPU emulator");
    p->major = 0;
    p->minor = 0;
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = aligned_alloc(256, (n + 255) / 256 * 256);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
template <typename T> inline cudaError_t cudaMalloc(T **p, size_t n)
{
    return cudaMalloc((void **)p, n);
}
inline cudaError_t cudaFree(void *p)
{
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind)
{
    memcpy(d, s, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemset(void *d, int v, size_t n)
{
    memset(d, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t)
{
    return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    *e = NULL;
    return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t = NULL)
{
    return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t)
{
    return cudaSuccess;
}
inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t, cudaEvent_t)
{
    *ms = 1.0f;
    return cudaSuccess;
}

#endif
