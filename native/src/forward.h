/* The transformer forward pass over a KV cache (the strata_ctx). */
#ifndef ST_FORWARD_H
#define ST_FORWARD_H

#include "model.h"
#include "threadpool.h"

/* Per-layer KV cache: n_ctx rows of kv_dim elements in F16 or F32. */
typedef struct {
    void *k;    /* (n_ctx, n_head_kv * head_dim) */
    void *v;    /* (n_ctx, n_head_kv * head_dim) */
} st_kv_layer;

struct strata_ctx {
    strata_model *model;
    st_pool *pool;
    int simd;               /* kernel level for this CPU */
    int n_ctx;
    int n_batch;
    st_type kv_type;        /* ST_F16 or ST_F32 */
    st_kv_layer *kv;        /* (n_layers) */
    int n_past;             /* positions filled in the cache */
    strata_token *history;  /* (n_ctx) tokens at each cached position */

    /* scratch, sized for n_batch tokens */
    float *x;               /* (n_batch, n_embd) residual stream */
    float *xn;              /* (n_batch, max(n_embd, q_dim)) normalized input / attention out */
    void *xq;               /* activations converted for the next matmul */
    size_t xq_bytes;
    float *q;               /* (n_batch, q_dim) */
    float *k;               /* (n_batch, kv_dim) */
    float *v;               /* (n_batch, kv_dim) */
    float *gate;            /* (n_batch, n_ff) */
    float *up;              /* (n_batch, n_ff) */
    float *rope;            /* (n_batch, n_rot) cos/sin pairs per position */
    float *att_scratch;     /* (n_threads, n_ctx + 2 * head_dim) */
    float *logits;          /* (n_vocab) */
};

/* Run n tokens (n <= n_batch) at positions n_past.. and advance n_past.
 * If logits is non-NULL, the last token's logits are written to it. */
strata_err st_forward(strata_ctx *ctx, const strata_token *toks, int n, float *logits, strata_error *err);

#endif
