/* st_matmul against a naive dequantize + double-precision dot, for every
 * weight type, SIMD level this CPU has, thread split and a spread of token
 * counts (1..17 and 64, which cross every tile and GEMV/GEMM boundary). */
#include "matmul.h"

#include "common.h"
#include "quant.h"
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

/* Y (n_tok x n_out) must match the naive product within
 * 2e-5 * sum |w||x| + 1e-6 per element: the integer formats sum exact int32
 * block dots and differ from double only in float rounding of the per-block
 * scales and the accumulation order. */
static int check_one(st_type wt, int level, int64_t n_out, int64_t n_in, int64_t n_tok, int nth)
{
    const st_type vt = st_vec_dot_type(wt);
    const size_t wrow = st_row_bytes(wt, n_in);
    float *wf = malloc((size_t)(n_out * n_in) * sizeof(float));
    float *xf = malloc((size_t)(n_tok * n_in) * sizeof(float));
    uint8_t *W = malloc(wrow * (size_t)n_out);
    uint8_t *X = malloc(st_activation_bytes(wt, n_tok, n_in));
    float *Y = malloc((size_t)(n_tok * n_out) * sizeof(float));
    float *wd = malloc((size_t)n_in * sizeof(float));
    float *xd = malloc((size_t)(n_tok * n_in) * sizeof(float));
    for (int64_t i = 0; i < n_out * n_in; i++) {
        wf[i] = frand() * (1.0f + (float)(i % 7));
    }
    for (int64_t i = 0; i < n_tok * n_in; i++) {
        xf[i] = frand();
    }
    for (int64_t r = 0; r < n_out; r++) {
        st_quantize_row(wt, wf + r * n_in, W + (size_t)r * wrow, n_in);
    }
    st_quantize_activations(wt, xf, n_tok, n_in, X);
    const size_t xrow = st_row_bytes(vt, n_in);
    for (int64_t t = 0; t < n_tok; t++) {
        st_dequant_row(vt, X + (size_t)t * xrow, xd + t * n_in, n_in);
    }
    for (int64_t i = 0; i < n_tok * n_out; i++) {
        Y[i] = NAN;
    }
    for (int ith = 0; ith < nth; ith++) {
        st_matmul(level, wt, W, n_out, n_in, X, n_tok, Y, ith, nth);
    }
    int bad = 0;
    for (int64_t r = 0; r < n_out && bad < 3; r++) {
        st_dequant_row(wt, W + (size_t)r * wrow, wd, n_in);
        for (int64_t t = 0; t < n_tok; t++) {
            double ref = 0.0, mag = 0.0;
            for (int64_t k = 0; k < n_in; k++) {
                ref += (double)wd[k] * xd[t * n_in + k];
                mag += fabs((double)wd[k] * xd[t * n_in + k]);
            }
            const double got = Y[t * n_out + r];
            if (!(fabs(got - ref) <= 2e-5 * mag + 1e-6)) {
                if (bad++ < 3) {
                    fprintf(stderr, "%s level %d n_out %lld n_in %lld n_tok %lld nth %d: Y[%lld][%lld] = %g, want %g\n",
                            st_type_name(wt), level, (long long)n_out, (long long)n_in, (long long)n_tok, nth,
                            (long long)t, (long long)r, got, ref);
                }
            }
        }
    }
    free(wf);
    free(xf);
    free(W);
    free(X);
    free(Y);
    free(wd);
    free(xd);
    return bad;
}

/* Batch invariance: a token's row of Y is bit-identical whether the token is
 * computed alone (GEMV), inside a batch at any position (GEMM tiles), or with
 * any thread split. The scheduler depends on this: batched decoding and
 * reused prefixes must give the same logits as one sequence alone. */
static int check_invariance(st_type wt, int level, int64_t n_out, int64_t n_in)
{
    const int64_t n_tok = 13;
    const size_t wrow = st_row_bytes(wt, n_in);
    const size_t xrow = st_row_bytes(st_vec_dot_type(wt), n_in);
    float *wf = malloc((size_t)n_in * sizeof(float));
    float *xf = malloc((size_t)(n_tok * n_in) * sizeof(float));
    uint8_t *W = malloc(wrow * (size_t)n_out);
    uint8_t *X = malloc(xrow * (size_t)n_tok);
    float *all = malloc((size_t)(n_tok * n_out) * sizeof(float));
    float *part = malloc((size_t)(n_tok * n_out) * sizeof(float));
    for (int64_t r = 0; r < n_out; r++) {
        for (int64_t k = 0; k < n_in; k++) {
            wf[k] = frand() * (1.0f + (float)(r % 5));
        }
        st_quantize_row(wt, wf, W + (size_t)r * wrow, n_in);
    }
    for (int64_t i = 0; i < n_tok * n_in; i++) {
        xf[i] = frand();
    }
    st_quantize_activations(wt, xf, n_tok, n_in, X);
    st_matmul(level, wt, W, n_out, n_in, X, n_tok, all, 0, 1);
    int bad = 0;
    /* every token alone, with 1 and 3 threads */
    for (int64_t t = 0; t < n_tok; t++) {
        for (int nth = 1; nth <= 3; nth += 2) {
            for (int ith = 0; ith < nth; ith++) {
                st_matmul(level, wt, W, n_out, n_in, X + (size_t)t * xrow, 1, part, ith, nth);
            }
            bad += memcmp(part, all + t * n_out, (size_t)n_out * sizeof(float)) != 0;
        }
    }
    /* a sub-batch at another offset (tokens land in other tile positions),
     * split over 2 threads */
    for (int ith = 0; ith < 2; ith++) {
        st_matmul(level, wt, W, n_out, n_in, X + 3 * xrow, 9, part, ith, 2);
    }
    bad += memcmp(part, all + 3 * n_out, (size_t)(9 * n_out) * sizeof(float)) != 0;
    free(wf);
    free(xf);
    free(W);
    free(X);
    free(all);
    free(part);
    return bad;
}

int main(void)
{
    const st_type types[] = {ST_F32, ST_F16, ST_BF16, ST_Q4_0, ST_Q8_0, ST_Q4_K, ST_Q5_K, ST_Q6_K};
    const int best = st_simd_level();
    printf("simd level %d (%s)\n", best, st_simd_name(best));
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        const st_type wt = types[ti];
        const int64_t blk = st_type_block_elems(wt);
        const int64_t n_in = blk == QK_K ? 512 : 96 + (blk == 1 ? 3 : 0); /* odd length for float types */
        for (int level = 0; level <= best; level++) {
            int fails = 0;
            /* every token count 1..17 and 64 with a partial last strip */
            for (int64_t n_tok = 1; n_tok <= 18; n_tok++) {
                const int64_t nt = n_tok == 18 ? 64 : n_tok;
                fails += check_one(wt, level, 37, n_in, nt, 1);
            }
            /* thread splits, including more threads than strips */
            for (int nth = 2; nth <= 5; nth++) {
                fails += check_one(wt, level, 67, n_in, 1, nth);
                fails += check_one(wt, level, 67, n_in, 9, nth);
            }
            /* longer rows and several strips */
            fails += check_one(wt, level, 48, blk == QK_K ? 2048 : 1024, 12, 2);
            /* rows long enough that the GEMV kernels work in chunks */
            if (level == best) {
                const int64_t long_in = blk == QK_K ? 65 * QK_K : blk == 32 ? 513 * 32 : 4099;
                fails += check_one(wt, level, 7, long_in, 1, 1);
                fails += check_one(wt, level, 21, long_in, 2, 2);
            }
            CHECK_MSG(fails == 0, "%s level %d: %d mismatches", st_type_name(wt), level, fails);
        }
    }
    /* batch invariance at every level */
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        const st_type wt = types[ti];
        const int64_t blk = st_type_block_elems(wt);
        for (int level = 0; level <= best; level++) {
            const int64_t n_in = blk == QK_K ? 768 : blk == 32 ? 320 : 203;
            const int bad = check_invariance(wt, level, 45, n_in) + check_invariance(wt, level, 21, 4 * n_in);
            CHECK_MSG(bad == 0, "%s level %d: %d batch-dependent results", st_type_name(wt), level, bad);
        }
    }
    /* activation byte counts */
    CHECK(st_activation_bytes(ST_Q4_K, 3, 512) == 3 * 2 * sizeof(block_q8_K));
    CHECK(st_activation_bytes(ST_Q4_0, 2, 64) == 2 * 2 * sizeof(block_q8_0));
    CHECK(st_activation_bytes(ST_F16, 2, 10) == 40);
    TEST_MAIN_END();
}
