/* Quantization formats and dot kernels: sizes, hand-built blocks, golden
 * hashes of ggml's reference output, error bounds of quantize -> dequantize,
 * fp16/bf16 conversions, and every SIMD dot against the scalar reference. */
#include "quant.h"

#include "common.h"
#include "test.h"

#include <stdint.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static uint64_t fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint16_t f2h(float f)
{
    return st_fp32_to_fp16(f);
}

/* ----------------------------------------------------------- the table -- */

static void test_sizes(void)
{
    CHECK(sizeof(block_q4_0) == 18 && sizeof(block_q8_0) == 34);
    CHECK(sizeof(block_q4_K) == 144 && sizeof(block_q5_K) == 176 && sizeof(block_q6_K) == 210);
    CHECK(sizeof(block_q8_K) == 292);
    CHECK(st_type_block_elems(ST_F32) == 1 && st_type_block_bytes(ST_F32) == 4);
    CHECK(st_type_block_elems(ST_F16) == 1 && st_type_block_bytes(ST_F16) == 2);
    CHECK(st_type_block_elems(ST_BF16) == 1 && st_type_block_bytes(ST_BF16) == 2);
    CHECK(st_type_block_elems(ST_Q4_0) == 32 && st_type_block_bytes(ST_Q4_0) == 18);
    CHECK(st_type_block_elems(ST_Q8_0) == 32 && st_type_block_bytes(ST_Q8_0) == 34);
    CHECK(st_type_block_elems(ST_Q4_K) == 256 && st_type_block_bytes(ST_Q4_K) == 144);
    CHECK(st_type_block_elems(ST_Q5_K) == 256 && st_type_block_bytes(ST_Q5_K) == 176);
    CHECK(st_type_block_elems(ST_Q6_K) == 256 && st_type_block_bytes(ST_Q6_K) == 210);
    CHECK(st_type_block_elems(ST_Q8_K) == 256 && st_type_block_bytes(ST_Q8_K) == 292);
    /* known GGUF formats we cannot compute with still have sizes */
    CHECK(st_type_block_bytes(ST_Q4_1) == 20 && st_type_block_bytes(ST_Q5_0) == 22);
    CHECK(st_type_block_bytes(ST_Q2_K) == 84 && st_type_block_bytes(ST_Q3_K) == 110);
    CHECK(!st_type_supported(ST_Q4_1) && !st_type_supported(ST_Q2_K) && !st_type_supported(ST_Q8_K));
    CHECK(st_type_supported(ST_Q4_K) && st_type_supported(ST_BF16) && st_type_supported(ST_F32));
    /* unknown ids */
    CHECK(st_type_block_elems((st_type)4) == 0 && st_type_block_bytes((st_type)4) == 0);
    CHECK(st_type_block_elems((st_type)99) == 0 && !st_type_supported((st_type)99));
    CHECK(strcmp(st_type_name((st_type)99), "unknown") == 0);
    CHECK(strcmp(st_type_name(ST_Q4_K), "q4_K") == 0 && strcmp(st_type_name(ST_BF16), "bf16") == 0);
    CHECK(st_row_bytes(ST_Q4_K, 4096) == 16 * 144 && st_row_bytes(ST_F16, 7) == 14);
    CHECK(st_row_bytes(ST_Q8_0, 64) == 68 && st_row_bytes((st_type)99, 64) == 0);
    CHECK(st_vec_dot_type(ST_Q4_0) == ST_Q8_0 && st_vec_dot_type(ST_Q8_0) == ST_Q8_0);
    CHECK(st_vec_dot_type(ST_Q4_K) == ST_Q8_K && st_vec_dot_type(ST_Q5_K) == ST_Q8_K);
    CHECK(st_vec_dot_type(ST_Q6_K) == ST_Q8_K && st_vec_dot_type(ST_F16) == ST_F16);
    CHECK(st_vec_dot_type(ST_BF16) == ST_BF16 && st_vec_dot_type(ST_F32) == ST_F32);
    CHECK(st_quantize_row(ST_Q4_1, NULL, NULL, 32) == false);
    CHECK(st_quantize_row(ST_Q8_0, NULL, NULL, 33) == false); /* not a block multiple */
    CHECK(strcmp(st_simd_name(0), "scalar") == 0 && strcmp(st_simd_name(2), "avx512") == 0);
    CHECK(st_simd_level() >= 0 && st_simd_level() <= 2);
}

/* ------------------------------------------------- hand-built blocks -- */

static void test_known_blocks(void)
{
    float y[QK_K];

    block_q4_0 b40;
    b40.d = f2h(0.5f);
    for (int j = 0; j < 16; j++) {
        b40.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    }
    st_dequant_row(ST_Q4_0, &b40, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECK(y[j] == (float)(j - 8) * 0.5f);
        CHECK(y[j + 16] == (float)(7 - j) * 0.5f);
    }

    block_q8_0 b80;
    b80.d = f2h(0.25f);
    for (int j = 0; j < 32; j++) {
        b80.qs[j] = (int8_t)(j * 8 - 128);
    }
    st_dequant_row(ST_Q8_0, &b80, y, 32);
    for (int j = 0; j < 32; j++) {
        CHECK(y[j] == (float)(j * 8 - 128) * 0.25f);
    }

    /* Q4_K / Q5_K: scale sc_j = j + 1 (+ 40 for j >= 4, exercising the high
     * bits), min m_j = 2 * j (+ 17 for j >= 4) */
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(j + 1 + (j >= 4 ? 40 : 0));
        mn[j] = (uint8_t)(2 * j + (j >= 4 ? 17 : 0));
    }
    uint8_t packed[K_SCALE_SIZE] = {0};
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            packed[j] = sc[j];
            packed[j + 4] = mn[j];
        } else {
            packed[j + 4] = (uint8_t)((sc[j] & 0xF) | ((mn[j] & 0xF) << 4));
            packed[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            packed[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
    block_q4_K b4k;
    b4k.d = f2h(0.5f);
    b4k.dmin = f2h(0.25f);
    memcpy(b4k.scales, packed, sizeof(packed));
    for (int l = 0; l < 128; l++) {
        b4k.qs[l] = (uint8_t)((l % 16) | (((l + 3) % 16) << 4));
    }
    st_dequant_row(ST_Q4_K, &b4k, y, QK_K);
    for (int i = 0; i < QK_K; i++) {
        const int chunk = i / 64, within = i % 64, sub = i / 32;
        const int byte = chunk * 32 + within % 32;
        const int q = within < 32 ? b4k.qs[byte] & 0xF : b4k.qs[byte] >> 4;
        CHECK(y[i] == 0.5f * (float)sc[sub] * (float)q - 0.25f * (float)mn[sub]);
    }

    block_q5_K b5k;
    b5k.d = f2h(0.5f);
    b5k.dmin = f2h(0.25f);
    memcpy(b5k.scales, packed, sizeof(packed));
    for (int l = 0; l < 128; l++) {
        b5k.qs[l] = (uint8_t)((l % 16) | (((l + 5) % 16) << 4));
    }
    for (int l = 0; l < 32; l++) {
        b5k.qh[l] = (uint8_t)(l * 37 + 11);
    }
    st_dequant_row(ST_Q5_K, &b5k, y, QK_K);
    for (int i = 0; i < QK_K; i++) {
        const int chunk = i / 64, within = i % 64, sub = i / 32;
        const int l = within % 32;
        const int lo = within < 32 ? b5k.qs[chunk * 32 + l] & 0xF : b5k.qs[chunk * 32 + l] >> 4;
        const int hi = (b5k.qh[l] >> sub) & 1;
        CHECK(y[i] == 0.5f * (float)sc[sub] * (float)(lo + 16 * hi) - 0.25f * (float)mn[sub]);
    }

    /* Q6_K: element i of each 128 half: ql nibble + 2 bits of qh, minus 32 */
    block_q6_K b6k;
    b6k.d = f2h(0.125f);
    for (int s = 0; s < 16; s++) {
        b6k.scales[s] = (int8_t)(s % 2 ? -(s + 1) : s + 3);
    }
    for (int l = 0; l < 128; l++) {
        b6k.ql[l] = (uint8_t)(l * 13 + 7);
    }
    for (int l = 0; l < 64; l++) {
        b6k.qh[l] = (uint8_t)(l * 29 + 3);
    }
    st_dequant_row(ST_Q6_K, &b6k, y, QK_K);
    for (int i = 0; i < QK_K; i++) {
        const int half = i / 128, k = i % 128, group = k / 32, l = k % 32;
        const uint8_t qlb = b6k.ql[half * 64 + l + (group % 2) * 32];
        const int lo = group < 2 ? qlb & 0xF : qlb >> 4;
        const int hi = (b6k.qh[half * 32 + l] >> (2 * group)) & 3;
        const int q = (lo | (hi << 4)) - 32;
        CHECK(y[i] == 0.125f * (float)b6k.scales[i / 16] * (float)q);
    }

    block_q8_K b8k;
    b8k.d = 0.5f;
    for (int i = 0; i < QK_K; i++) {
        b8k.qs[i] = (int8_t)(i - 128);
    }
    st_dequant_row(ST_Q8_K, &b8k, y, QK_K);
    for (int i = 0; i < QK_K; i++) {
        CHECK(y[i] == 0.5f * (float)(i - 128));
    }

    /* float formats */
    const uint16_t h[3] = {0x3c00, 0xc000, 0x0001};
    st_dequant_row(ST_F16, h, y, 3);
    CHECK(y[0] == 1.0f && y[1] == -2.0f && y[2] == ldexpf(1.0f, -24));
    const uint16_t bf[2] = {0x3f80, 0xc040};
    st_dequant_row(ST_BF16, bf, y, 2);
    CHECK(y[0] == 1.0f && y[1] == -3.0f);

    /* quantizing zeros gives zeros (and zero block sums) */
    float zeros[QK_K] = {0};
    block_q8_K z8;
    memset(&z8, 0x55, sizeof(z8));
    CHECK(st_quantize_row(ST_Q8_K, zeros, &z8, QK_K));
    int nz = 0;
    for (int i = 0; i < 16; i++) {
        nz += z8.bsums[i] != 0;
    }
    CHECK(z8.d == 0.0f && nz == 0);
    const st_type all[] = {ST_Q4_0, ST_Q8_0, ST_Q4_K, ST_Q5_K, ST_Q6_K};
    for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++) {
        uint8_t buf[sizeof(block_q8_K) * 1];
        CHECK(st_quantize_row(all[k], zeros, buf, QK_K));
        st_dequant_row(all[k], buf, y, QK_K);
        int nonzero = 0;
        for (int i = 0; i < QK_K; i++) {
            nonzero += y[i] != 0.0f;
        }
        CHECK_MSG(nonzero == 0, "%s of zeros", st_type_name(all[k]));
    }
}

/* ------------------------------------------------------ golden hashes -- */

/* The same generator produced the expected hashes from llama.cpp's own
 * quantize_row_*_ref / dequantize_row_* (libggml-base of node-llama-cpp
 * 3.22.1): equal hashes mean bit-identical output. */
static void golden_input(float *x, int n)
{
    uint64_t s = 0x123456789ABCDEFull;
    for (int i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        const float v = (float)((s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
        const int blk = i / 256;
        const float scale = blk % 4 == 0 ? 1e-3f : blk % 4 == 1 ? 1.0f : blk % 4 == 2 ? 37.5f : 1e-30f;
        x[i] = v * scale;
        if (i % 97 == 0) {
            x[i] *= 9.0f; /* outliers */
        }
        if (blk % 8 == 5) {
            x[i] = (float)((int)(v * 8)) / 4; /* exact ties */
        }
        if (blk % 8 == 6) {
            x[i] = fabsf(x[i]) + 0.25f; /* all positive */
        }
    }
}

static void test_golden(void)
{
    enum { N = 4096 };
    static float x[N], y[N];
    static uint8_t q[N * 4];
    golden_input(x, N);
    const struct {
        st_type t;
        uint64_t quant, dequant;
    } golden[] = {
        {ST_Q4_0, 0xd2ade880a76afd62ull, 0x0c0e01737df3744full},
        {ST_Q8_0, 0x7b2c8dd03495987eull, 0x962612c01fbbd4b8ull},
        {ST_Q4_K, 0x45cb4ab96434267aull, 0x893d26adbcc51364ull},
        {ST_Q5_K, 0x0ae2ace70adc46b8ull, 0x8b52a691399ec6a7ull},
        {ST_Q6_K, 0x1799c099defcb364ull, 0x588140e2602e1958ull},
        {ST_Q8_K, 0x15fcf9b23dc1d0b9ull, 0},
        {ST_F16, 0xa3cf996096ce5a90ull, 0},
        {ST_BF16, 0xef9cb23b380dcdc5ull, 0},
    };
    for (size_t k = 0; k < sizeof(golden) / sizeof(golden[0]); k++) {
        const size_t rb = st_row_bytes(golden[k].t, N);
        memset(q, 0, sizeof(q));
        CHECK(st_quantize_row(golden[k].t, x, q, N));
        static uint8_t qs[N * 4];
        memset(qs, 0, sizeof(qs));
        CHECK(st_quantize_row_scalar(golden[k].t, x, qs, N));
        CHECK_MSG(fnv1a(qs, rb) == golden[k].quant, "%s scalar quantize hash", st_type_name(golden[k].t));
        CHECK_MSG(fnv1a(q, rb) == golden[k].quant, "%s quantize hash %016llx", st_type_name(golden[k].t),
                  (unsigned long long)fnv1a(q, rb));
        if (golden[k].dequant != 0) {
            st_dequant_row(golden[k].t, q, y, N);
            CHECK_MSG(fnv1a(y, sizeof(y)) == golden[k].dequant, "%s dequant hash", st_type_name(golden[k].t));
        }
    }
    /* SIMD quantizers and conversions equal the plain C ones everywhere */
    for (int rep = 0; rep < 30; rep++) {
        for (int i = 0; i < N; i++) {
            x[i] = frand() * ldexpf(1.0f, rep % 12 - 6);
            if (rep % 5 == 1 && i % 256 < 128) {
                x[i] = 0.0f; /* zero halves and whole zero blocks */
            }
            if (rep % 5 == 2) {
                x[i] = (float)((int)(x[i] * 64)) / 8; /* repeated magnitudes, ties */
            }
        }
        if (rep % 5 == 3) {
            memset(x, 0, 256 * sizeof(float));
        }
        static uint8_t q2[N * 4];
        const st_type ts[] = {ST_Q8_K, ST_F16, ST_BF16};
        for (int k = 0; k < 3; k++) {
            memset(q, 0x11, sizeof(q));
            memset(q2, 0x22, sizeof(q2));
            st_quantize_row(ts[k], x, q, N);
            st_quantize_row_scalar(ts[k], x, q2, N);
            CHECK_MSG(memcmp(q, q2, st_row_bytes(ts[k], N)) == 0, "%s simd vs scalar, rep %d", st_type_name(ts[k]), rep);
        }
    }
    /* activations as llama.cpp's x86 backend quantizes them: same hash on
     * this input, and the scalar and AVX2 versions agree everywhere */
    golden_input(x, N);
    st_quantize_row_q8_0_x86(x, (block_q8_0 *)q, N);
    CHECK(fnv1a(q, st_row_bytes(ST_Q8_0, N)) == 0x7b2c8dd03495987eull);
#if defined(__x86_64__)
    if (st_simd_level() >= 1) {
        static uint8_t q2[N * 2];
        for (int rep = 0; rep < 20; rep++) {
            for (int i = 0; i < N; i++) {
                x[i] = frand() * (float)(1 + rep * 13) + (rep % 3 == 0 ? (float)(i % 5) * 0.5f : 0.0f);
            }
            st_quantize_row_q8_0_x86(x, (block_q8_0 *)q, N);
            st_quantize_row_q8_0_x86_avx2(x, (block_q8_0 *)q2, N);
            CHECK(memcmp(q, q2, st_row_bytes(ST_Q8_0, N)) == 0);
        }
    }
#endif
}

/* ------------------------------------------------------- error bounds -- */

/* Relative RMS error of quantize -> dequantize on uniform [-1, 1) data, and a
 * per-element bound relative to the block's largest magnitude:
 *   Q8_0: rms <= 0.006, |err| <= (0.5 + 127 / 2048) * amax / 127: half a step,
 *         plus the fp16 rounding of the scale (2^-11 relative) times |q| <= 127
 *   Q4_0: rms <= 0.10,  |err| <= amax / 8 * (1 + 8 / 2048): the side opposite
 *         the max clamps at +7, a full step
 *   Q4_K: rms <= 0.06,  Q5_K: rms <= 0.03, Q6_K: rms <= 0.015, Q8_K: rms <= 0.006
 *   F16: rms <= 2^-11, BF16: rms <= 2^-8 */
static void test_error_bounds(void)
{
    enum { N = 8192 };
    static float x[N], y[N];
    static uint8_t q[N * 4];
    const struct {
        st_type t;
        double rms;
    } bounds[] = {
        {ST_Q8_0, 0.006}, {ST_Q4_0, 0.10}, {ST_Q4_K, 0.06}, {ST_Q5_K, 0.03},
        {ST_Q6_K, 0.015}, {ST_Q8_K, 0.006}, {ST_F16, 1.0 / 2048}, {ST_BF16, 1.0 / 256},
    };
    for (int i = 0; i < N; i++) {
        x[i] = frand();
    }
    for (size_t k = 0; k < sizeof(bounds) / sizeof(bounds[0]); k++) {
        CHECK(st_quantize_row(bounds[k].t, x, q, N));
        st_dequant_row(bounds[k].t, q, y, N);
        double se = 0.0, sx = 0.0;
        for (int i = 0; i < N; i++) {
            se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
            sx += (double)x[i] * x[i];
        }
        const double rel = sqrt(se / sx);
        CHECK_MSG(rel <= bounds[k].rms, "%s relative rms error %g > %g", st_type_name(bounds[k].t), rel,
                  bounds[k].rms);
    }
    for (int which = 0; which < 2; which++) {
        const st_type t = which == 0 ? ST_Q8_0 : ST_Q4_0;
        CHECK(st_quantize_row(t, x, q, N));
        st_dequant_row(t, q, y, N);
        int bad = 0;
        for (int b = 0; b < N / 32; b++) {
            float amax = 0.0f;
            for (int j = 0; j < 32; j++) {
                amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            }
            const float bound = which == 0 ? (0.5f + 127.0f / 2048.0f) * amax / 127.0f * 1.0001f
                                          : amax / 8.0f * (1.0f + 8.0f / 2048.0f) * 1.0001f;
            for (int j = 0; j < 32; j++) {
                bad += fabsf(y[b * 32 + j] - x[b * 32 + j]) > bound;
            }
        }
        CHECK_MSG(bad == 0, "%s: %d elements beyond the per-block bound", st_type_name(t), bad);
    }
}

/* ---------------------------------------------------- fp16 and bf16 -- */

static void test_half_conversions(void)
{
    int bad = 0, bad_row = 0;
    static uint16_t all[65536];
    static float f[65536];
    static uint16_t back[65536];
    for (int h = 0; h < 65536; h++) {
        all[h] = (uint16_t)h;
    }
    st_fp16_to_fp32_row(all, f, 65536);
    st_fp32_to_fp16_row(f, back, 65536);
    for (int h = 0; h < 65536; h++) {
        const float s = st_fp16_to_fp32((uint16_t)h);
        if (isnan(s)) {
            bad += !isnan(f[h]) || (back[h] & 0x7c00) != 0x7c00 || (back[h] & 0x3ff) == 0;
            continue;
        }
        bad_row += memcmp(&s, &f[h], sizeof(float)) != 0;
        bad += st_fp32_to_fp16(s) != (uint16_t)h || back[h] != (uint16_t)h;
    }
    CHECK_MSG(bad == 0 && bad_row == 0, "fp16 round trip: %d bad, %d row mismatches", bad, bad_row);
    /* round to nearest even, overflow, subnormals */
    CHECK(f2h(1.0f + ldexpf(1.0f, -11)) == 0x3c00);        /* tie -> even */
    CHECK(f2h(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3c02);    /* tie -> even (up) */
    CHECK(f2h(1.0f + ldexpf(1.0f, -11) + ldexpf(1.0f, -20)) == 0x3c01);
    CHECK(f2h(65504.0f) == 0x7bff && f2h(65519.0f) == 0x7bff && f2h(65520.0f) == 0x7c00);
    CHECK(f2h(-1e10f) == 0xfc00 && f2h(INFINITY) == 0x7c00);
    CHECK(f2h(ldexpf(1.0f, -24)) == 0x0001 && f2h(ldexpf(1.0f, -25)) == 0x0000);
    CHECK(f2h(3 * ldexpf(1.0f, -25)) == 0x0002 && f2h(-0.0f) == 0x8000);
    CHECK((f2h(NAN) & 0x7c00) == 0x7c00 && (f2h(NAN) & 0x3ff) != 0);
    /* row conversion of arbitrary floats equals the scalar one */
    for (int i = 0; i < 4096; i++) {
        f[i] = frand() * ldexpf(1.0f, (i % 40) - 26);
    }
    st_fp32_to_fp16_row(f, back, 4093); /* odd length: SIMD body + tail */
    bad = 0;
    for (int i = 0; i < 4093; i++) {
        bad += back[i] != st_fp32_to_fp16(f[i]);
    }
    CHECK(bad == 0);

    /* bf16: every pattern round-trips (NaNs stay NaN) */
    bad = 0;
    for (int h = 0; h < 65536; h++) {
        const float s = st_bf16_to_fp32((uint16_t)h);
        if (isnan(s)) {
            bad += !isnan(st_bf16_to_fp32(st_fp32_to_bf16(s)));
        } else {
            bad += st_fp32_to_bf16(s) != (uint16_t)h;
        }
    }
    CHECK(bad == 0);
    CHECK(st_fp32_to_bf16(1.0f + ldexpf(1.0f, -8)) == 0x3f80); /* tie -> even */
    CHECK(st_fp32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)) == 0x3f82);
}

/* ------------------------------------------------------ dot kernels -- */

/* Every level this CPU has against the scalar reference. Bound:
 * |simd - ref| <= 1e-5 * sum_i |w_i x_i| (dequantized values). Integer
 * formats sum exact int32 block dots and differ only in the float order of
 * the per-block scaled terms; float formats accumulate in fp32 vs double. */
static void test_dots(void)
{
    const st_type types[] = {ST_F32, ST_F16, ST_BF16, ST_Q4_0, ST_Q8_0, ST_Q4_K, ST_Q5_K, ST_Q6_K};
    const int lens_float[] = {1, 7, 16, 31, 64, 100, 257, 1000, 4096};
    const int lens_q32[] = {32, 64, 96, 320, 4096};
    const int lens_k[] = {256, 512, 2560, 4096};
    enum { NMAX = 4096 };
    static float wf[NMAX], xf[NMAX], wd[NMAX], xd[NMAX];
    static uint8_t w[NMAX * 4], x[NMAX * 4];
    const int best = st_simd_level();
    CHECK(st_vec_dot_get(ST_Q4_1, -1) == NULL && st_vec_dot_ref(ST_Q8_K) == NULL);
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        const st_type t = types[ti];
        const st_type vt = st_vec_dot_type(t);
        const int64_t be = st_type_block_elems(t);
        const int *lens = be == 1 ? lens_float : be == 32 ? lens_q32 : lens_k;
        const int nlens = be == 1 ? 9 : be == 32 ? 5 : 4;
        CHECK(st_vec_dot_get(t, 0) == st_vec_dot_ref(t));
        for (int level = 1; level <= best; level++) {
            st_vec_dot_fn fast = st_vec_dot_get(t, level);
            double worst = 0.0;
            int bad = 0;
            for (int li = 0; li < nlens; li++) {
                const int n = lens[li];
                for (int rep = 0; rep < 8; rep++) {
                    for (int i = 0; i < n; i++) {
                        wf[i] = frand() * (rep % 2 ? 30.0f : 1.0f);
                        xf[i] = frand() * (rep % 4 < 2 ? 1.0f : 0.01f);
                    }
                    st_quantize_row(t, wf, w, n);
                    st_quantize_row(vt, xf, x, n);
                    st_dequant_row(t, w, wd, n);
                    st_dequant_row(vt, x, xd, n);
                    double mag = 0.0;
                    for (int i = 0; i < n; i++) {
                        mag += fabs((double)wd[i] * xd[i]);
                    }
                    float r, s;
                    st_vec_dot_ref(t)(n, &r, w, x);
                    fast(n, &s, w, x);
                    const double err = fabs((double)s - r) / (mag > 0 ? mag : 1.0);
                    worst = err > worst ? err : worst;
                    bad += !(err <= 1e-5);
                }
            }
            CHECK_MSG(bad == 0, "%s level %d: %d results beyond 1e-5 (worst %g)", st_type_name(t), level, bad, worst);
        }
    }
    /* the reference itself against a double dot of the dequantized values */
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        const st_type t = types[ti];
        const int n = 1024;
        for (int i = 0; i < n; i++) {
            wf[i] = frand();
            xf[i] = frand();
        }
        st_quantize_row(t, wf, w, n);
        st_quantize_row(st_vec_dot_type(t), xf, x, n);
        st_dequant_row(t, w, wd, n);
        st_dequant_row(st_vec_dot_type(t), x, xd, n);
        double ref = 0.0, mag = 0.0;
        for (int i = 0; i < n; i++) {
            ref += (double)wd[i] * xd[i];
            mag += fabs((double)wd[i] * xd[i]);
        }
        float r;
        st_vec_dot_ref(t)(n, &r, w, x);
        CHECK_MSG(fabs(r - ref) <= 1e-5 * mag, "%s reference dot %g vs %g", st_type_name(t), r, ref);
    }
}

int main(void)
{
    printf("simd level %d (%s)\n", st_simd_level(), st_simd_name(st_simd_level()));
    test_sizes();
    test_known_blocks();
    test_golden();
    test_error_bounds();
    test_half_conversions();
    test_dots();
    TEST_MAIN_END();
}
