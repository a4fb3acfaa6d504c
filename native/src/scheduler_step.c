/* Batching scheduler: building and running one batched step (see
 * scheduler_int.h). */
#include "scheduler_int.h"

#include "prefix_cache.h"

#include <stdlib.h>
#include <string.h>

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
    st_sched_admit_waiting(s);
    int n_seqs = 0;
    for (int a = 0; a < s->n_active; a++) {
        n_seqs += s->active[a]->n_seqs;
    }
    if (!batch_reserve(s, n_seqs)) {
        st_sched_flush_finished(s);
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
                    if (st_sched_seq_blocked(s, a, q)) {
                        continue;
                    }
                    q->waiting = false;
                    st_sched_seq_catch_up(s, q);
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
                    st_sched_req_finish(s, q->req, rc, &e); /* nulls the entries of its sequences */
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
                    st_sched_generate_next(s, r, q);
                } else {
                    q->fed += n;
                    if (q->option >= 0) {
                        st_sched_score_child_step(s, r, q, from, n);
                    } else if (q->fed == q->n_toks) {
                        if (r->d.kind == ST_REQ_GENERATE) {
                            st_sched_generate_next(s, r, q);
                        } else if (r->d.kind == ST_REQ_SCORE) {
                            st_sched_score_prompt_done(s, r, q);
                        } else {
                            st_sched_embed_done(s, r, q);
                        }
                    }
                }
            }
        }
    }
    s->nb = 0;
    st_sched_flush_finished(s);
    if (n_pending != NULL) {
        *n_pending = st_sched_pending(s);
    }
    return STRATA_OK;
}
