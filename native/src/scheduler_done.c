/* Batching scheduler: completion -- sampling the next token, score and
 * embed results, finishing requests (see scheduler_int.h). */
#include "scheduler_int.h"

#include "prefix_cache.h"
#include "score.h"

#include <stdlib.h>
#include <string.h>

void st_sched_seq_free(st_sched *s, st_seq *q, bool keep_cache)
{
    if (q == NULL) {
        return;
    }
    for (int i = 0; i < s->nb; i++) {
        if (s->batch_seq[i] == q) {
            s->batch_seq[i] = NULL;
        }
    }
    st_sched_ctx_release(s, q->ctx, keep_cache);
    st_aligned_free(q->logits);
    st_aligned_free(q->embd);
    free(q);
}

void st_sched_active_remove(st_sched *s, st_req *r)
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
void st_sched_req_finish(st_sched *s, st_req *r, strata_err rc, const strata_error *e)
{
    if (r->done) {
        return;
    }
    bool ok = rc == STRATA_OK;
    for (int k = 0; k < r->n_seqs; k++) {
        st_sched_seq_free(s, r->seqs[k], ok);
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
    if (ok && r->d.kind == ST_REQ_GENERATE && r->res.text == NULL) {
        /* finished before any text was set up (cancelled in prefill) */
        r->res.text = strdup("");
        if (r->res.text == NULL) {
            rc = STRATA_ERR_NOMEM;
            ok = false;
            st_error(&r->res.err, rc, "out of memory");
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
        st_sched_active_remove(s, r);
    }
    r->done = true;
    s->stats.requests_done++;
    st_sched_req_free_parts(r);
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

void st_sched_flush_finished(st_sched *s)
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

void st_sched_req_fail(st_sched *s, st_req *r, strata_err code, const char *msg)
{
    strata_error e;
    st_error(&e, code, "%s", msg);
    st_sched_req_finish(s, r, code, &e);
}

/* Mirror of strata_generate's loop body: sample, stop checks, queue the token. */
void st_sched_generate_next(st_sched *s, st_req *r, st_seq *q)
{
    if (!q->decoding) {
        r->t1 = st_now_ms();
        r->res.prompt_ms = r->t1 - r->t0;
    }
    if (st_sched_cancelled(r)) {
        r->res.stop = STRATA_STOP_CANCELLED;
        st_sched_req_finish(s, r, STRATA_OK, NULL);
        return;
    }
    const strata_model *m = s->m;
    strata_token tok = strata_sampler_sample(r->smp, q->logits);
    strata_sampler_accept(r->smp, tok);
    if (strata_token_is_eog(m, tok)) {
        r->res.stop = STRATA_STOP_EOG;
        st_sched_req_finish(s, r, STRATA_OK, NULL);
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
            st_sched_req_fail(s, r, STRATA_ERR_NOMEM, "out of memory");
            return;
        }
        r->res.stop = stop;
        st_sched_req_finish(s, r, STRATA_OK, NULL);
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
    st_sched_req_finish(s, r, STRATA_OK, NULL);
}

/* The prompt is in: first-token log-probs of every option; options longer
 * than one token continue in child sequences that copy the prompt's KV. */
void st_sched_score_prompt_done(st_sched *s, st_req *r, st_seq *q)
{
    r->t1 = st_now_ms();
    r->res.prompt_ms = r->t1 - r->t0;
    const int nv = s->n_vocab;
    double lse = st_logsumexp(q->logits, nv);
    if (r->d.keep_logits) {
        r->res.logits = st_aligned_alloc(64, (size_t)nv * sizeof(float));
        if (r->res.logits == NULL) {
            st_sched_req_fail(s, r, STRATA_ERR_NOMEM, "out of memory");
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
        st_seq *c = st_sched_seq_new(r, r->options[i], n, i);
        if (c == NULL) {
            st_sched_req_fail(s, r, STRATA_ERR_NOMEM, "out of memory");
            return;
        }
        r->seqs[r->n_seqs++] = c;
        c->logits = st_aligned_alloc(64, (size_t)n * nv * sizeof(float));
        strata_err rc = c->logits != NULL ? st_sched_ctx_take(s, r->prompt, 0, false, &c->ctx, &(int){0}, &e)
                                          : st_error(&e, STRATA_ERR_NOMEM, "out of memory");
        if (rc == STRATA_OK) {
            rc = st_kv_copy_prefix(c->ctx, q->ctx, q->ctx->n_past, &e);
        }
        if (rc != STRATA_OK) {
            st_sched_req_finish(s, r, rc, &e);
            return;
        }
        s->stats.prefix_tokens += (uint64_t)q->ctx->n_past;
        r->children_left++;
    }
    /* the prompt's sequence is done: its context becomes reusable */
    for (int k = 0; k < r->n_seqs; k++) {
        if (r->seqs[k] == q) {
            st_sched_seq_free(s, q, true);
            r->seqs[k] = r->seqs[--r->n_seqs];
            break;
        }
    }
    if (r->children_left == 0) {
        score_finish(s, r);
    }
}

/* A child's chunk ran: add the log-probs of the option tokens it predicted. */
void st_sched_score_child_step(st_sched *s, st_req *r, st_seq *c, int from, int n)
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

void st_sched_embed_done(st_sched *s, st_req *r, st_seq *q)
{
    r->t1 = st_now_ms();
    r->res.prompt_ms = r->t1 - r->t0;
    r->res.embd = malloc((size_t)s->n_embd * sizeof(float));
    if (r->res.embd == NULL) {
        st_sched_req_fail(s, r, STRATA_ERR_NOMEM, "out of memory");
        return;
    }
    r->res.n_embd = s->n_embd;
    st_embed_pool_mean(q->embd, q->n_toks, s->n_embd, r->res.embd);
    st_sched_req_finish(s, r, STRATA_OK, NULL);
}
