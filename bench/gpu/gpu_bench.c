/* gpu_bench: prompt and generation speed of one backend / VRAM budget.
 *
 *   gpu_bench MODEL [--backend cpu|cuda|auto] [--vram-budget BYTES] [--pp N]
 *             [--tg N] [--batch B] [--threads N]
 *
 * Loads MODEL, evaluates a pp-token prompt (one chunk), then tg single-token
 * steps (greedy), then tg steps of B sequences decoding together (one
 * layer-major step each, st_forward_batch). Prints one JSON line. Built by
 * bench/gpu/bench.sh against native/<build>/libstrata.a. */
#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++) {
        b = x[i] > x[b] ? i : b;
    }
    return b;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: gpu_bench MODEL [--backend B] [--vram-budget N] [--pp N] [--tg N] [--batch B]\n");
        return 2;
    }
    const char *backend = "auto";
    unsigned long long vram = 0;
    int pp = 256, tg = 32, batch = 8, threads = 0;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--backend") == 0) {
            backend = argv[i + 1];
        } else if (strcmp(argv[i], "--vram-budget") == 0) {
            vram = strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--pp") == 0) {
            pp = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--tg") == 0) {
            tg = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--batch") == 0) {
            batch = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--threads") == 0) {
            threads = atoi(argv[i + 1]);
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    strata_model_params mp;
    strata_model_params_default(&mp);
    mp.backend = strcmp(backend, "cpu") == 0    ? STRATA_BACKEND_CPU
                 : strcmp(backend, "cuda") == 0 ? STRATA_BACKEND_CUDA
                                                : STRATA_BACKEND_AUTO;
    mp.vram_budget = vram;
    mp.n_threads = threads;
    strata_error err = {0};
    strata_model *m = NULL;
    double t0 = st_now_ms();
    if (strata_model_load(argv[1], &mp, &m, &err) != STRATA_OK) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 1;
    }
    double load_ms = st_now_ms() - t0;
    strata_model_info info;
    strata_model_get_info(m, &info);
    const int nv = info.n_vocab;
    strata_ctx_params cp;
    strata_ctx_params_default(&cp);
    cp.n_ctx = pp + tg + 8;
    cp.n_batch = pp;
    cp.n_threads = threads;
    strata_ctx *ctx = NULL;
    if (strata_ctx_new(m, &cp, &ctx, &err) != STRATA_OK) {
        fprintf(stderr, "ctx: %s\n", err.msg);
        return 1;
    }
    strata_token *toks = malloc((size_t)pp * sizeof(strata_token));
    float *logits = malloc((size_t)nv * sizeof(float));
    for (int i = 0; i < pp; i++) {
        toks[i] = (strata_token)((i * 7919 + 13) % nv);
    }
    /* warm-up token: resident parts are uploaded on first use */
    strata_token w = 1;
    if (strata_eval(ctx, &w, 1, logits, &err) != STRATA_OK) {
        fprintf(stderr, "eval: %s\n", err.msg);
        return 1;
    }
    strata_ctx_truncate(ctx, 0);
    t0 = st_now_ms();
    if (strata_eval(ctx, toks, (size_t)pp, logits, &err) != STRATA_OK) {
        fprintf(stderr, "eval: %s\n", err.msg);
        return 1;
    }
    const double pp_ms = st_now_ms() - t0;
    t0 = st_now_ms();
    for (int i = 0; i < tg; i++) {
        strata_token t = argmax(logits, nv);
        if (strata_eval(ctx, &t, 1, logits, &err) != STRATA_OK) {
            fprintf(stderr, "eval: %s\n", err.msg);
            return 1;
        }
    }
    const double tg_ms = st_now_ms() - t0;
    strata_ctx_free(ctx);

    /* B sequences decoding together */
    double btg_ms = 0;
    if (batch > 1) {
        st_pool *pool = NULL;
        st_runner *run = NULL;
        strata_ctx **cs = calloc((size_t)batch, sizeof(*cs));
        st_batch_seq *seqs = calloc((size_t)batch, sizeof(*seqs));
        strata_token *next = calloc((size_t)batch, sizeof(strata_token));
        float *bl = malloc((size_t)batch * nv * sizeof(float));
        if (st_pool_new(threads, &pool, &err) != STRATA_OK ||
            st_runner_new(m, batch * 16, 16 + tg + 8, pool, &run, &err) != STRATA_OK) {
            fprintf(stderr, "runner: %s\n", err.msg);
            return 1;
        }
        for (int s = 0; s < batch; s++) {
            if (st_ctx_new_kv(m, 16 + tg + 8, false, &cs[s], &err) != STRATA_OK) {
                fprintf(stderr, "ctx: %s\n", err.msg);
                return 1;
            }
            seqs[s] = (st_batch_seq){.ctx = cs[s], .toks = toks + s, .n = 16, .logits = bl + (size_t)s * nv};
        }
        if (st_forward_batch(run, &m->source, seqs, batch, &err) != STRATA_OK) {
            fprintf(stderr, "batch: %s\n", err.msg);
            return 1;
        }
        t0 = st_now_ms();
        for (int i = 0; i < tg; i++) {
            for (int s = 0; s < batch; s++) {
                next[s] = argmax(bl + (size_t)s * nv, nv);
                seqs[s] = (st_batch_seq){.ctx = cs[s], .toks = &next[s], .n = 1, .logits = bl + (size_t)s * nv};
            }
            if (st_forward_batch(run, &m->source, seqs, batch, &err) != STRATA_OK) {
                fprintf(stderr, "batch: %s\n", err.msg);
                return 1;
            }
        }
        btg_ms = st_now_ms() - t0;
        for (int s = 0; s < batch; s++) {
            strata_ctx_free(cs[s]);
        }
        st_runner_free(run);
        st_pool_free(pool);
        free(cs);
        free(seqs);
        free(next);
        free(bl);
    }
    printf("{\"backend\":\"%s\",\"device\":\"%s\",\"vram_budget\":%llu,\"weight_type\":\"%s\",\"load_s\":%.2f,"
           "\"pp\":%d,\"pp_tps\":%.1f,\"tg\":%d,\"tg_tps\":%.2f,\"batch\":%d,\"batch_tg_tps\":%.2f}\n",
           info.backend, info.device, vram, info.weight_type, load_ms / 1e3, pp, pp * 1e3 / pp_ms, tg,
           tg * 1e3 / tg_ms, batch, btg_ms > 0 ? (double)batch * tg * 1e3 / btg_ms : 0.0);
    free(toks);
    free(logits);
    strata_model_free(m);
    return 0;
}
