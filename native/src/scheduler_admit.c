/* Batching scheduler: the waiting queue and admission (see scheduler_int.h). */
#include "scheduler_int.h"

#include "prefix_cache.h"

#include <stdlib.h>
#include <string.h>

st_seq *st_sched_seq_new(st_req *r, const strata_token *toks, int n, int option)
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
    st_seq *q = st_sched_seq_new(r, r->prompt, r->d.n_prompt, -1);
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
    strata_err rc = st_sched_ctx_take(s, r->prompt, r->d.n_prompt, r->d.kind != ST_REQ_EMBED, &q->ctx, &reused, err);
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
 * for, so there are no cycles, and those get the step budget first.
 * Waiting costs the sequence a step (with streamed weights, a pass over
 * them), so it waits only when that saves at least half of the prompt it
 * has left to compute: a shared system prompt, yes; a few tokens that two
 * prompts happen to share after it ("User #10..."), no. */
bool st_sched_seq_blocked(const st_sched *s, int a_idx, const st_seq *q)
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
            const int gain = c - q->fed, left = q->n_toks - q->fed;
            if (gain >= s->p.prefix_min && 2 * gain >= left && src->fed < c) { /* gain <= c */
                return true;
            }
        }
    }
    return false;
}

/* Copy the longest computed prefix of q's prompt that any other context
 * holds (idle or running) when it is longer than what q has. */
void st_sched_seq_catch_up(st_sched *s, st_seq *q)
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

bool st_sched_cancelled(const st_req *r)
{
    return r->d.cancel != NULL && *r->d.cancel != 0;
}

static bool expired(const st_req *r, double now)
{
    return r->d.deadline_ms > 0 && now > r->d.deadline_ms;
}

/* Cancel/timeout checks, then admission of waiting requests. */
void st_sched_admit_waiting(st_sched *s)
{
    double now = st_now_ms();
    /* waiting requests that were cancelled or timed out leave the queue */
    st_req **link = &s->wait_head;
    st_req *prev = NULL;
    while (*link != NULL) {
        st_req *r = *link;
        if (st_sched_cancelled(r) || expired(r, now)) {
            *link = r->next;
            if (s->wait_tail == r) {
                s->wait_tail = prev;
            }
            s->n_waiting--;
            r->next = NULL;
            if (st_sched_cancelled(r)) {
                if (r->d.kind == ST_REQ_GENERATE) {
                    r->res.stop = STRATA_STOP_CANCELLED;
                    r->res.text = strdup("");
                    st_sched_req_finish(s, r, r->res.text != NULL ? STRATA_OK : STRATA_ERR_NOMEM, NULL);
                } else {
                    st_sched_req_fail(s, r, STRATA_ERR_CANCELLED, "cancelled");
                }
            } else {
                st_sched_req_fail(s, r, STRATA_ERR_LIMIT, "request timed out while queued");
            }
            continue;
        }
        prev = r;
        link = &r->next;
    }
    for (int i = 0; i < s->n_active;) {
        st_req *r = s->active[i];
        if (st_sched_cancelled(r)) {
            if (r->d.kind == ST_REQ_GENERATE) {
                r->res.stop = STRATA_STOP_CANCELLED;
                st_sched_req_finish(s, r, STRATA_OK, NULL);
            } else {
                st_sched_req_fail(s, r, STRATA_ERR_CANCELLED, "cancelled");
            }
            continue; /* r left the active list */
        }
        if (expired(r, now)) {
            st_sched_req_fail(s, r, STRATA_ERR_LIMIT, "request timed out");
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
            st_sched_req_finish(s, r, rc, &e);
        }
    }
}
