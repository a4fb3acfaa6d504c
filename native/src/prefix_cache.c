/* KV prefix copies between contexts (see prefix_cache.h). */
#include "prefix_cache.h"

#include <string.h>

int st_prefix_common(const strata_ctx *ctx, const strata_token *toks, int n)
{
    int common = 0;
    int lim = ST_MIN(n, ctx->n_past);
    while (common < lim && ctx->history[common] == toks[common]) {
        common++;
    }
    return common;
}

strata_err st_kv_copy_prefix(strata_ctx *dst, const strata_ctx *src, int n, strata_error *err)
{
    if (dst == NULL || src == NULL || dst == src) {
        return st_error(err, STRATA_ERR_ARG, "KV copy needs two distinct contexts");
    }
    if (dst->model != src->model || dst->kv_type != src->kv_type) {
        return st_error(err, STRATA_ERR_ARG, "KV copy between contexts of different models or KV types");
    }
    if (n < 0 || n > src->n_past || n > dst->n_ctx) {
        return st_error(err, STRATA_ERR_ARG, "KV copy of %d positions: source has %d, destination holds %d", n,
                        src->n_past, dst->n_ctx);
    }
    const st_hparams *hp = &src->model->hp;
    const size_t row = (size_t)hp->n_head_kv * hp->head_dim * (src->kv_type == ST_F32 ? 4 : 2);
    for (int l = 0; l < hp->n_layers; l++) {
        memcpy(dst->kv[l].k, src->kv[l].k, (size_t)n * row);
        memcpy(dst->kv[l].v, src->kv[l].v, (size_t)n * row);
    }
    memcpy(dst->history, src->history, (size_t)n * sizeof(strata_token));
    dst->n_past = n;
    return STRATA_OK;
}
