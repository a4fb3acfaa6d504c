/* Host-only test of the CUDA kernels' dequantization math (cuda/dequant.cuh):
 * the same __host__ __device__ functions the kernels run, here on the CPU,
 * must reproduce quant.c's scalar st_dequant_row bit for bit on random blocks
 * of every supported weight type (random quant bytes, scales drawn from the
 * full finite half range incl. subnormals and negative values), for whole
 * rows through st_cu_row_chunk and for float rows with a ragged tail.
 * Needs no GPU or driver. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dequant.cuh"

extern "C" {
#include "common.h"
}

static int g_fail = 0;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* A random finite half (any exponent, both signs; never inf/NaN). */
static uint16_t rnd_half(void)
{
    for (;;) {
        const uint16_t h = (uint16_t)rnd();
        if (((h >> 10) & 0x1f) != 0x1f) {
            return h;
        }
    }
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Random row of n elements of type t, scales made finite. */
static void fill_row(int t, uint8_t *row, int64_t n)
{
    const size_t bytes = st_row_bytes((st_type)t, n);
    for (size_t i = 0; i < bytes; i++) {
        row[i] = (uint8_t)rnd();
    }
    const int64_t qk = st_type_block_elems((st_type)t);
    const size_t bb = st_type_block_bytes((st_type)t);
    for (int64_t b = 0; b < n / qk; b++) {
        uint8_t *blk = row + (size_t)b * bb;
        switch (t) {
        case ST_F16:
            put16(blk, rnd_half());
            break;
        case ST_BF16: {
            uint16_t v;
            do {
                v = (uint16_t)rnd();
            } while (((v >> 7) & 0xff) == 0xff);
            put16(blk, v);
            break;
        }
        case ST_F32: {
            const float f = ((int32_t)rnd() / 2147483648.0f) * ldexpf(1.0f, (int)(rnd() % 60) - 30);
            memcpy(blk, &f, 4);
            break;
        }
        case ST_Q8_0:
        case ST_Q4_0:
            put16(blk, rnd_half());
            break;
        case ST_Q4_K:
        case ST_Q5_K:
            put16(blk, rnd_half());
            put16(blk + 2, rnd_half());
            break;
        case ST_Q6_K:
            put16(blk + 208, rnd_half());
            break;
        }
    }
}

static bool same_bits(float a, float b)
{
    uint32_t x, y;
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y;
}

/* misalign: byte offset of the row from a 16-byte aligned address (quant
 * rows may start anywhere; every load width of st_cu_ld8 gets exercised). */
template <int T> static void check_type(const char *name, int64_t n, int rows, int misalign = 0)
{
    const size_t rb = st_row_bytes((st_type)T, n);
    uint8_t *buf = (uint8_t *)malloc(rb + 16);
    uint8_t *row = buf + misalign;
    float *ref = (float *)malloc((size_t)n * sizeof(float));
    float *got = (float *)malloc((size_t)(n + 8) * sizeof(float));
    int64_t mism = 0;
    for (int r = 0; r < rows; r++) {
        fill_row(T, row, n);
        st_dequant_row((st_type)T, row, ref, n);
        const int64_t n_chunks = (n + 7) / 8;
        for (int64_t c = 0; c < n_chunks; c++) {
            st_cu_row_chunk<T>(row, c, n, got + 8 * c);
        }
        for (int64_t i = 0; i < n; i++) {
            if (!same_bits(ref[i], got[i])) {
                if (mism < 5) {
                    fprintf(stderr, "  %s n=%lld row %d elem %lld: cpu %.9g gpu-math %.9g\n", name, (long long)n,
                            r, (long long)i, ref[i], got[i]);
                }
                mism++;
            }
        }
        for (int64_t i = n; i < 8 * n_chunks; i++) {
            if (got[i] != 0.0f) { /* ragged float tail reads as 0 */
                if (mism < 5) {
                    fprintf(stderr, "  %s n=%lld tail elem %lld = %g, want 0\n", name, (long long)n,
                            (long long)i, got[i]);
                }
                mism++;
            }
        }
    }
    printf("%-5s n=%-5lld rows=%-3d +%d %s\n", name, (long long)n, rows, misalign, mism ? "FAIL" : "ok");
    if (mism) {
        g_fail++;
    }
    free(buf);
    free(ref);
    free(got);
}

/* A negative control: a deliberately wrong dequant must be caught, so the
 * comparison above can fail. */
static void check_control(void)
{
    uint8_t blk[34];
    fill_row(ST_Q8_0, blk, 32);
    float ref[32], got[32];
    st_dequant_row(ST_Q8_0, blk, ref, 32);
    for (int c = 0; c < 4; c++) {
        StFmt<ST_Q4_0>::dq8(blk, c, got + 8 * c); /* wrong format */
    }
    int diff = 0;
    for (int i = 0; i < 32; i++) {
        diff += !same_bits(ref[i], got[i]);
    }
    printf("control (Q4_0 math on Q8_0 data differs): %s\n", diff ? "ok" : "FAIL");
    if (!diff) {
        g_fail++;
    }
}

/* Every finite and non-finite half converts like common.c's. */
static void check_half(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        bad += !same_bits(st_cu_h2f((uint16_t)h), st_fp16_to_fp32((uint16_t)h));
        bad += !same_bits(st_cu_bf2f((uint16_t)h), st_bf16_to_fp32((uint16_t)h));
    }
    printf("half/bf16 -> float, all 65536 values: %s\n", bad ? "FAIL" : "ok");
    if (bad) {
        g_fail++;
    }
}

int main(void)
{
    check_half();
    check_control();
    const int64_t quant_n[] = {256, 512, 4096};
    for (int i = 0; i < 3; i++) {
        const int64_t n = quant_n[i];
        check_type<ST_Q8_0>("q8_0", n, 64);
        check_type<ST_Q4_0>("q4_0", n, 64);
        check_type<ST_Q4_K>("q4_K", n, 64);
        check_type<ST_Q5_K>("q5_K", n, 64);
        check_type<ST_Q6_K>("q6_K", n, 64);
        check_type<ST_F32>("f32", n, 8);
        check_type<ST_F16>("f16", n, 8);
        check_type<ST_BF16>("bf16", n, 8);
    }
    for (int mis = 1; mis < 8; mis += 2) {
        check_type<ST_Q8_0>("q8_0", 512, 16, mis);
        check_type<ST_Q4_0>("q4_0", 512, 16, mis);
        check_type<ST_Q4_K>("q4_K", 512, 16, mis);
        check_type<ST_Q5_K>("q5_K", 512, 16, mis);
        check_type<ST_Q6_K>("q6_K", 512, 16, mis);
    }
    const int64_t ragged[] = {1, 7, 9, 33, 1001};
    for (int i = 0; i < 5; i++) {
        check_type<ST_F32>("f32", ragged[i], 8);
        check_type<ST_F16>("f16", ragged[i], 8);
        check_type<ST_BF16>("bf16", ragged[i], 8);
    }
    /* every type the kernels claim has a host-checked dequant here */
    const int claimed[] = {ST_F32, ST_F16, ST_BF16, ST_Q8_0, ST_Q4_0, ST_Q4_K, ST_Q5_K, ST_Q6_K};
    for (int i = 0; i < 8; i++) {
        if (!st_type_supported((st_type)claimed[i])) {
            printf("type %d is not supported by the CPU engine\n", claimed[i]);
            g_fail++;
        }
    }
    if (g_fail) {
        printf("kernels_host_test: %d FAILED\n", g_fail);
        return 1;
    }
    printf("kernels_host_test: all passed\n");
    return 0;
}
