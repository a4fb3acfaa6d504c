/* strata-bench: prompt-processing and generation speed of the engine alone,
 * in the style of llama-bench (random tokens, no sampling).
 *   strata_bench MODEL [--pp N] [--tg N] [--threads N] [--reps N]
 * Prints one JSON line: {"pp_tps":..., "tg_tps":..., "peak_rss_mb":...}. */
#include "strata.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static long peak_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return kb;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: strata_bench MODEL [--pp N] [--tg N] [--threads N] [--reps N]\n");
        return 2;
    }
    int pp = 512, tg = 64, threads = 0, reps = 1;
    for (int i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (strcmp(argv[i], "--pp") == 0) {
            pp = v;
        } else if (strcmp(argv[i], "--tg") == 0) {
            tg = v;
        } else if (strcmp(argv[i], "--threads") == 0) {
            threads = v;
        } else if (strcmp(argv[i], "--reps") == 0) {
            reps = v;
        }
    }
    strata_error err = {0};
    strata_model_params mp;
    strata_model_params_default(&mp);
    mp.n_threads = threads;
    strata_model *m = NULL;
    if (strata_model_load(argv[1], &mp, &m, &err) != STRATA_OK) {
        fprintf(stderr, "strata_bench: %s\n", err.msg);
        return 1;
    }
    strata_model_info info;
    strata_model_get_info(m, &info);
    strata_ctx_params cp;
    strata_ctx_params_default(&cp);
    cp.n_ctx = pp + tg + 8;
    strata_ctx *ctx = NULL;
    if (strata_ctx_new(m, &cp, &ctx, &err) != STRATA_OK) {
        fprintf(stderr, "strata_bench: %s\n", err.msg);
        return 1;
    }
    strata_token *toks = malloc(sizeof(strata_token) * (size_t)(pp > 0 ? pp : 1));
    srand(42);
    for (int i = 0; i < pp; i++) {
        toks[i] = 1 + rand() % (info.n_vocab - 1);
    }
    float *logits = malloc(sizeof(float) * (size_t)info.n_vocab);
    double pp_best = 0, tg_best = 0;
    for (int r = 0; r < reps; r++) {
        strata_ctx_truncate(ctx, 0);
        if (pp > 0) {
            double t0 = now_ms();
            if (strata_eval(ctx, toks, (size_t)pp, logits, &err) != STRATA_OK) {
                fprintf(stderr, "strata_bench: %s\n", err.msg);
                return 1;
            }
            double tps = pp / ((now_ms() - t0) / 1e3);
            pp_best = tps > pp_best ? tps : pp_best;
        }
        strata_ctx_truncate(ctx, 0);
        strata_token t = 1;
        double t0 = now_ms();
        for (int i = 0; i < tg; i++) {
            if (strata_eval(ctx, &t, 1, logits, &err) != STRATA_OK) {
                fprintf(stderr, "strata_bench: %s\n", err.msg);
                return 1;
            }
            t = 1 + (t * 31 + 7) % (info.n_vocab - 1);
        }
        double tps = tg > 0 ? tg / ((now_ms() - t0) / 1e3) : 0;
        tg_best = tps > tg_best ? tps : tg_best;
    }
    printf("{\"model\":\"%s\",\"type\":\"%s\",\"threads\":%d,\"pp\":%d,\"tg\":%d,\"pp_tps\":%.2f,\"tg_tps\":%.2f,"
           "\"peak_rss_mb\":%.1f}\n",
           argv[1], info.weight_type, threads, pp, tg, pp_best, tg_best, peak_rss_kb() / 1024.0);
    free(toks);
    free(logits);
    strata_ctx_free(ctx);
    strata_model_free(m);
    return 0;
}
