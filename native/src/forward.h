/* A sequence's state (strata_ctx: KV cache, token history) and the
 * single-sequence forward entry point. The batched pass is in batch.h. */
#ifndef ST_FORWARD_H
#define ST_FORWARD_H

#include "model.h"
#include "threadpool.h"

typedef struct st_runner st_runner;

/* Per-layer KV cache: n_ctx rows of kv_dim elements in F16 or F32. */
typedef struct {
    void *k;    /* (n_ctx, n_head_kv * head_dim) */
    void *v;    /* (n_ctx, n_head_kv * head_dim) */
} st_kv_layer;

struct strata_ctx {
    strata_model *model;
    int n_ctx;
    int n_batch;
    st_type kv_type;        /* ST_F16 or ST_F32 */
    st_kv_layer *kv;        /* (n_layers) */
    int n_past;             /* positions filled in the cache */
    strata_token *history;  /* (n_ctx) tokens at each cached position */
    float *logits;          /* (n_vocab) */
    /* for running this sequence alone (strata_eval, strata_generate); NULL
     * when the context only takes part in a scheduler's batches */
    st_pool *pool;
    st_runner *runner;
    void *kv_gpu;           /* CUDA models: the GPU allocation kv[] points into */
};

/* Run n tokens (n <= n_batch) at positions n_past.. and advance n_past.
 * If logits is non-NULL, the last token's logits are written to it. */
strata_err st_forward(strata_ctx *ctx, const strata_token *toks, int n, float *logits, strata_error *err);

/* Evaluate n tokens in chunks of n_batch; logits (if not NULL) after the
 * last. Checks *cancel between chunks (STRATA_ERR_CANCELLED, no message). */
strata_err st_eval_chunks(strata_ctx *ctx, const strata_token *toks, size_t n, float *logits,
                          const volatile int *cancel, strata_error *err);

/* A context with a KV cache only (no pool/runner of its own): for sequences
 * that a scheduler runs in shared batches. */
strata_err st_ctx_new_kv(strata_model *model, int n_ctx, bool kv_f32, strata_ctx **out, strata_error *err);

/* Size in bytes of one cached K or V row (kv_dim elements). */
size_t st_kv_row_bytes(const strata_ctx *ctx);

/* RoPE cos/sin pairs (n_rot floats) for one position: the CPU pass's cache,
 * also uploaded by the GPU runner. */
void st_rope_cache(const st_hparams *hp, const float *freq_factors, int pos, float *cache);

#endif
