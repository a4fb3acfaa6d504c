/* Internals of the batching scheduler (see scheduler.h), shared by its parts:
 *   scheduler.c        lifecycle, submission, results, counters
 *   scheduler_ctx.c    the context pool: idle contexts kept for prefix reuse
 *   scheduler_admit.c  queue and admission: cancel/timeout checks, a context
 *                      per admitted request, shared prompt prefixes computed once
 *   scheduler_step.c   step building: one batched forward over every sequence
 *   scheduler_done.c   completion: sampling, score/embed results, finishing */
#ifndef ST_SCHEDULER_INT_H
#define ST_SCHEDULER_INT_H

#include "scheduler.h"

#include "sampler.h"
#include "textout.h"

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

/* scheduler.c */
/* Free a request's copies of its inputs and its sequence array. */
void st_sched_req_free_parts(st_req *r);

/* scheduler_ctx.c */
/* A context for toks[0..n): an idle one holding the longest prefix, or a
 * copy of a running sequence's prefix, or an empty one; *reused gets the
 * positions already in the cache (at most n - 1). reuse false: empty. */
strata_err st_sched_ctx_take(st_sched *s, const strata_token *toks, int n, bool reuse, strata_ctx **out, int *reused,
                             strata_error *err);
/* Back to the idle pool (its cache kept for reuse when keep_cache). */
void st_sched_ctx_release(st_sched *s, strata_ctx *ctx, bool keep_cache);
/* Keep at most keep idle contexts (least recently used go first). */
void st_sched_idle_trim(st_sched *s, int keep);

/* scheduler_admit.c */
st_seq *st_sched_seq_new(st_req *r, const strata_token *toks, int n, int option);
bool st_sched_cancelled(const st_req *r);
/* Cancel/timeout checks, then admission of waiting requests. */
void st_sched_admit_waiting(st_sched *s);
/* q waits while an earlier sequence computes part of their common prefix. */
bool st_sched_seq_blocked(const st_sched *s, int a_idx, const st_seq *q);
/* Copy the longest computed prefix of q's prompt any other context holds. */
void st_sched_seq_catch_up(st_sched *s, st_seq *q);

/* scheduler_done.c */
void st_sched_seq_free(st_sched *s, st_seq *q, bool keep_cache);
void st_sched_active_remove(st_sched *s, st_req *r);
/* Finish a request: rc STRATA_OK keeps the result built so far. */
void st_sched_req_finish(st_sched *s, st_req *r, strata_err rc, const strata_error *e);
void st_sched_req_fail(st_sched *s, st_req *r, strata_err code, const char *msg);
/* Run the done callbacks of the requests finished since the last flush. */
void st_sched_flush_finished(st_sched *s);
void st_sched_generate_next(st_sched *s, st_req *r, st_seq *q);
void st_sched_score_prompt_done(st_sched *s, st_req *r, st_seq *q);
void st_sched_score_child_step(st_sched *s, st_req *r, st_seq *c, int from, int n);
void st_sched_embed_done(st_sched *s, st_req *r, st_seq *q);

#endif
