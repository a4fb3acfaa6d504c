/* Continuous batching at layer granularity.
 *
 * Requests (generate, score, embed) are split into sequences, each with its
 * own strata_ctx (KV cache). Every st_sched_step() gathers one share of work
 * from every active sequence -- one token for a decoding sequence, a chunk of
 * prompt for one still in prefill, within a per-step token budget -- and runs
 * them all through one layer-major st_forward_batch(), so each layer (and,
 * when streamed, each layer load) serves every sequence of the step. New
 * requests join at the next step. After the step each generating sequence
 * samples its next token and assembles its text exactly as strata_generate()
 * does (sampler.h, textout.h), so greedy results equal one-at-a-time runs.
 *
 * Prefix cache: finished contexts are kept (up to prefix_slots) with their
 * KV caches; a new prompt that shares >= prefix_min leading tokens with a
 * kept context takes that context, or with a running sequence gets a copy of
 * its KV rows (prefix_cache.h). Score requests with multi-token options run
 * one child sequence per distinct option prefix, each starting from a copy
 * of the prompt's KV.
 *
 * Threading: a scheduler is used by one thread at a time (the worker's
 * scheduler thread). Only the request's cancel flag may be written from
 * another thread. Callbacks run on the stepping thread.
 */
#ifndef ST_SCHEDULER_H
#define ST_SCHEDULER_H

#include "batch.h"

typedef struct st_sched st_sched;
typedef struct st_req st_req;

typedef struct st_sched_params {
    int max_batch;     /* requests running at once (others wait); 0: 16 */
    int step_tokens;   /* token rows per step (prefill chunk budget); 0: 256 */
    int n_ctx;         /* KV length per sequence; 0: min(n_ctx_train, 2048) */
    int n_threads;     /* 0: model's */
    bool kv_f32;
    int prefix_min;    /* shortest shared prefix worth reusing; 0: 4 */
    int prefix_slots;  /* idle contexts kept for reuse; 0: min(max_batch, 8); -1: none */
} st_sched_params;

void st_sched_params_default(st_sched_params *p);

typedef enum {
    ST_REQ_GENERATE,
    ST_REQ_SCORE,
    ST_REQ_EMBED,
} st_req_kind;

/* Piece of generated text (see strata_piece_cb); return false to stop. */
typedef bool (*st_req_piece_cb)(st_req *req, const char *piece, size_t len, void *user);
/* The request is finished (result filled); called once, after which the
 * scheduler no longer touches it: the callee owns it (st_req_free). */
typedef void (*st_req_done_cb)(st_req *req, void *user);

typedef struct st_req_desc {
    st_req_kind kind;
    const strata_token *prompt;   /* copied */
    int n_prompt;
    /* generate */
    strata_sampler_params sampling;
    int max_tokens;               /* <= 0: until the context is full */
    const char *const *stop;      /* copied */
    size_t n_stop;
    /* score: each option is a continuation of the prompt (>= 1 token) */
    const strata_token *const *options; /* (n_options) copied */
    const int *option_len;        /* (n_options) */
    int n_options;
    bool keep_logits;             /* score: keep the prompt's last logits */
    /* all kinds */
    double deadline_ms;           /* st_now_ms() clock; 0: none */
    const volatile int *cancel;   /* may be NULL; polled every step */
    st_req_piece_cb on_piece;
    st_req_done_cb on_done;
    void *user;
} st_req_desc;

typedef struct st_req_result {
    strata_err rc;                /* STRATA_OK, or the error of err */
    strata_error err;
    /* generate */
    char *text;
    size_t n_prompt_tokens;
    size_t n_gen_tokens;
    strata_stop_reason stop;
    double prompt_ms;
    double gen_ms;
    size_t n_prefix_reused;       /* prompt tokens taken from the prefix cache */
    /* score */
    int n_options;
    double *logprob;              /* (n_options) sum of log p over each option's tokens */
    double *prob;                 /* (n_options) softmax of logprob over the options */
    float *logits;                /* (n_vocab) prompt's last logits when keep_logits */
    /* embed */
    float *embd;                  /* (n_embd) mean-pooled, L2-normalized */
    int n_embd;
} st_req_result;

strata_err st_sched_new(strata_model *m, const st_sched_params *p, st_sched **out, strata_error *err);
/* Finishes every unfinished request with STRATA_ERR_CANCELLED (callbacks
 * run) and frees everything else. */
void st_sched_free(st_sched *s);

/* Queue a request; it joins at the next step. *out (may be NULL) gets the
 * handle, which stays valid until the done callback has run and the owner
 * freed it; without on_done the owner polls st_req_done(). */
strata_err st_sched_submit(st_sched *s, const st_req_desc *d, st_req **out, strata_error *err);

/* One step: admit waiting requests, run one batched forward over all active
 * sequences, sample, finish requests. Returns the number of requests still
 * active or waiting (0: idle). Errors of one request finish that request;
 * the return is an error only when the whole step failed. */
strata_err st_sched_step(st_sched *s, int *n_pending, strata_error *err);

/* Requests active or waiting. */
int st_sched_pending(const st_sched *s);

bool st_req_done(const st_req *r);
const st_req_result *st_req_get_result(const st_req *r);
void st_req_free(st_req *r);

/* Counters since st_sched_new. */
typedef struct st_sched_stats {
    uint64_t steps;
    uint64_t tokens;          /* token rows run */
    uint64_t seq_steps;       /* sum over steps of sequences in the step */
    uint64_t prefix_tokens;   /* prompt tokens reused instead of computed */
    uint64_t requests_done;
    uint64_t contexts;        /* contexts allocated now */
    int max_seqs_in_step;
} st_sched_stats;

void st_sched_get_stats(const st_sched *s, st_sched_stats *out);

#endif
