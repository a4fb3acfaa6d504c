/* Continuous layer-wise batching scheduler: lifecycle, submission, results
 * (see scheduler.h; the parts are listed in scheduler_int.h). */
#include "scheduler_int.h"

#include "prefix_cache.h"

#include <stdlib.h>
#include <string.h>

void st_sched_params_default(st_sched_params *p)
{
    memset(p, 0, sizeof(*p));
}

void st_sched_req_free_parts(st_req *r)
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
    st_sched_req_free_parts(r);
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

int st_sched_pending(const st_sched *s)
{
    return s->n_active + s->n_waiting;
}

void st_sched_get_stats(const st_sched *s, st_sched_stats *out)
{
    *out = s->stats;
}

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
        st_sched_req_fail(s, s->active[0], STRATA_ERR_CANCELLED, "the scheduler was shut down");
    }
    while (s->wait_head != NULL) {
        st_req *r = s->wait_head;
        s->wait_head = r->next;
        s->n_waiting--;
        st_sched_req_fail(s, r, STRATA_ERR_CANCELLED, "the scheduler was shut down");
    }
    s->wait_tail = NULL;
    st_sched_flush_finished(s);
    st_sched_idle_trim(s, 0);
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
