/* GPU test of the CUDA kernels (cuda/cu_kernels.h) against CPU references:
 * quant.c's scalar dequantization + double-precision dots for the matmul, and
 * forward.c-equivalent code for rmsnorm / rope / attention / swiglu.
 *
 * Error bounds (max |gpu - ref| / max |ref| over the whole output unless said):
 *   matmul F32 weights            1e-5  (F32 accumulation vs double)
 *   matmul F16/BF16/quant weights 1e-3  (same dequantized values; room for
 *                                        FMA-fused Q4_K/Q5_K dequant)
 *   embed                         1e-6 per row (exact but for FMA fusion)
 *   rmsnorm, rope                 1e-6
 *   add, add_bias                 exact
 *   swiglu                        2e-6 per element, relative (device expf)
 *   kv_store                      exact (F16: same round-to-nearest-even)
 *   attention                     1e-4  (online F32 softmax vs double)
 *   argmax                        exact index (first maximum) and value
 * Without a usable device it prints "SKIP: no CUDA device (<reason>)" and
 * exits 77. Run through tests/gpu/kernels.sh; --no-bench skips the timings,
 * --quick runs fewer and smaller cases (make cuda-test-emu runs it that way
 * on the CPU emulator of cuda/tests/emu). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "cu_kernels.h"
extern "C" {
#include "common.h"
#include "quant.h"
}

static int g_fail = 0;
static int g_checks = 0;
static bool g_quick = false; /* --quick: fewer / smaller cases (the CPU emulator) */

#define CK(call)                                                                                                 \
    do {                                                                                                         \
        cudaError_t e_ = (call);                                                                                 \
        if (e_ != cudaSuccess) {                                                                                 \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));               \
            exit(1);                                                                                             \
        }                                                                                                        \
    } while (0)

#define CKL(call)                                                                                                \
    do {                                                                                                         \
        int r_ = (call);                                                                                         \
        if (r_ != 0) {                                                                                           \
            fprintf(stderr, "%s:%d: %s returned %d (%s)\n", __FILE__, __LINE__, #call, r_,                       \
                    cudaGetErrorString((cudaError_t)r_));                                                        \
            exit(1);                                                                                             \
        }                                                                                                        \
        CK(cudaStreamSynchronize(0));                                                                            \
    } while (0)

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(void) /* [-1, 1) */
{
    return (float)((int32_t)rnd() / 2147483648.0);
}

template <typename T> static T *dalloc(size_t n)
{
    void *p = NULL;
    CK(cudaMalloc(&p, (n ? n : 1) * sizeof(T)));
    return (T *)p;
}
static void up(void *d, const void *h, size_t bytes)
{
    CK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
}
static void down(void *h, const void *d, size_t bytes)
{
    CK(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost));
}

/* max |a - b| / max |b| over n values (NaN counts as failure). */
static double rel_err(const float *a, const float *b, size_t n)
{
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)b[i]);
        if (d != d) {
            return INFINITY;
        }
        md = d > md ? d : md;
        mr = fabs((double)b[i]) > mr ? fabs((double)b[i]) : mr;
    }
    return mr > 0 ? md / mr : md;
}

static void report(const char *what, double err, double bound)
{
    g_checks++;
    const bool ok = err <= bound;
    if (!ok) {
        g_fail++;
    }
    printf("%-4s %-60s err %.3g (bound %.0e)\n", ok ? "ok" : "FAIL", what, err, bound);
}

/* ---------------------------------------------------------------- matmul -- */

static const int k_types[] = {ST_F32, ST_F16, ST_BF16, ST_Q8_0, ST_Q4_0, ST_Q4_K, ST_Q5_K, ST_Q6_K};

static void test_matmul_shape(int type, int64_t n_in, int64_t n_out, const int *toks, int n_toks)
{
    const size_t rb = st_row_bytes((st_type)type, n_in);
    uint8_t *w = (uint8_t *)malloc(rb * n_out);
    float *wf = (float *)malloc(sizeof(float) * n_in * n_out);
    float *src = (float *)malloc(sizeof(float) * n_in);
    for (int64_t o = 0; o < n_out; o++) {
        for (int64_t i = 0; i < n_in; i++) {
            src[i] = frand() * (1.0f + (o % 7)); /* row scales vary */
        }
        if (!st_quantize_row((st_type)type, src, w + o * rb, n_in)) {
            fprintf(stderr, "cannot quantize to %s\n", st_type_name((st_type)type));
            exit(1);
        }
        st_dequant_row((st_type)type, w + o * rb, wf + o * n_in, n_in);
    }
    const int max_tok = 300;
    float *x = (float *)malloc(sizeof(float) * n_in * max_tok);
    for (int64_t i = 0; i < n_in * max_tok; i++) {
        x[i] = frand();
    }
    uint8_t *dw = dalloc<uint8_t>(rb * n_out);
    float *dx = dalloc<float>(n_in * max_tok + 4);
    float *dy = dalloc<float>(n_out * max_tok);
    up(dw, w, rb * n_out);
    float *y = (float *)malloc(sizeof(float) * n_out * max_tok);
    float *yr = (float *)malloc(sizeof(float) * n_out * max_tok);
    for (int k = 0; k < n_toks; k++) {
        const int n_tok = toks[k];
        /* one case per shape reads x from an address that is not 16-byte aligned */
        const int xoff = k == n_toks - 2 ? 1 : 0;
        up(dx + xoff, x, sizeof(float) * n_in * n_tok);
        CK(cudaMemset(dy, 0xff, sizeof(float) * n_out * max_tok)); /* NaN: every output must be written */
        CKL(st_cu_matmul(type, dw, n_in, n_out, dx + xoff, n_tok, dy, NULL));
        down(y, dy, sizeof(float) * n_out * n_tok);
        for (int t = 0; t < n_tok; t++) {
            for (int64_t o = 0; o < n_out; o++) {
                double s = 0.0;
                const float *wr = wf + o * n_in;
                const float *xr = x + (size_t)t * n_in;
                for (int64_t i = 0; i < n_in; i++) {
                    s += (double)wr[i] * xr[i];
                }
                yr[(size_t)t * n_out + o] = (float)s;
            }
        }
        char what[128];
        snprintf(what, sizeof what, "matmul %-4s n_in=%lld n_out=%lld n_tok=%d%s", st_type_name((st_type)type),
                 (long long)n_in, (long long)n_out, n_tok, xoff ? " (unaligned x)" : "");
        report(what, rel_err(y, yr, (size_t)n_out * n_tok), type == ST_F32 ? 1e-5 : 1e-3);
    }
    CK(cudaFree(dw));
    CK(cudaFree(dx));
    CK(cudaFree(dy));
    free(w), free(wf), free(src), free(x), free(y), free(yr);
}

static void test_matmul(void)
{
    const int toks_all[] = {1, 2, 3, 5, 8, 9, 64, 300};
    const int toks_small[] = {1, 3, 8, 64};
    const int toks_quick[] = {1, 3, 8, 9, 70};
    for (int ti = 0; ti < 8; ti++) {
        const int t = k_types[ti];
        if (g_quick) {
            test_matmul_shape(t, 512, 67, toks_quick, 5);
            if (t == ST_F32 || t == ST_F16 || t == ST_BF16) {
                test_matmul_shape(t, 99, 31, toks_quick, 5);
            }
            continue;
        }
        test_matmul_shape(t, 256, 67, toks_all, 8);
        test_matmul_shape(t, 1024, 333, toks_all, 8);
        test_matmul_shape(t, 4096, 129, toks_small, 4);
        if (t == ST_F32 || t == ST_F16 || t == ST_BF16) {
            test_matmul_shape(t, 99, 31, toks_all, 8); /* ragged row tail, odd rows */
            test_matmul_shape(t, 36, 5, toks_all, 8);
        }
    }
}

/* ----------------------------------------------------------------- embed -- */

static void test_embed(void)
{
    for (int ti = 0; ti < 8; ti++) {
        const int type = k_types[ti];
        const bool flt = type == ST_F32 || type == ST_F16 || type == ST_BF16;
        const int64_t n_embd = flt ? 203 : 512;
        const int n_vocab = 37, n_rows = 11;
        const size_t rb = st_row_bytes((st_type)type, n_embd);
        uint8_t *tab = (uint8_t *)malloc(rb * n_vocab);
        float *src = (float *)malloc(sizeof(float) * n_embd);
        for (int v = 0; v < n_vocab; v++) {
            for (int64_t i = 0; i < n_embd; i++) {
                src[i] = frand();
            }
            st_quantize_row((st_type)type, src, tab + v * rb, n_embd);
        }
        int ids[n_rows];
        for (int r = 0; r < n_rows; r++) {
            ids[r] = r == 3 ? ids[1] : (int)(rnd() % n_vocab);
        }
        ids[n_rows - 1] = n_vocab - 1;
        uint8_t *dtab = dalloc<uint8_t>(rb * n_vocab);
        int *dids = dalloc<int>(n_rows);
        float *dout = dalloc<float>(n_embd * n_rows);
        up(dtab, tab, rb * n_vocab);
        up(dids, ids, sizeof ids);
        CKL(st_cu_embed(type, dtab, n_embd, dids, n_rows, dout, NULL));
        float *out = (float *)malloc(sizeof(float) * n_embd * n_rows);
        float *ref = (float *)malloc(sizeof(float) * n_embd);
        down(out, dout, sizeof(float) * n_embd * n_rows);
        double worst = 0.0;
        for (int r = 0; r < n_rows; r++) {
            st_dequant_row((st_type)type, tab + (size_t)ids[r] * rb, ref, n_embd);
            const double e = rel_err(out + r * n_embd, ref, n_embd);
            worst = e > worst ? e : worst;
        }
        char what[96];
        snprintf(what, sizeof what, "embed %s n_embd=%lld", st_type_name((st_type)type), (long long)n_embd);
        report(what, worst, 1e-6);
        CK(cudaFree(dtab));
        CK(cudaFree(dids));
        CK(cudaFree(dout));
        free(tab), free(src), free(out), free(ref);
    }
}

/* ------------------------------------------------------------ row kernels -- */

static void cpu_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        sum += (double)(x[i] * x[i]);
    }
    const float mean = (float)(sum / n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++) {
        out[i] = (x[i] * scale) * w[i];
    }
}

static void test_rmsnorm(void)
{
    const int ns[] = {128, 1000, 4096};
    for (int k = 0; k < 3; k++) {
        const int n = ns[k], rows = 7;
        float *x = (float *)malloc(sizeof(float) * n * rows), *w = (float *)malloc(sizeof(float) * n);
        float *ref = (float *)malloc(sizeof(float) * n * rows), *out = (float *)malloc(sizeof(float) * n * rows);
        for (int i = 0; i < n * rows; i++) {
            x[i] = frand() * 3.0f;
        }
        for (int i = 0; i < n; i++) {
            w[i] = frand();
        }
        for (int r = 0; r < rows; r++) {
            cpu_rmsnorm(ref + r * n, x + r * n, w, n, 1e-6f);
        }
        float *dx = dalloc<float>(n * rows), *dw = dalloc<float>(n), *dout = dalloc<float>(n * rows);
        up(dx, x, sizeof(float) * n * rows);
        up(dw, w, sizeof(float) * n);
        CKL(st_cu_rmsnorm(dout, dx, dw, rows, n, 1e-6f, NULL));
        down(out, dout, sizeof(float) * n * rows);
        char what[64];
        snprintf(what, sizeof what, "rmsnorm n=%d", n);
        report(what, rel_err(out, ref, (size_t)n * rows), 1e-6);
        CKL(st_cu_rmsnorm(dx, dx, dw, rows, n, 1e-6f, NULL)); /* in place */
        down(out, dx, sizeof(float) * n * rows);
        snprintf(what, sizeof what, "rmsnorm in place n=%d", n);
        report(what, rel_err(out, ref, (size_t)n * rows), 1e-6);
        CK(cudaFree(dx));
        CK(cudaFree(dw));
        CK(cudaFree(dout));
        free(x), free(w), free(ref), free(out);
    }
}

static void cpu_rope(bool neox, int n_rot, const float *cache, float *x)
{
    if (!neox) {
        for (int i0 = 0; i0 < n_rot; i0 += 2) {
            const float c = cache[i0], s = cache[i0 + 1];
            const float x0 = x[i0], x1 = x[i0 + 1];
            x[i0] = x0 * c - x1 * s;
            x[i0 + 1] = x0 * s + x1 * c;
        }
    } else {
        const int half = n_rot / 2;
        for (int i0 = 0; i0 < n_rot; i0 += 2) {
            const float c = cache[i0], s = cache[i0 + 1];
            const int ic = i0 / 2;
            const float x0 = x[ic], x1 = x[ic + half];
            x[ic] = x0 * c - x1 * s;
            x[ic + half] = x0 * s + x1 * c;
        }
    }
}

static void test_rope(void)
{
    const int rows = 5, heads = 6;
    const int hds[] = {64, 128, 128};
    const int rots[] = {64, 128, 64};
    for (int k = 0; k < 3; k++) {
        for (int neox = 0; neox < 2; neox++) {
            const int hd = hds[k], n_rot = rots[k];
            const size_t n = (size_t)rows * heads * hd;
            float *x = (float *)malloc(sizeof(float) * n), *ref = (float *)malloc(sizeof(float) * n);
            float *cache = (float *)malloc(sizeof(float) * rows * n_rot);
            for (size_t i = 0; i < n; i++) {
                x[i] = ref[i] = frand();
            }
            for (int r = 0; r < rows; r++) {
                for (int i = 0; i < n_rot; i += 2) {
                    const float th = (float)(r * 17 + 3) * powf(10000.0f, -(float)i / n_rot);
                    cache[r * n_rot + i] = cosf(th);
                    cache[r * n_rot + i + 1] = sinf(th);
                }
                for (int h = 0; h < heads; h++) {
                    cpu_rope(neox, n_rot, cache + r * n_rot, ref + ((size_t)r * heads + h) * hd);
                }
            }
            float *dx = dalloc<float>(n), *dc = dalloc<float>((size_t)rows * n_rot);
            up(dx, x, sizeof(float) * n);
            up(dc, cache, sizeof(float) * rows * n_rot);
            CKL(st_cu_rope(dx, dc, rows, heads, hd, n_rot, neox != 0, NULL));
            down(x, dx, sizeof(float) * n);
            char what[64];
            snprintf(what, sizeof what, "rope %s head_dim=%d n_rot=%d", neox ? "neox" : "norm", hd, n_rot);
            report(what, rel_err(x, ref, n), 1e-6);
            CK(cudaFree(dx));
            CK(cudaFree(dc));
            free(x), free(ref), free(cache);
        }
    }
}

static void test_elementwise(void)
{
    const int rows = 9, n = 1037;
    const size_t N = (size_t)rows * n;
    float *a = (float *)malloc(sizeof(float) * N), *b = (float *)malloc(sizeof(float) * N);
    float *ref = (float *)malloc(sizeof(float) * N), *out = (float *)malloc(sizeof(float) * N);
    for (size_t i = 0; i < N; i++) {
        a[i] = frand() * 8.0f;
        b[i] = frand() * 8.0f;
    }
    float *da = dalloc<float>(N), *db = dalloc<float>(N);

    up(da, a, sizeof(float) * N);
    up(db, b, sizeof(float) * n);
    CKL(st_cu_add_bias(da, db, rows, n, NULL));
    down(out, da, sizeof(float) * N);
    for (size_t i = 0; i < N; i++) {
        ref[i] = a[i] + b[i % n];
    }
    report("add_bias", rel_err(out, ref, N), 0.0);

    up(da, a, sizeof(float) * N);
    up(db, b, sizeof(float) * N);
    CKL(st_cu_add(da, db, N, NULL));
    down(out, da, sizeof(float) * N);
    for (size_t i = 0; i < N; i++) {
        ref[i] = a[i] + b[i];
    }
    report("add", rel_err(out, ref, N), 0.0);

    up(da, a, sizeof(float) * N);
    CKL(st_cu_swiglu(da, db, N, NULL));
    down(out, da, sizeof(float) * N);
    double worst = 0.0;
    for (size_t i = 0; i < N; i++) {
        const double g = a[i];
        const double r = g / (1.0 + exp(-g)) * b[i];
        const double e = fabs(out[i] - r) / (fabs(r) > 1e-3 ? fabs(r) : 1e-3);
        worst = e > worst ? e : worst;
    }
    report("swiglu (per element)", worst, 2e-6);
    CK(cudaFree(da));
    CK(cudaFree(db));
    free(a), free(b), free(ref), free(out);
}

/* ------------------------------------------------------------- attention -- */

static float h_round(float v, bool f16)
{
    return f16 ? st_fp16_to_fp32(st_fp32_to_fp16(v)) : v;
}

static void test_attention_case(int n_head, int n_head_kv, int hd, bool f16)
{
    const int n_ctx = g_quick ? 50 : 300, n_seq = 2;
    const int kv_dim = n_head_kv * hd;
    const size_t esz = f16 ? 2 : 4;
    /* fill both caches through st_cu_kv_store: all positions of each sequence */
    float *kh[n_seq], *vh[n_seq];
    void *kc[n_seq], *vc[n_seq];
    int *dseq = dalloc<int>(n_ctx), *dpos = dalloc<int>(n_ctx);
    float *dk = dalloc<float>((size_t)n_ctx * kv_dim), *dv = dalloc<float>((size_t)n_ctx * kv_dim);
    int *hseq = (int *)malloc(sizeof(int) * n_ctx), *hpos = (int *)malloc(sizeof(int) * n_ctx);
    bool store_ok = true;
    for (int s = 0; s < n_seq; s++) {
        kh[s] = (float *)malloc(sizeof(float) * n_ctx * kv_dim);
        vh[s] = (float *)malloc(sizeof(float) * n_ctx * kv_dim);
        CK(cudaMalloc(&kc[s], esz * n_ctx * kv_dim));
        CK(cudaMalloc(&vc[s], esz * n_ctx * kv_dim));
        for (size_t i = 0; i < (size_t)n_ctx * kv_dim; i++) {
            kh[s][i] = frand() * 2.0f;
            vh[s][i] = frand();
        }
    }
    void **dkc = dalloc<void *>(n_seq), **dvc = dalloc<void *>(n_seq);
    up(dkc, kc, sizeof kc);
    up(dvc, vc, sizeof vc);
    for (int s = 0; s < n_seq; s++) {
        /* positions stored in reverse order: the cache index must come from pos */
        float *kr = (float *)malloc(sizeof(float) * n_ctx * kv_dim), *vr = (float *)malloc(sizeof(float) * n_ctx * kv_dim);
        for (int t = 0; t < n_ctx; t++) {
            hseq[t] = s;
            hpos[t] = n_ctx - 1 - t;
            memcpy(kr + (size_t)t * kv_dim, kh[s] + (size_t)hpos[t] * kv_dim, sizeof(float) * kv_dim);
            memcpy(vr + (size_t)t * kv_dim, vh[s] + (size_t)hpos[t] * kv_dim, sizeof(float) * kv_dim);
        }
        up(dseq, hseq, sizeof(int) * n_ctx);
        up(dpos, hpos, sizeof(int) * n_ctx);
        up(dk, kr, sizeof(float) * n_ctx * kv_dim);
        up(dv, vr, sizeof(float) * n_ctx * kv_dim);
        CKL(st_cu_kv_store(dkc, dvc, dseq, dpos, dk, dv, n_ctx, kv_dim, f16, NULL));
        /* check the stored bytes */
        uint8_t *got = (uint8_t *)malloc(esz * n_ctx * kv_dim);
        for (int which = 0; which < 2; which++) {
            const float *h = which ? vh[s] : kh[s];
            down(got, which ? vc[s] : kc[s], esz * n_ctx * kv_dim);
            for (size_t i = 0; i < (size_t)n_ctx * kv_dim; i++) {
                if (f16 ? ((uint16_t *)got)[i] != st_fp32_to_fp16(h[i]) : ((float *)got)[i] != h[i]) {
                    store_ok = false;
                }
            }
        }
        free(got), free(kr), free(vr);
        for (size_t i = 0; i < (size_t)n_ctx * kv_dim; i++) { /* what the cache holds */
            kh[s][i] = h_round(kh[s][i], f16);
            vh[s][i] = h_round(vh[s][i], f16);
        }
    }
    char what[128];
    snprintf(what, sizeof what, "kv_store %s kv_dim=%d", f16 ? "f16" : "f32", kv_dim);
    report(what, store_ok ? 0.0 : 1.0, 0.0);

    /* decode-like (3 rows) and prefill-like (64 rows) batches */
    const int n_rows_cases[2] = {3, g_quick ? 6 : 64};
    for (int c = 0; c < 2; c++) {
        const int n_rows = n_rows_cases[c];
        const int q_dim = n_head * hd;
        for (int t = 0; t < n_rows; t++) {
            if (n_rows == 3) {
                hseq[t] = t % 2;
                hpos[t] = t == 0 ? 0 : t == 1 ? n_ctx / 2 : n_ctx - 1;
            } else if (g_quick) {
                hseq[t] = t < 3 ? 0 : 1;
                hpos[t] = t < 3 ? t : 40 + t;
            } else {
                hseq[t] = t < 40 ? 0 : 1;
                hpos[t] = t < 40 ? t : 200 + t;
            }
        }
        float *q = (float *)malloc(sizeof(float) * n_rows * q_dim), *out = (float *)malloc(sizeof(float) * n_rows * q_dim);
        float *ref = (float *)malloc(sizeof(float) * n_rows * q_dim);
        for (int i = 0; i < n_rows * q_dim; i++) {
            q[i] = frand();
        }
        float *dq = dalloc<float>((size_t)n_rows * q_dim), *dout = dalloc<float>((size_t)n_rows * q_dim);
        up(dq, q, sizeof(float) * n_rows * q_dim);
        up(dseq, hseq, sizeof(int) * n_rows);
        up(dpos, hpos, sizeof(int) * n_rows);
        CKL(st_cu_attention(dout, dq, dkc, dvc, dseq, dpos, n_rows, n_head, n_head_kv, hd, f16, NULL));
        down(out, dout, sizeof(float) * n_rows * q_dim);
        const double scale = 1.0 / sqrt((double)hd);
        double *sc = (double *)malloc(sizeof(double) * n_ctx);
        for (int t = 0; t < n_rows; t++) {
            for (int h = 0; h < n_head; h++) {
                const int g = h / (n_head / n_head_kv);
                const float *qh = q + (size_t)t * q_dim + (size_t)h * hd;
                const int nk = hpos[t] + 1;
                double mx = -INFINITY;
                for (int j = 0; j < nk; j++) {
                    const float *kr = kh[hseq[t]] + (size_t)j * kv_dim + (size_t)g * hd;
                    double s = 0.0;
                    for (int d = 0; d < hd; d++) {
                        s += (double)qh[d] * kr[d];
                    }
                    sc[j] = s * scale;
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                double sum = 0.0;
                for (int j = 0; j < nk; j++) {
                    sc[j] = exp(sc[j] - mx);
                    sum += sc[j];
                }
                for (int d = 0; d < hd; d++) {
                    double o = 0.0;
                    for (int j = 0; j < nk; j++) {
                        o += sc[j] * vh[hseq[t]][(size_t)j * kv_dim + (size_t)g * hd + d];
                    }
                    ref[(size_t)t * q_dim + (size_t)h * hd + d] = (float)(o / sum);
                }
            }
        }
        snprintf(what, sizeof what, "attention %s heads=%d/%d head_dim=%d rows=%d", f16 ? "f16" : "f32", n_head,
                 n_head_kv, hd, n_rows);
        report(what, rel_err(out, ref, (size_t)n_rows * q_dim), 1e-4);
        CK(cudaFree(dq));
        CK(cudaFree(dout));
        free(q), free(out), free(ref), free(sc);
    }
    for (int s = 0; s < n_seq; s++) {
        CK(cudaFree(kc[s]));
        CK(cudaFree(vc[s]));
        free(kh[s]), free(vh[s]);
    }
    CK(cudaFree(dkc));
    CK(cudaFree(dvc));
    CK(cudaFree(dseq));
    CK(cudaFree(dpos));
    CK(cudaFree(dk));
    CK(cudaFree(dv));
    free(hseq), free(hpos);
}

static void test_attention(void)
{
    for (int f16 = 0; f16 < 2; f16++) {
        test_attention_case(8, 2, 64, f16);
        test_attention_case(4, 4, 128, f16);
        test_attention_case(6, 2, 80, f16);  /* head_dim not a multiple of 32 */
        test_attention_case(4, 1, 256, f16);
    }
}

/* ---------------------------------------------------------------- argmax -- */

static void test_argmax(void)
{
    const int rows = 5;
    const int vocabs[] = {1, 1000, 151936};
    for (int k = 0; k < 3; k++) {
        const int n = vocabs[k];
        float *l = (float *)malloc(sizeof(float) * rows * n);
        for (int i = 0; i < rows * n; i++) {
            l[i] = frand() * 10.0f;
        }
        if (n > 10) {
            l[0 * n + n - 1] = 50.0f;              /* max at the end */
            l[1 * n + 7] = l[1 * n + n / 2] = 60.0f; /* tie: the first wins */
            l[2 * n + 3] = NAN;                     /* NaN never wins */
            l[2 * n + 5] = 40.0f;
        }
        for (int i = 0; i < n; i++) {
            l[4 * n + i] = -INFINITY; /* no winner: index 0, max -inf */
        }
        int ref_i[rows];
        float ref_m[rows];
        for (int r = 0; r < rows; r++) {
            int best = 0;
            float bl = -INFINITY;
            for (int i = 0; i < n; i++) {
                if (l[(size_t)r * n + i] > bl) {
                    bl = l[(size_t)r * n + i];
                    best = i;
                }
            }
            ref_i[r] = best;
            ref_m[r] = bl;
        }
        float *dl = dalloc<float>((size_t)rows * n), *dm = dalloc<float>(rows);
        int *di = dalloc<int>(rows);
        up(dl, l, sizeof(float) * rows * n);
        CKL(st_cu_argmax(dl, rows, n, di, dm, NULL));
        int got_i[rows];
        float got_m[rows];
        down(got_i, di, sizeof got_i);
        down(got_m, dm, sizeof got_m);
        int bad = 0;
        for (int r = 0; r < rows; r++) {
            bad += got_i[r] != ref_i[r] || got_m[r] != ref_m[r];
        }
        char what[64];
        snprintf(what, sizeof what, "argmax n_vocab=%d", n);
        report(what, bad, 0.0);
        CK(cudaFree(dl));
        CK(cudaFree(dm));
        CK(cudaFree(di));
        free(l);
    }
}

/* ------------------------------------------------------- argument checks -- */

static void test_errors(void)
{
    int bad = 0;
    bad += st_cu_type_supported(ST_Q2_K) || st_cu_type_supported(999) || !st_cu_type_supported(ST_Q6_K);
    bad += st_cu_matmul(ST_Q2_K, NULL, 256, 4, NULL, 1, NULL, NULL) == 0;
    bad += st_cu_matmul(ST_Q4_K, NULL, 100, 4, NULL, 1, NULL, NULL) == 0; /* not whole blocks */
    bad += st_cu_attention(NULL, NULL, NULL, NULL, NULL, NULL, 1, 4, 4, 512, false, NULL) == 0;
    bad += st_cu_attention(NULL, NULL, NULL, NULL, NULL, NULL, 1, 6, 4, 64, false, NULL) == 0;
    bad += st_cu_rope(NULL, NULL, 1, 1, 64, 65, false, NULL) == 0;
    bad += st_cu_embed(ST_Q8_0, NULL, 33, NULL, 1, NULL, NULL) == 0;
    bad += cudaGetLastError() != cudaSuccess; /* rejected calls launch nothing */
    report("argument checks return errors", bad, 0.0);
}

/* --------------------------------------------------------------- timings -- */

static void bench(void)
{
    const int64_t n_in = 4096, n_out = 4096;
    const int types[] = {ST_F16, ST_Q8_0, ST_Q4_K, ST_Q6_K};
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    float *dx = dalloc<float>(n_in * 512), *dy = dalloc<float>(n_out * 512);
    CK(cudaMemset(dx, 0, sizeof(float) * n_in * 512));
    for (int k = 0; k < 4; k++) {
        const size_t bytes = st_row_bytes((st_type)types[k], n_in) * n_out;
        uint8_t *dw = dalloc<uint8_t>(bytes);
        CK(cudaMemset(dw, 0, bytes));
        const int toks[] = {1, 8, 512};
        for (int i = 0; i < 3; i++) {
            CKL(st_cu_matmul(types[k], dw, n_in, n_out, dx, toks[i], dy, NULL));
            CK(cudaEventRecord(a));
            const int reps = 20;
            for (int r = 0; r < reps; r++) {
                st_cu_matmul(types[k], dw, n_in, n_out, dx, toks[i], dy, NULL);
            }
            CK(cudaEventRecord(b));
            CK(cudaEventSynchronize(b));
            float ms = 0;
            CK(cudaEventElapsedTime(&ms, a, b));
            ms /= reps;
            printf("bench matmul %-4s 4096x4096 n_tok=%-3d %8.3f ms  %7.1f GB/s weights  %8.1f GFLOP/s\n",
                   st_type_name((st_type)types[k]), toks[i], ms, bytes / (ms * 1e6),
                   2.0 * n_in * n_out * toks[i] / (ms * 1e6));
        }
        CK(cudaFree(dw));
    }
    CK(cudaFree(dx));
    CK(cudaFree(dy));
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress survives a timeout kill */
    bool want_bench = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-bench") == 0) {
            want_bench = false;
        } else if (strcmp(argv[i], "--quick") == 0) {
            g_quick = true;
            want_bench = false;
        } else {
            fprintf(stderr, "usage: %s [--no-bench] [--quick]\n", argv[0]);
            return 2;
        }
    }
    int n_dev = 0;
    const cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0) {
        printf("SKIP: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 77;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (sm_%d%d)%s\n", prop.name, prop.major, prop.minor, g_quick ? ", quick run" : "");
    test_errors();
    test_matmul();
    test_embed();
    test_rmsnorm();
    test_rope();
    test_elementwise();
    test_attention();
    test_argmax();
    if (want_bench) {
        bench();
    }
    printf("kernels_gpu_test: %d checks, %d failed\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
