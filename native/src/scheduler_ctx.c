/* Batching scheduler: the context pool, idle contexts kept with their KV
 * caches for prefix reuse (see scheduler_int.h). */
#include "scheduler_int.h"

#include "prefix_cache.h"

#include <stdlib.h>
#include <string.h>

static strata_err ctx_new(st_sched *s, strata_ctx **out, strata_error *err)
{
    strata_err rc = st_ctx_new_kv(s->m, s->p.n_ctx, s->p.kv_f32, out, err);
    if (rc == STRATA_OK) {
        s->stats.contexts++;
    }
    return rc;
}

static void ctx_free(st_sched *s, strata_ctx *ctx)
{
    if (ctx != NULL) {
        strata_ctx_free(ctx);
        s->stats.contexts--;
    }
}

static void idle_remove(st_sched *s, int i)
{
    s->idle[i] = s->idle[--s->n_idle];
}

/* Keep at most prefix_slots idle contexts: drop the least recently used. */
void st_sched_idle_trim(st_sched *s, int keep)
{
    while (s->n_idle > keep) {
        int lru = 0;
        for (int i = 1; i < s->n_idle; i++) {
            if (s->idle[i].last_used < s->idle[lru].last_used) {
                lru = i;
            }
        }
        ctx_free(s, s->idle[lru].ctx);
        idle_remove(s, lru);
    }
}

void st_sched_ctx_release(st_sched *s, strata_ctx *ctx, bool keep_cache)
{
    if (ctx == NULL) {
        return;
    }
    if (!keep_cache) {
        strata_ctx_truncate(ctx, 0);
    }
    int slots = s->p.prefix_slots;
    if (slots <= 0 || s->n_idle >= s->cap_idle) {
        ctx_free(s, ctx);
        return;
    }
    s->idle[s->n_idle].ctx = ctx;
    s->idle[s->n_idle].last_used = ++s->clock;
    s->n_idle++;
    st_sched_idle_trim(s, slots);
}

/* A context for tokens toks[0..n): an idle one holding the longest prefix,
 * or a copy of a running sequence's prefix, or an empty one. *reused gets
 * the positions already in the cache (at most n - 1: the last token is always
 * run, for its logits). reuse false: the context comes back empty. */
strata_err st_sched_ctx_take(st_sched *s, const strata_token *toks, int n, bool reuse, strata_ctx **out, int *reused,
                           strata_error *err)
{
    *out = NULL;
    *reused = 0;
    int want = n - 1;
    int best_idle = -1, best_idle_len = 0;
    const strata_ctx *best_run = NULL;
    int best_run_len = 0;
    if (reuse && want > 0) {
        for (int i = 0; i < s->n_idle; i++) {
            int c = st_prefix_common(s->idle[i].ctx, toks, want);
            if (c > best_idle_len) {
                best_idle = i;
                best_idle_len = c;
            }
        }
        for (int a = 0; a < s->n_active; a++) {
            const st_req *r = s->active[a];
            for (int k = 0; k < r->n_seqs; k++) {
                if (r->seqs[k] != NULL && r->seqs[k]->ctx != NULL) {
                    int c = st_prefix_common(r->seqs[k]->ctx, toks, want);
                    if (c > best_run_len) {
                        best_run = r->seqs[k]->ctx;
                        best_run_len = c;
                    }
                }
            }
        }
    }
    const int min = s->p.prefix_min;
    if (best_idle >= 0 && best_idle_len >= min && best_idle_len >= best_run_len) {
        *out = s->idle[best_idle].ctx;
        idle_remove(s, best_idle);
        strata_ctx_truncate(*out, best_idle_len);
        *reused = best_idle_len;
        return STRATA_OK;
    }
    strata_ctx *ctx = NULL;
    if (s->n_idle > 0) {
        /* the least recently used idle context: its cache is the least likely to serve again */
        int lru = 0;
        for (int i = 1; i < s->n_idle; i++) {
            if (s->idle[i].last_used < s->idle[lru].last_used) {
                lru = i;
            }
        }
        ctx = s->idle[lru].ctx;
        idle_remove(s, lru);
    } else {
        strata_err rc = ctx_new(s, &ctx, err);
        if (rc != STRATA_OK) {
            return rc;
        }
    }
    strata_ctx_truncate(ctx, 0);
    if (best_run != NULL && best_run_len >= min) {
        strata_err rc = st_kv_copy_prefix(ctx, best_run, best_run_len, err);
        if (rc != STRATA_OK) {
            st_sched_ctx_release(s, ctx, false);
            return rc;
        }
        *reused = best_run_len;
    }
    *out = ctx;
    return STRATA_OK;
}
