/* strata_ctx: one sequence's KV cache and token history; strata_eval. */
#include "batch.h"
#include "../cuda/backend.h"

#include <stdlib.h>
#include <string.h>

void strata_ctx_params_default(strata_ctx_params *p)
{
    p->n_ctx = 0;
    p->n_batch = 0;
    p->n_threads = 0;
    p->kv_f32 = false;
}

strata_err st_ctx_new_kv(strata_model *model, int n_ctx, bool kv_f32, strata_ctx **out, strata_error *err)
{
    *out = NULL;
    const st_hparams *hp = &model->hp;
    if (n_ctx <= 0 || n_ctx > (1 << 20)) {
        return st_error(err, STRATA_ERR_ARG, "context size %d is out of range (1..1048576)", n_ctx);
    }
    strata_ctx *ctx = st_calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    ctx->model = model;
    ctx->n_ctx = n_ctx;
    ctx->n_batch = n_ctx;
    ctx->kv_type = kv_f32 ? ST_F32 : ST_F16;
    const size_t kv_bytes = (size_t)n_ctx * st_kv_row_bytes(ctx);
    ctx->kv = st_calloc((size_t)hp->n_layers, sizeof(st_kv_layer));
    ctx->history = st_malloc_array((size_t)n_ctx, sizeof(strata_token));
    ctx->logits = st_aligned_alloc(64, (size_t)hp->n_vocab * sizeof(float));
    bool ok = ctx->kv && ctx->history && ctx->logits;
    if (ok && model->gpu != NULL) {
        /* CUDA: the cache lives on the GPU (budget checked there) */
        strata_err rc = st_cuda_kv_alloc(ctx, kv_bytes, err);
        if (rc != STRATA_OK) {
            strata_ctx_free(ctx);
            return rc;
        }
    }
    for (int l = 0; ok && ctx->kv_gpu == NULL && l < hp->n_layers; l++) {
        ctx->kv[l].k = st_aligned_alloc(64, kv_bytes);
        ctx->kv[l].v = st_aligned_alloc(64, kv_bytes);
        ok = ctx->kv[l].k && ctx->kv[l].v;
    }
    if (!ok) {
        strata_ctx_free(ctx);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory for a %d-token context (%zu MiB KV cache)", n_ctx,
                        (size_t)hp->n_layers * 2 * kv_bytes >> 20);
    }
    *out = ctx;
    return STRATA_OK;
}

strata_err strata_ctx_new(strata_model *model, const strata_ctx_params *params, strata_ctx **out,
                          strata_error *err)
{
    strata_ctx_params defaults;
    if (model == NULL || out == NULL) {
        return st_error(err, STRATA_ERR_ARG, "model and output must not be NULL");
    }
    *out = NULL;
    if (params == NULL) {
        strata_ctx_params_default(&defaults);
        params = &defaults;
    }
    int n_ctx = params->n_ctx > 0 ? params->n_ctx : ST_MIN(model->hp.n_ctx_train, 4096);
    int n_batch = params->n_batch > 0 ? params->n_batch : 512;
    n_batch = ST_MIN(n_batch, n_ctx);
    int n_threads = params->n_threads > 0 ? params->n_threads : model->n_threads;
    strata_ctx *ctx = NULL;
    strata_err rc = st_ctx_new_kv(model, n_ctx, params->kv_f32, &ctx, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    ctx->n_batch = n_batch;
    rc = st_pool_new(n_threads, &ctx->pool, err);
    if (rc == STRATA_OK) {
        rc = st_runner_new(model, n_batch, n_ctx, ctx->pool, &ctx->runner, err);
    }
    if (rc != STRATA_OK) {
        strata_ctx_free(ctx);
        return rc;
    }
    *out = ctx;
    return STRATA_OK;
}

void strata_ctx_free(strata_ctx *ctx)
{
    if (ctx == NULL) {
        return;
    }
    if (ctx->kv_gpu != NULL) {
        st_cuda_kv_free(ctx);
        free(ctx->kv);
    } else if (ctx->kv != NULL) {
        for (int l = 0; l < ctx->model->hp.n_layers; l++) {
            st_aligned_free(ctx->kv[l].k);
            st_aligned_free(ctx->kv[l].v);
        }
        free(ctx->kv);
    }
    st_runner_free(ctx->runner);
    st_pool_free(ctx->pool);
    free(ctx->history);
    st_aligned_free(ctx->logits);
    free(ctx);
}

int strata_ctx_n_ctx(const strata_ctx *ctx)
{
    return ctx->n_ctx;
}

int strata_ctx_n_past(const strata_ctx *ctx)
{
    return ctx->n_past;
}

void strata_ctx_truncate(strata_ctx *ctx, int n_past)
{
    if (n_past < 0) {
        n_past = 0;
    }
    if (n_past < ctx->n_past) {
        ctx->n_past = n_past;
    }
}

strata_err st_eval_chunks(strata_ctx *ctx, const strata_token *toks, size_t n, float *logits,
                          const volatile int *cancel, strata_error *err)
{
    if ((size_t)ctx->n_past + n > (size_t)ctx->n_ctx) {
        return st_error(err, STRATA_ERR_LIMIT,
                        "prompt too long: %zu tokens (+%d cached) exceed the context size of %d tokens", n,
                        ctx->n_past, ctx->n_ctx);
    }
    size_t done = 0;
    while (done < n) {
        if (cancel != NULL && *cancel != 0) {
            return STRATA_ERR_CANCELLED;
        }
        int chunk = (int)ST_MIN((size_t)ctx->n_batch, n - done);
        bool last = done + (size_t)chunk == n;
        strata_err rc = st_forward(ctx, toks + done, chunk, last ? logits : NULL, err);
        if (rc != STRATA_OK) {
            return rc;
        }
        done += (size_t)chunk;
    }
    return STRATA_OK;
}

strata_err strata_eval(strata_ctx *ctx, const strata_token *toks, size_t n, float *logits, strata_error *err)
{
    if (ctx == NULL || (toks == NULL && n > 0)) {
        return st_error(err, STRATA_ERR_ARG, "context and tokens must not be NULL");
    }
    if (n == 0) {
        return st_error(err, STRATA_ERR_ARG, "nothing to evaluate: zero tokens");
    }
    return st_eval_chunks(ctx, toks, n, logits, NULL, err);
}
