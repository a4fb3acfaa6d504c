/* stream_bench: streamed generation against the disk-read bound, measured
 * in pairs a second apart, so a disk whose speed drifts (a shared VM's)
 * cannot skew the ratio.
 *
 *   stream_bench MODEL|STORE [--budget BYTES] [--pairs N] [--threads N]
 *                [--pp N] [--prefetch N] [--direct-io] [--in-place]
 *                [--compression none|8bit|4bit]
 *
 * Each pair is a read-only pass (every streamed part acquired and released
 * through the streamer, no compute: the time the disk needs for a token's
 * bytes, by the streamer's own reads) and one real decode token right
 * after. % of bound = read-only ms / token ms. Prints one JSON line with
 * the medians and ranges.
 *
 * On a VM a read-only pass can take longer than a real token (>100%): with
 * every thread asleep between reads the virtual CPUs halt and each I/O
 * completion first has to wake one; during a real token they are busy. */
#include "model.h"
#include "streamer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Acquire and release every part a decode step uses, in step order. */
static strata_err read_only_pass(strata_model *m, strata_error *err)
{
    for (int p = 0; p <= m->hp.n_layers; p++) {
        st_part_view v;
        strata_err rc = m->source.acquire(m->source.user, p, &v, err);
        if (rc != STRATA_OK) {
            return rc;
        }
        m->source.release(m->source.user, p);
    }
    return STRATA_OK;
}

static int usage(void)
{
    fprintf(stderr, "usage: stream_bench MODEL|STORE [--budget BYTES] [--pairs N] [--threads N] [--pp N]\n"
                    "                    [--prefetch N] [--direct-io] [--in-place] [--compression none|8bit|4bit]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        return usage();
    }
    strata_model_params mp;
    strata_model_params_default(&mp);
    strata_stream_params sp;
    strata_stream_params_default(&sp);
    int pairs = 8, pp = 16;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const bool has = i + 1 < argc;
        if (strcmp(a, "--budget") == 0 && has) {
            sp.memory_budget = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(a, "--pairs") == 0 && has) {
            pairs = atoi(argv[++i]);
        } else if (strcmp(a, "--threads") == 0 && has) {
            mp.n_threads = atoi(argv[++i]);
        } else if (strcmp(a, "--pp") == 0 && has) {
            pp = atoi(argv[++i]);
        } else if (strcmp(a, "--prefetch") == 0 && has) {
            sp.prefetch = atoi(argv[++i]);
        } else if (strcmp(a, "--compression") == 0 && has) {
            sp.compression = argv[++i];
        } else if (strcmp(a, "--direct-io") == 0) {
            sp.direct_io = true;
        } else if (strcmp(a, "--in-place") == 0) {
            sp.in_place = true;
        } else {
            return usage();
        }
    }
    if (pairs < 1 || pairs > 10000 || pp < 1 || pp > 4096) {
        return usage();
    }
    strata_error err = {0};
    strata_model *m = NULL;
    if (strata_model_load_streamed(argv[1], &mp, &sp, &m, &err) != STRATA_OK) {
        fprintf(stderr, "stream_bench: %s\n", err.msg);
        return 1;
    }
    st_streamer *s = st_streamer_of(&m->source);
    strata_ctx_params cp;
    strata_ctx_params_default(&cp);
    cp.n_ctx = pp + pairs + 8;
    strata_ctx *ctx = NULL;
    float *logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab);
    strata_token *toks = malloc(sizeof(strata_token) * (size_t)pp);
    double *ro = malloc(sizeof(double) * (size_t)pairs), *tok = malloc(sizeof(double) * (size_t)pairs);
    double *pct = malloc(sizeof(double) * (size_t)pairs);
    int rc = 1;
    if (s == NULL || logits == NULL || toks == NULL || ro == NULL || tok == NULL || pct == NULL ||
        strata_ctx_new(m, &cp, &ctx, &err) != STRATA_OK) {
        fprintf(stderr, "stream_bench: %s\n", s == NULL ? "the model is not streamed" : err.msg[0] ? err.msg : "out of memory");
        goto done;
    }
    srand(42);
    for (int i = 0; i < pp; i++) {
        toks[i] = 1 + rand() % (m->hp.n_vocab - 1);
    }
    /* the prompt, then one token: the first load of every part (checksums) is behind us */
    strata_token t = 1;
    if (strata_eval(ctx, toks, (size_t)pp, logits, &err) != STRATA_OK ||
        strata_eval(ctx, &t, 1, logits, &err) != STRATA_OK) {
        fprintf(stderr, "stream_bench: %s\n", err.msg);
        goto done;
    }
    st_streamer_reset_stats(s);
    double sum_tok = 0.0;
    for (int k = 0; k < pairs; k++) {
        double t0 = st_now_ms();
        if (read_only_pass(m, &err) != STRATA_OK) {
            fprintf(stderr, "stream_bench: %s\n", err.msg);
            goto done;
        }
        double t1 = st_now_ms();
        t = 1 + (t * 31 + 7) % (m->hp.n_vocab - 1);
        if (strata_eval(ctx, &t, 1, logits, &err) != STRATA_OK) {
            fprintf(stderr, "stream_bench: %s\n", err.msg);
            goto done;
        }
        double t2 = st_now_ms();
        ro[k] = t1 - t0;
        tok[k] = t2 - t1;
        pct[k] = 100.0 * ro[k] / tok[k];
        sum_tok += tok[k];
    }
    uint64_t bytes = 0;
    for (int i = 0; i < st_streamer_n_parts(s); i++) {
        st_part_stats ps;
        st_streamer_stats(s, i, &ps);
        bytes += ps.bytes_read;
    }
    double lo = pct[0], hi = pct[0];
    for (int k = 1; k < pairs; k++) {
        lo = pct[k] < lo ? pct[k] : lo;
        hi = pct[k] > hi ? pct[k] : hi;
    }
    const double tg_tps = pairs / (sum_tok / 1e3);
    const double mib_per_pass = bytes / 1048576.0 / (2.0 * pairs);
    printf("{\"pairs\":%d,\"tg_tps\":%.3f,\"token_ms\":%.1f,\"read_only_ms\":%.1f,\"pct_of_bound\":%.1f,"
           "\"pct_min\":%.1f,\"pct_max\":%.1f,\"mib_per_pass\":%.3f,\"direct_io\":%s}\n",
           pairs, tg_tps, median(tok, pairs), median(ro, pairs), median(pct, pairs), lo, hi, mib_per_pass,
           sp.direct_io ? "true" : "false");
    rc = 0;
done:
    free(pct);
    free(tok);
    free(ro);
    free(toks);
    free(logits);
    strata_ctx_free(ctx);
    strata_model_free(m);
    return rc;
}
