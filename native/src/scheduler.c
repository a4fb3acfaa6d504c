/* Continuous layer-wise batching scheduler (see scheduler.h). */
#include "scheduler.h"

#include "prefix_cache.h"
#include "sampler.h"
#include "score.h"
#include "textout.h"

#include <stdlib.h>
#include <string.h>

/* One sequence: a KV cache and the tokens it still has to feed. */
typedef struct st_seq {
    st_req *req;
    strata_ctx *ctx;
    const strata_token *toks; /* (n_toks) prompt, or an option's tokens but the last */
    int n_toks;
    int fed;                  /* tokens of toks in the cache (reused ones included) */
    bool decoding;            /* generate: feeding sampled tokens */
    strata_token next;        /* the token to feed when decoding */
    float *logits;            /* (n_vocab), or (n_toks, n_vocab) for an option child */
    float *embd;              /* embed: (n_toks, n_embd) */
    int option;               /* score child: option index; -1 otherwise */
    int step_n;               /* tokens in the current step (0: not in it) */
    bool waiting;             /* may wait for an earlier sequence to compute a shared prefix */
} st_seq;

struct st_req {
    st_sched *s;
    st_req_desc d;            /* pointers below replace the caller's */
    strata_token *prompt;     /* (n_prompt) */
    char **stops;             /* (n_stop) */
    strata_token **options;   /* (n_options) */
    int *option_len;          /* (n_options) */
    st_req_result res;
    bool done;
    bool admitted;
    /* generate */
    strata_sampler *smp;
    st_textout out;
    bool out_ready;
    bool stop_requested;
    double t0, t1;
    /* sequences running for this request */
    st_seq **seqs;            /* (n_options + 1) */
    int n_seqs;
    int children_left;
    st_req *next;             /* waiting queue link */
};

typedef struct {
    strata_ctx *ctx;
    uint64_t last_used;
} idle_ctx;

struct st_sched {
    strata_model *m;
    st_sched_params p;
    int n_vocab;
    int n_embd;
    st_pool *pool;
    st_runner *runner;
    st_req *wait_head, *wait_tail;
    int n_waiting;
    st_req **active;          /* (max_batch) admitted requests, in admission order */
    int n_active;
    idle_ctx *idle;           /* (n_idle) finished contexts kept for prefix reuse */
    int n_idle, cap_idle;
    uint64_t clock;
    st_batch_seq *batch;      /* (cap_batch) this step's entries */
    st_seq **batch_seq;       /* (cap_batch) NULL once a sequence is freed */
    int cap_batch;
    int nb;                   /* entries in this step */
    st_req *fin_head, *fin_tail; /* finished, done callback still to run */
    st_sched_stats stats;
};

void st_sched_params_default(st_sched_params *p)
{
    memset(p, 0, sizeof(*p));
}

/* ------------------------------------------------------------ contexts -- */

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
static void idle_trim(st_sched *s, int keep)
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

static void ctx_release(st_sched *s, strata_ctx *ctx, bool keep_cache)
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
    idle_trim(s, slots);
}

/* A context for tokens toks[0..n): an idle one holding the longest prefix,
 * or a copy of a running sequence's prefix, or an empty one. *reused gets
 * the positions already in the cache (at most n - 1: the last token is always
 * run, for its logits). reuse false: the context comes back empty. */
static strata_err ctx_take(st_sched *s, const strata_token *toks, int n, bool reuse, strata_ctx **out, int *reused,
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
            ctx_release(s, ctx, false);
            return rc;
        }
        *reused = best_run_len;
    }
    *out = ctx;
    return STRATA_OK;
}

/* ------------------------------------------------------------ requests -- */

static void seq_free(st_sched *s, st_seq *q, bool keep_cache)
{
    if (q == NULL) {
        return;
    }
    for (int i = 0; i < s->nb; i++) {
        if (s->batch_seq[i] == q) {
            s->batch_seq[i] = NULL;
        }
    }
    ctx_release(s, q->ctx, keep_cache);
    st_aligned_free(q->logits);
    st_aligned_free(q->embd);
    free(q);
}

static void req_free_parts(st_req *r)
{
    free(r->prompt);
    if (r->stops != NULL) {
        for (size_t i = 0; i < r->d.n_stop; i++) {
            free(r->stops[i]);
        }
        free(r->stops);
    }
    if (r->options != NULL) {
        for (int i = 0; i < r->d.n_options; i++) {
            free(r->options[i]);
        }
        free(r->options);
    }
    free(r->option_len);
    free(r->seqs);
    r->prompt = NULL;
    r->stops = NULL;
    r->options = NULL;
    r->option_len = NULL;
    r->seqs = NULL;
}

void st_req_free(st_req *r)
{
    if (r == NULL) {
        return;
    }
    req_free_parts(r);
    if (r->smp != NULL) {
        strata_sampler_free(r->smp);
    }
    if (r->out_ready) {
        st_textout_free(&r->out);
    }
    free(r->res.text);
    free(r->res.logprob);
    free(r->res.prob);
    st_aligned_free(r->res.logits);
    free(r->res.embd);
    free(r);
}

bool st_req_done(const st_req *r)
{
    return r->done;
}

const st_req_result *st_req_get_result(const st_req *r)
{
    return &r->res;
}

static void active_remove(st_sched *s, st_req *r)
{
    for (int i = 0; i < s->n_active; i++) {
        if (s->active[i] == r) {
            memmove(&s->active[i], &s->active[i + 1], (size_t)(s->n_active - i - 1) * sizeof(st_req *));
            s->n_active--;
            return;
        }
    }
}

static bool emit_piece(const char *piece, size_t len, void *user)
{
    st_req *r = user;
    if (r->d.on_piece != NULL && len > 0 && !r->d.on_piece(r, piece, len, r->d.user)) {
        r->stop_requested = true;
        return false;
    }
    return true;
}

/* Finish a request: rc STRATA_OK keeps the result built so far. Its
 * contexts go back to the idle pool (their caches kept unless it failed). */
static void req_finish(st_sched *s, st_req *r, strata_err rc, const strata_error *e)
{
    if (r->done) {
        return;
    }
    bool ok = rc == STRATA_OK;
    for (int k = 0; k < r->n_seqs; k++) {
        seq_free(s, r->seqs[k], ok);
        r->seqs[k] = NULL;
    }
    r->n_seqs = 0;
    if (r->d.kind == ST_REQ_GENERATE && r->out_ready) {
        if (ok && r->res.stop != STRATA_STOP_STRING) {
            st_textout_finish(&r->out, emit_piece, r);
        }
        r->res.gen_ms = st_now_ms() - r->t1;
        if (ok) {
            r->res.text = st_textout_take(&r->out);
            if (r->res.text == NULL) {
                rc = STRATA_ERR_NOMEM;
                ok = false;
                st_error(&r->res.err, rc, "out of memory");
            }
        }
    }
    r->res.rc = rc;
    if (!ok && e != NULL && e != &r->res.err) {
        r->res.err = *e;
    }
    if (!ok && r->res.err.msg[0] == '\0') {
        st_error(&r->res.err, rc, "%s", strata_strerror(rc));
    }
    if (!ok) {
        free(r->res.text);
        r->res.text = NULL;
    }
    if (r->admitted) {
        active_remove(s, r);
    }
    r->done = true;
    s->stats.requests_done++;
    req_free_parts(r);
    /* the done callback runs at the end of the step, when nothing in the
     * step points at r any more */
    r->next = NULL;
    if (s->fin_tail != NULL) {
        s->fin_tail->next = r;
    } else {
        s->fin_head = r;
    }
    s->fin_tail = r;
}

static void flush_finished(st_sched *s)
{
    while (s->fin_head != NULL) {
        st_req *r = s->fin_head;
        s->fin_head = r->next;
        if (s->fin_head == NULL) {
            s->fin_tail = NULL;
        }
        r->next = NULL;
        if (r->d.on_done != NULL) {
            r->d.on_done(r, r->d.user); /* may free r */
        }
    }
}

static void req_fail(st_sched *s, st_req *r, strata_err code, const char *msg)
{
    strata_error e;
    st_error(&e, code, "%s", msg);
    req_finish(s, r, code, &e);
}

strata_err st_sched_submit(st_sched *s, const st_req_desc *d, st_req **out, strata_error *err)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (s == NULL || d == NULL || d->prompt == NULL || d->n_prompt <= 0) {
        return st_error(err, STRATA_ERR_ARG, "a request needs a non-empty prompt");
    }
    if (d->n_prompt > s->p.n_ctx) {
        return st_error(err, STRATA_ERR_LIMIT, "prompt too long: %d tokens exceed the context size of %d tokens",
                        d->n_prompt, s->p.n_ctx);
    }
    for (int i = 0; i < d->n_prompt; i++) {
        if (d->prompt[i] < 0 || d->prompt[i] >= s->n_vocab) {
            return st_error(err, STRATA_ERR_ARG, "prompt token %d (%d) is outside the vocabulary", i, d->prompt[i]);
        }
    }
    if (d->kind == ST_REQ_SCORE) {
        if (d->n_options <= 0 || d->options == NULL || d->option_len == NULL) {
            return st_error(err, STRATA_ERR_ARG, "a score request needs at least one option");
        }
        for (int i = 0; i < d->n_options; i++) {
            if (d->option_len[i] <= 0 || d->options[i] == NULL) {
                return st_error(err, STRATA_ERR_ARG, "score option %d is empty", i);
            }
            if (d->n_prompt + d->option_len[i] - 1 > s->p.n_ctx) {
                return st_error(err, STRATA_ERR_LIMIT, "prompt and option %d exceed the context size of %d tokens", i,
                                s->p.n_ctx);
            }
            for (int j = 0; j < d->option_len[i]; j++) {
                if (d->options[i][j] < 0 || d->options[i][j] >= s->n_vocab) {
                    return st_error(err, STRATA_ERR_ARG, "score option %d has a token outside the vocabulary", i);
                }
            }
        }
    } else if (d->kind != ST_REQ_GENERATE && d->kind != ST_REQ_EMBED) {
        return st_error(err, STRATA_ERR_ARG, "unknown request kind %d", (int)d->kind);
    }
    st_req *r = st_calloc(1, sizeof(*r));
    if (r == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    r->s = s;
    r->d = *d;
    r->d.stop = NULL;
    r->d.options = NULL;
    r->d.option_len = NULL;
    r->prompt = st_malloc_array((size_t)d->n_prompt, sizeof(strata_token));
    int n_seq_slots = d->kind == ST_REQ_SCORE ? d->n_options + 1 : 1;
    r->seqs = st_calloc((size_t)n_seq_slots, sizeof(st_seq *));
    bool ok = r->prompt != NULL && r->seqs != NULL;
    if (ok) {
        memcpy(r->prompt, d->prompt, (size_t)d->n_prompt * sizeof(strata_token));
        r->d.prompt = r->prompt;
    }
    if (ok && d->kind == ST_REQ_GENERATE && d->n_stop > 0) {
        r->stops = st_calloc(d->n_stop, sizeof(char *));
        ok = r->stops != NULL;
        for (size_t i = 0; ok && i < d->n_stop; i++) {
            r->stops[i] = d->stop[i] != NULL ? strdup(d->stop[i]) : NULL;
            ok = r->stops[i] != NULL;
        }
        r->d.stop = (const char *const *)r->stops;
    } else {
        r->d.n_stop = 0;
    }
    if (ok && d->kind == ST_REQ_SCORE) {
        r->options = st_calloc((size_t)d->n_options, sizeof(strata_token *));
        r->option_len = st_malloc_array((size_t)d->n_options, sizeof(int));
        ok = r->options != NULL && r->option_len != NULL;
        for (int i = 0; ok && i < d->n_options; i++) {
            r->options[i] = st_malloc_array((size_t)d->option_len[i], sizeof(strata_token));
            ok = r->options[i] != NULL;
            if (ok) {
                memcpy(r->options[i], d->options[i], (size_t)d->option_len[i] * sizeof(strata_token));
                r->option_len[i] = d->option_len[i];
            }
        }
        r->d.options = (const strata_token *const *)r->options;
        r->d.option_len = r->option_len;
        if (ok) {
            r->res.n_options = d->n_options;
            r->res.logprob = st_calloc((size_t)d->n_options, sizeof(double));
            r->res.prob = st_calloc((size_t)d->n_options, sizeof(double));
            ok = r->res.logprob != NULL && r->res.prob != NULL;
        }
    } else {
        r->d.n_options = 0;
    }
    if (!ok) {
        st_req_free(r);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    r->res.n_prompt_tokens = (size_t)d->n_prompt;
    if (s->wait_tail != NULL) {
        s->wait_tail->next = r;
    } else {
        s->wait_head = r;
    }
    s->wait_tail = r;
    s->n_waiting++;
    if (out != NULL) {
        *out = r;
    }
    return STRATA_OK;
}

/* ------------------------------------------------------------ admission -- */

static st_seq *seq_new(st_req *r, const strata_token *toks, int n, int option)
{
    st_seq *q = st_calloc(1, sizeof(*q));
    if (q != NULL) {
        q->req = r;
        q->toks = toks;
        q->n_toks = n;
        q->option = option;
    }
    return q;
}

static strata_err admit(st_sched *s, st_req *r, strata_error *err)
{
    r->t0 = st_now_ms();
    r->t1 = r->t0;
    if (r->d.kind == ST_REQ_GENERATE) {
        strata_err rc = strata_sampler_new(s->m, &r->d.sampling, &r->smp, err);
        if (rc != STRATA_OK) {
            return rc;
        }
        rc = st_textout_init(&r->out, r->d.stop, r->d.n_stop, err);
        if (rc != STRATA_OK) {
            return rc;
        }
        r->out_ready = true;
        for (int i = 0; i < r->d.n_prompt; i++) {
            st_sampler_accept_history(r->smp, r->prompt[i]);
        }
    }
    st_seq *q = seq_new(r, r->prompt, r->d.n_prompt, -1);
    if (q == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    r->seqs[r->n_seqs++] = q;
    size_t nl = (size_t)s->n_vocab;
    q->logits = st_aligned_alloc(64, nl * sizeof(float));
    if (q->logits == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    if (r->d.kind == ST_REQ_EMBED) {
        q->embd = st_aligned_alloc(64, (size_t)r->d.n_prompt * s->n_embd * sizeof(float));
        if (q->embd == NULL) {
            return st_error(err, STRATA_ERR_NOMEM, "out of memory for %d hidden states", r->d.n_prompt);
        }
    }
    int reused = 0;
    strata_err rc = ctx_take(s, r->prompt, r->d.n_prompt, r->d.kind != ST_REQ_EMBED, &q->ctx, &reused, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    q->fed = reused;
    q->waiting = r->d.kind != ST_REQ_EMBED;
    r->res.n_prefix_reused = (size_t)reused;
    s->stats.prefix_tokens += (uint64_t)reused;
    return STRATA_OK;
}

/* Requests that arrive together with a shared prompt prefix (a system
 * prompt, a question template) compute it once: a sequence waits while a
 * sequence admitted before it has still to compute part of their common
 * prefix, then copies it (seq_catch_up). Only earlier sequences are waited
 * for, so there are no cycles, and those get the step budget first. */
static bool seq_blocked(const st_sched *s, int a_idx, const st_seq *q)
{
    for (int a = 0; a < a_idx; a++) {
        const st_req *r = s->active[a];
        for (int k = 0; k < r->n_seqs; k++) {
            const st_seq *src = r->seqs[k];
            if (src->option >= 0 || src->decoding) {
                continue;
            }
            int lim = ST_MIN(q->n_toks - 1, src->n_toks);
            int c = 0;
            while (c < lim && src->toks[c] == q->toks[c]) {
                c++;
            }
            if (c >= s->p.prefix_min && c > q->fed && src->fed < c) {
                return true;
            }
        }
    }
    return false;
}

/* Copy the longest computed prefix of q's prompt that any other context
 * holds (idle or running) when it is longer than what q has. */
static void seq_catch_up(st_sched *s, st_seq *q)
{
    int want = q->n_toks - 1;
    const strata_ctx *best = NULL;
    int best_len = q->fed;
    for (int i = 0; i < s->n_idle; i++) {
        int c = st_prefix_common(s->idle[i].ctx, q->toks, want);
        if (c > best_len) {
            best = s->idle[i].ctx;
            best_len = c;
        }
    }
    for (int a = 0; a < s->n_active; a++) {
        const st_req *r = s->active[a];
        for (int k = 0; k < r->n_seqs; k++) {
            const strata_ctx *ctx = r->seqs[k]->ctx;
            if (ctx != NULL && ctx != q->ctx) {
                int c = st_prefix_common(ctx, q->toks, want);
                if (c > best_len) {
                    best = ctx;
                    best_len = c;
                }
            }
        }
    }
    if (best == NULL || best_len < s->p.prefix_min) {
        return;
    }
    strata_error e = {0};
    if (st_kv_copy_prefix(q->ctx, best, best_len, &e) != STRATA_OK) {
        strata_ctx_truncate(q->ctx, q->fed); /* keep what it had */
        return;
    }
    s->stats.prefix_tokens += (uint64_t)(best_len - q->fed);
    q->fed = best_len;
    q->req->res.n_prefix_reused = (size_t)best_len;
}

static bool cancelled(const st_req *r)
{
    return r->d.cancel != NULL && *r->d.cancel != 0;
}

static bool expired(const st_req *r, double now)
{
    return r->d.deadline_ms > 0 && now > r->d.deadline_ms;
}

/* Cancel/timeout checks, then admission of waiting requests. */
static void admit_waiting(st_sched *s)
{
    double now = st_now_ms();
    /* waiting requests that were cancelled or timed out leave the queue */
    st_req **link = &s->wait_head;
    st_req *prev = NULL;
    while (*link != NULL) {
        st_req *r = *link;
        if (cancelled(r) || expired(r, now)) {
            *link = r->next;
            if (s->wait_tail == r) {
                s->wait_tail = prev;
            }
            s->n_waiting--;
            r->next = NULL;
            if (cancelled(r)) {
                if (r->d.kind == ST_REQ_GENERATE) {
                    r->res.stop = STRATA_STOP_CANCELLED;
                    r->res.text = strdup("");
                    req_finish(s, r, r->res.text != NULL ? STRATA_OK : STRATA_ERR_NOMEM, NULL);
                } else {
                    req_fail(s, r, STRATA_ERR_CANCELLED, "cancelled");
                }
            } else {
                req_fail(s, r, STRATA_ERR_LIMIT, "request timed out while queued");
            }
            continue;
        }
        prev = r;
        link = &r->next;
    }
    for (int i = 0; i < s->n_active;) {
        st_req *r = s->active[i];
        if (cancelled(r)) {
            if (r->d.kind == ST_REQ_GENERATE) {
                r->res.stop = STRATA_STOP_CANCELLED;
                req_finish(s, r, STRATA_OK, NULL);
            } else {
                req_fail(s, r, STRATA_ERR_CANCELLED, "cancelled");
            }
            continue; /* r left the active list */
        }
        if (expired(r, now)) {
            req_fail(s, r, STRATA_ERR_LIMIT, "request timed out");
            continue;
        }
        i++;
    }
    while (s->wait_head != NULL && s->n_active < s->p.max_batch) {
        st_req *r = s->wait_head;
        s->wait_head = r->next;
        if (s->wait_head == NULL) {
            s->wait_tail = NULL;
        }
        s->n_waiting--;
        r->next = NULL;
        s->active[s->n_active++] = r;
        r->admitted = true;
        strata_error e = {0};
        strata_err rc = admit(s, r, &e);
        if (rc != STRATA_OK) {
            req_finish(s, r, rc, &e);
        }
    }
}

/* ----------------------------------------------------------- after step -- */

/* Mirror of strata_generate's loop body: sample, stop checks, queue the token. */
static void generate_next(st_sched *s, st_req *r, st_seq *q)
{
    if (!q->decoding) {
        r->t1 = st_now_ms();
        r->res.prompt_ms = r->t1 - r->t0;
    }
    if (cancelled(r)) {
        r->res.stop = STRATA_STOP_CANCELLED;
        req_finish(s, r, STRATA_OK, NULL);
        return;
    }
    const strata_model *m = s->m;
    strata_token tok = strata_sampler_sample(r->smp, q->logits);
    strata_sampler_accept(r->smp, tok);
    if (strata_token_is_eog(m, tok)) {
        r->res.stop = STRATA_STOP_EOG;
        req_finish(s, r, STRATA_OK, NULL);
        return;
    }
    r->res.n_gen_tokens++;
    size_t len;
    const char *bytes = st_token_bytes(m->tok, tok, &len);
    strata_stop_reason stop = STRATA_STOP_NONE;
    int max_tokens = r->d.max_tokens > 0 ? r->d.max_tokens : q->ctx->n_ctx;
    if (st_textout_push(&r->out, bytes, len, emit_piece, r)) {
        stop = STRATA_STOP_STRING;
    } else if (r->stop_requested) {
        stop = STRATA_STOP_CALLBACK;
    } else if (r->d.sampling.json && strata_sampler_done(r->smp)) {
        stop = STRATA_STOP_JSON;
    } else if ((int)r->res.n_gen_tokens >= max_tokens) {
        stop = STRATA_STOP_MAX_TOKENS;
    } else if (q->ctx->n_past >= q->ctx->n_ctx) {
        stop = STRATA_STOP_CONTEXT;
    }
    if (stop != STRATA_STOP_NONE) {
        if (stop == STRATA_STOP_STRING && r->out.oom) {
            req_fail(s, r, STRATA_ERR_NOMEM, "out of memory");
            return;
        }
        r->res.stop = stop;
        req_finish(s, r, STRATA_OK, NULL);
        return;
    }
    q->decoding = true;
    q->next = tok;
}

/* Options i and j are both longer than one token and feed the same tokens
 * (all but their last) after the prompt. */
static bool same_feed(const st_req *r, int i, int j)
{
    int n = r->option_len[i];
    return n > 1 && r->option_len[j] == n && memcmp(r->options[i], r->options[j], (size_t)(n - 1) * sizeof(strata_token)) == 0;
}

static void score_finish(st_sched *s, st_req *r)
{
    st_options_normalize(r->res.logprob, r->res.n_options, r->res.prob);
    r->res.gen_ms = st_now_ms() - r->t1;
    req_finish(s, r, STRATA_OK, NULL);
}

/* The prompt is in: first-token log-probs of every option; options longer
 * than one token continue in child sequences that copy the prompt's KV. */
static void score_prompt_done(st_sched *s, st_req *r, st_seq *q)
{
    r->t1 = st_now_ms();
    r->res.prompt_ms = r->t1 - r->t0;
    const int nv = s->n_vocab;
    double lse = st_logsumexp(q->logits, nv);
    if (r->d.keep_logits) {
        r->res.logits = st_aligned_alloc(64, (size_t)nv * sizeof(float));
        if (r->res.logits == NULL) {
            req_fail(s, r, STRATA_ERR_NOMEM, "out of memory");
            return;
        }
        memcpy(r->res.logits, q->logits, (size_t)nv * sizeof(float));
    }
    strata_error e = {0};
    for (int i = 0; i < r->d.n_options; i++) {
        r->res.logprob[i] = st_log_prob(q->logits, nv, r->options[i][0], lse);
        if (r->option_len[i] == 1) {
            continue;
        }
        /* options that feed the same tokens (" 1" and " 2" as "_" + digit)
         * share one child */
        bool shared = false;
        for (int j = 0; j < i && !shared; j++) {
            shared = same_feed(r, i, j);
        }
        if (shared) {
            continue;
        }
        /* the child feeds option tokens 0..len-2 and reads the logits after each */
        int n = r->option_len[i] - 1;
        st_seq *c = seq_new(r, r->options[i], n, i);
        if (c == NULL) {
            req_fail(s, r, STRATA_ERR_NOMEM, "out of memory");
            return;
        }
        r->seqs[r->n_seqs++] = c;
        c->logits = st_aligned_alloc(64, (size_t)n * nv * sizeof(float));
        strata_err rc = c->logits != NULL ? ctx_take(s, r->prompt, 0, false, &c->ctx, &(int){0}, &e)
                                          : st_error(&e, STRATA_ERR_NOMEM, "out of memory");
        if (rc == STRATA_OK) {
            rc = st_kv_copy_prefix(c->ctx, q->ctx, q->ctx->n_past, &e);
        }
        if (rc != STRATA_OK) {
            req_finish(s, r, rc, &e);
            return;
        }
        s->stats.prefix_tokens += (uint64_t)q->ctx->n_past;
        r->children_left++;
    }
    /* the prompt's sequence is done: its context becomes reusable */
    for (int k = 0; k < r->n_seqs; k++) {
        if (r->seqs[k] == q) {
            seq_free(s, q, true);
            r->seqs[k] = r->seqs[--r->n_seqs];
            break;
        }
    }
    if (r->children_left == 0) {
        score_finish(s, r);
    }
}

/* A child's chunk ran: add the log-probs of the option tokens it predicted. */
static void score_child_step(st_sched *s, st_req *r, st_seq *c, int from, int n)
{
    const int nv = s->n_vocab;
    for (int t = from; t < from + n; t++) {
        const float *lg = c->logits + (size_t)t * nv;
        double lse = st_logsumexp(lg, nv);
        for (int i = 0; i < r->d.n_options; i++) {
            if (i == c->option || same_feed(r, i, c->option)) {
                r->res.logprob[i] += st_log_prob(lg, nv, r->options[i][t + 1], lse);
            }
        }
    }
    if (c->fed == c->n_toks) {
        r->children_left--;
        if (r->children_left == 0) {
            score_finish(s, r);
        }
    }
}

static void embed_done(st_sched *s, st_req *r, st_seq *q)
{
    r->t1 = st_now_ms();
    r->res.prompt_ms = r->t1 - r->t0;
    r->res.embd = malloc((size_t)s->n_embd * sizeof(float));
    if (r->res.embd == NULL) {
        req_fail(s, r, STRATA_ERR_NOMEM, "out of memory");
        return;
    }
    r->res.n_embd = s->n_embd;
    st_embed_pool_mean(q->embd, q->n_toks, s->n_embd, r->res.embd);
    req_finish(s, r, STRATA_OK, NULL);
}

/* ----------------------------------------------------------------- step -- */

static bool batch_reserve(st_sched *s, int n)
{
    if (n <= s->cap_batch) {
        return true;
    }
    int cap = ST_MAX(n, 2 * s->cap_batch);
    st_batch_seq *b = realloc(s->batch, (size_t)cap * sizeof(*b));
    if (b == NULL) {
        return false;
    }
    s->batch = b;
    st_seq **q = realloc(s->batch_seq, (size_t)cap * sizeof(*q));
    if (q == NULL) {
        return false;
    }
    s->batch_seq = q;
    s->cap_batch = cap;
    return true;
}

static void add_to_batch(st_sched *s, int *nb, st_seq *q, int n)
{
    st_batch_seq *b = &s->batch[*nb];
    memset(b, 0, sizeof(*b));
    b->ctx = q->ctx;
    q->step_n = n;
    if (q->decoding) {
        b->toks = &q->next;
        b->n = 1;
        b->logits = q->logits;
    } else {
        b->toks = q->toks + q->fed;
        b->n = n;
        if (q->option >= 0) {
            b->all_logits = true;
            b->logits = q->logits + (size_t)q->fed * s->n_vocab;
        } else if (q->fed + n == q->n_toks) {
            b->logits = q->logits;
        }
        if (q->embd != NULL) {
            b->embd = q->embd + (size_t)q->fed * s->n_embd;
        }
    }
    s->batch_seq[*nb] = q;
    (*nb)++;
}

strata_err st_sched_step(st_sched *s, int *n_pending, strata_error *err)
{
    admit_waiting(s);
    int n_seqs = 0;
    for (int a = 0; a < s->n_active; a++) {
        n_seqs += s->active[a]->n_seqs;
    }
    if (!batch_reserve(s, n_seqs)) {
        flush_finished(s);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    int budget = ST_MIN(s->p.step_tokens, st_runner_max_tokens(s->runner));
    int nb = 0;
    /* decoding sequences first (one token each: latency), then prompt chunks */
    for (int pass = 0; pass < 2; pass++) {
        for (int a = 0; a < s->n_active && budget > 0; a++) {
            st_req *r = s->active[a];
            for (int k = 0; k < r->n_seqs && budget > 0; k++) {
                st_seq *q = r->seqs[k];
                if (q->decoding != (pass == 0)) {
                    continue;
                }
                if (q->waiting) {
                    if (seq_blocked(s, a, q)) {
                        continue;
                    }
                    q->waiting = false;
                    seq_catch_up(s, q);
                }
                int n = q->decoding ? 1 : ST_MIN(budget, q->n_toks - q->fed);
                if (n > 0) {
                    add_to_batch(s, &nb, q, n);
                    budget -= n;
                }
            }
        }
    }
    s->nb = nb;
    if (nb > 0) {
        strata_error e = {0};
        strata_err rc = st_forward_batch(s->runner, &s->m->source, s->batch, nb, &e);
        if (rc != STRATA_OK) {
            /* every request in the step fails; the scheduler keeps serving */
            for (int i = 0; i < nb; i++) {
                st_seq *q = s->batch_seq[i];
                if (q != NULL) {
                    req_finish(s, q->req, rc, &e); /* nulls the entries of its sequences */
                }
            }
        } else {
            int tokens = 0;
            for (int i = 0; i < nb; i++) {
                tokens += s->batch[i].n;
            }
            s->stats.steps++;
            s->stats.tokens += (uint64_t)tokens;
            s->stats.seq_steps += (uint64_t)nb;
            s->stats.max_seqs_in_step = ST_MAX(s->stats.max_seqs_in_step, nb);
            /* a request may finish while we walk the step: seq_free clears
             * the entries of the sequences it frees */
            for (int i = 0; i < nb; i++) {
                st_seq *q = s->batch_seq[i];
                if (q == NULL) {
                    continue;
                }
                st_req *r = q->req;
                int from = q->fed;
                int n = q->step_n;
                q->step_n = 0;
                if (q->decoding) {
                    generate_next(s, r, q);
                } else {
                    q->fed += n;
                    if (q->option >= 0) {
                        score_child_step(s, r, q, from, n);
                    } else if (q->fed == q->n_toks) {
                        if (r->d.kind == ST_REQ_GENERATE) {
                            generate_next(s, r, q);
                        } else if (r->d.kind == ST_REQ_SCORE) {
                            score_prompt_done(s, r, q);
                        } else {
                            embed_done(s, r, q);
                        }
                    }
                }
            }
        }
    }
    s->nb = 0;
    flush_finished(s);
    if (n_pending != NULL) {
        *n_pending = st_sched_pending(s);
    }
    return STRATA_OK;
}

int st_sched_pending(const st_sched *s)
{
    return s->n_active + s->n_waiting;
}

void st_sched_get_stats(const st_sched *s, st_sched_stats *out)
{
    *out = s->stats;
}

/* ------------------------------------------------------------ lifecycle -- */

strata_err st_sched_new(strata_model *m, const st_sched_params *p, st_sched **out, strata_error *err)
{
    if (m == NULL || out == NULL) {
        return st_error(err, STRATA_ERR_ARG, "model and output must not be NULL");
    }
    *out = NULL;
    st_sched *s = st_calloc(1, sizeof(*s));
    if (s == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    s->m = m;
    if (p != NULL) {
        s->p = *p;
    }
    if (s->p.max_batch <= 0) {
        s->p.max_batch = 16;
    }
    if (s->p.step_tokens <= 0) {
        s->p.step_tokens = 256;
    }
    if (s->p.n_ctx <= 0) {
        s->p.n_ctx = ST_MIN(m->hp.n_ctx_train, 2048);
    }
    if (s->p.prefix_min <= 0) {
        s->p.prefix_min = 4;
    }
    if (s->p.prefix_slots == 0) {
        s->p.prefix_slots = ST_MIN(s->p.max_batch, 8);
    }
    s->n_vocab = m->hp.n_vocab;
    s->n_embd = m->hp.n_embd;
    s->cap_idle = ST_MAX(s->p.prefix_slots, 0) + 1;
    s->idle = st_calloc((size_t)s->cap_idle, sizeof(idle_ctx));
    s->active = st_calloc((size_t)s->p.max_batch, sizeof(st_req *));
    if (s->idle == NULL || s->active == NULL) {
        st_sched_free(s);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    int n_threads = s->p.n_threads > 0 ? s->p.n_threads : m->n_threads;
    strata_err rc = st_pool_new(n_threads, &s->pool, err);
    if (rc == STRATA_OK) {
        rc = st_runner_new(m, s->p.step_tokens, s->p.n_ctx, s->pool, &s->runner, err);
    }
    if (rc != STRATA_OK) {
        st_sched_free(s);
        return rc;
    }
    *out = s;
    return STRATA_OK;
}

void st_sched_free(st_sched *s)
{
    if (s == NULL) {
        return;
    }
    while (s->n_active > 0) {
        req_fail(s, s->active[0], STRATA_ERR_CANCELLED, "the scheduler was shut down");
    }
    while (s->wait_head != NULL) {
        st_req *r = s->wait_head;
        s->wait_head = r->next;
        s->n_waiting--;
        req_fail(s, r, STRATA_ERR_CANCELLED, "the scheduler was shut down");
    }
    s->wait_tail = NULL;
    flush_finished(s);
    idle_trim(s, 0);
    free(s->idle);
    free(s->active);
    free(s->batch);
    free(s->batch_seq);
    if (s->runner != NULL) {
        st_runner_free(s->runner);
    }
    st_pool_free(s->pool);
    free(s);
}
