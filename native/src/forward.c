/* Forward pass: embeddings -> n_layers x (attention + SwiGLU FFN) -> logits.
 *
 * Numerics follow llama.cpp's CPU backend so logits can be compared with it:
 * activations are converted to each weight's dot type (Q8_0/Q8_K/F16/...)
 * before a matmul, RMSNorm sums in double, RoPE uses ggml's cache recurrence. */
#include "forward.h"

#include "matmul.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------- elementwise -- */

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        sum += (double)(x[i] * x[i]);
    }
    const float mean = (float)(sum / n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++) {
        out[i] = (x[i] * scale) * w[i];
    }
}

/* ggml_rope_yarn_corr_dims */
static float yarn_corr_dim(int n_dims, int n_ctx_orig, float n_rot, float base)
{
    return n_dims * logf(n_ctx_orig / (n_rot * 2 * (float)M_PI)) / (2 * logf(base));
}

/* cos/sin pairs for one position (ggml_rope_cache_init + rope_yarn). */
static void rope_cache(const st_hparams *hp, const float *freq_factors, int pos, float *cache)
{
    const int n_dims = hp->n_rot;
    const float theta_scale = powf(hp->rope_base, -2.0f / n_dims);
    float corr[2] = {0.0f, 0.0f};
    if (hp->rope_ext_factor != 0.0f) {
        float start = floorf(yarn_corr_dim(n_dims, hp->rope_n_ctx_orig, hp->rope_beta_fast, hp->rope_base));
        float end = ceilf(yarn_corr_dim(n_dims, hp->rope_n_ctx_orig, hp->rope_beta_slow, hp->rope_base));
        corr[0] = ST_MAX(0.0f, start);
        corr[1] = ST_MIN((float)(n_dims - 1), end);
    }
    float theta = (float)pos;
    for (int i0 = 0; i0 < n_dims; i0 += 2) {
        const float ff = freq_factors ? freq_factors[i0 / 2] : 1.0f;
        const float theta_extrap = theta / ff;
        const float theta_interp = hp->rope_freq_scale * theta_extrap;
        float th = theta_interp;
        float mscale = hp->rope_attn_factor;
        if (hp->rope_ext_factor != 0.0f) {
            const float y = (i0 / 2 - corr[0]) / ST_MAX(0.001f, corr[1] - corr[0]);
            const float ramp = 1.0f - ST_MIN(1.0f, ST_MAX(0.0f, y));
            const float mix = ramp * hp->rope_ext_factor;
            th = theta_interp * (1 - mix) + theta_extrap * mix;
            mscale *= 1.0f + 0.1f * logf(1.0f / hp->rope_freq_scale);
        }
        cache[i0] = cosf(th) * mscale;
        cache[i0 + 1] = sinf(th) * mscale;
        theta *= theta_scale;
    }
}

/* Rotate one head of head_dim values in place. */
static void rope_apply(st_rope_kind kind, int n_rot, const float *cache, float *x)
{
    if (kind == ST_ROPE_NORM) {
        for (int i0 = 0; i0 < n_rot; i0 += 2) {
            const float c = cache[i0], s = cache[i0 + 1];
            const float x0 = x[i0], x1 = x[i0 + 1];
            x[i0] = x0 * c - x1 * s;
            x[i0 + 1] = x0 * s + x1 * c;
        }
    } else {
        const int half = n_rot / 2;
        for (int i0 = 0; i0 < n_rot; i0 += 2) {
            const float c = cache[i0], s = cache[i0 + 1];
            const int ic = i0 / 2;
            const float x0 = x[ic], x1 = x[ic + half];
            x[ic] = x0 * c - x1 * s;
            x[ic + half] = x0 * s + x1 * c;
        }
    }
}

/* ------------------------------------------------------------- matmuls -- */

/* Up to three matmuls sharing one converted input, run as one pool job. */
typedef struct {
    int simd;
    int n_mm;
    const st_weight *w[3];
    float *y[3];
    const void *xq;
    int n_tok;
} mm_job;

static void mm_task(void *arg, int ith, int nth)
{
    mm_job *job = arg;
    for (int i = 0; i < job->n_mm; i++) {
        const st_weight *w = job->w[i];
        st_matmul(job->simd, w->type, w->data, w->n_out, w->n_in, job->xq, job->n_tok, job->y[i], ith, nth);
    }
}

/* Convert x (n_tok rows of n_in) for w's dot type, then y_i = w_i x. All
 * weights must share the dot type (true within a GGUF layer's q/k/v and
 * gate/up pairs; checked, with a fallback to separate conversions). */
static void matmul_group(strata_ctx *ctx, const float *x, int n_tok, int n, const st_weight **ws, float **ys)
{
    int i = 0;
    while (i < n) {
        mm_job job = {.simd = ctx->simd, .n_mm = 0, .xq = ctx->xq, .n_tok = n_tok};
        st_type vt = st_vec_dot_type(ws[i]->type);
        st_quantize_activations(ws[i]->type, x, n_tok, ws[i]->n_in, ctx->xq);
        while (i < n && st_vec_dot_type(ws[i]->type) == vt) {
            job.w[job.n_mm] = ws[i];
            job.y[job.n_mm] = ys[i];
            job.n_mm++;
            i++;
        }
        st_pool_run(ctx->pool, mm_task, &job);
    }
}

static void matmul1(strata_ctx *ctx, const float *x, int n_tok, const st_weight *w, float *y)
{
    matmul_group(ctx, x, n_tok, 1, &w, &y);
}

/* ----------------------------------------------------------- attention -- */

typedef struct {
    strata_ctx *ctx;
    int layer;
    int n_tok;
    int pos0;       /* position of the first token */
    float *out;     /* (n_tok, n_head * head_dim) */
} att_job;

static void att_task(void *arg, int ith, int nth)
{
    att_job *job = arg;
    strata_ctx *ctx = job->ctx;
    const st_hparams *hp = &ctx->model->hp;
    const int hd = hp->head_dim;
    const int kv_dim = hp->n_head_kv * hd;
    const int group = hp->n_head / hp->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    const st_kv_layer *kv = &ctx->kv[job->layer];
    const size_t esz = ctx->kv_type == ST_F16 ? 2 : 4;
    st_vec_dot_fn dot = st_vec_dot_get(ctx->kv_type, ctx->simd);
    float *scores = ctx->att_scratch + (size_t)ith * (ctx->n_ctx + 2 * hd);
    float *qconv = scores + ctx->n_ctx; /* q in the cache's type (fp16 uses half of it) */
    float *vrow = qconv + hd;

    int64_t start, end;
    st_split_range((int64_t)job->n_tok * hp->n_head, ith, nth, &start, &end);
    for (int64_t task = start; task < end; task++) {
        const int t = (int)(task / hp->n_head);
        const int h = (int)(task % hp->n_head);
        const int g = h / group;
        const int n_keys = job->pos0 + t + 1; /* causal: keys 0..pos */
        const float *q = ctx->q + (size_t)t * hp->n_head * hd + (size_t)h * hd;
        if (ctx->kv_type == ST_F16) {
            st_quantize_row(ST_F16, q, qconv, hd);
        } else {
            memcpy(qconv, q, (size_t)hd * sizeof(float));
        }
        float max = -INFINITY;
        for (int j = 0; j < n_keys; j++) {
            const uint8_t *krow = (const uint8_t *)kv->k + ((size_t)j * kv_dim + (size_t)g * hd) * esz;
            float s;
            dot(hd, &s, krow, qconv);
            s *= scale;
            scores[j] = s;
            if (s > max) {
                max = s;
            }
        }
        double sum = 0.0;
        for (int j = 0; j < n_keys; j++) {
            const float e = expf(scores[j] - max);
            scores[j] = e;
            sum += e;
        }
        const float inv = (float)(1.0 / sum);
        float *o = job->out + (size_t)t * hp->n_head * hd + (size_t)h * hd;
        memset(o, 0, (size_t)hd * sizeof(float));
        for (int j = 0; j < n_keys; j++) {
            const float p = scores[j] * inv;
            const uint8_t *vr = (const uint8_t *)kv->v + ((size_t)j * kv_dim + (size_t)g * hd) * esz;
            const float *vf;
            if (ctx->kv_type == ST_F16) {
                st_dequant_row(ST_F16, vr, vrow, hd);
                vf = vrow;
            } else {
                vf = (const float *)vr;
            }
            for (int d = 0; d < hd; d++) {
                o[d] += p * vf[d];
            }
        }
    }
}

static void kv_store(strata_ctx *ctx, int layer, int n_tok, int pos0)
{
    const st_hparams *hp = &ctx->model->hp;
    const int kv_dim = hp->n_head_kv * hp->head_dim;
    const size_t esz = ctx->kv_type == ST_F16 ? 2 : 4;
    for (int t = 0; t < n_tok; t++) {
        uint8_t *kd = (uint8_t *)ctx->kv[layer].k + (size_t)(pos0 + t) * kv_dim * esz;
        uint8_t *vd = (uint8_t *)ctx->kv[layer].v + (size_t)(pos0 + t) * kv_dim * esz;
        st_quantize_row(ctx->kv_type, ctx->k + (size_t)t * kv_dim, kd, kv_dim);
        st_quantize_row(ctx->kv_type, ctx->v + (size_t)t * kv_dim, vd, kv_dim);
    }
}

/* -------------------------------------------------------------- layers -- */

static void add_bias(float *y, const float *b, int n_tok, int n)
{
    if (b == NULL) {
        return;
    }
    for (int t = 0; t < n_tok; t++) {
        for (int i = 0; i < n; i++) {
            y[(size_t)t * n + i] += b[i];
        }
    }
}

static void attention_block(strata_ctx *ctx, int il, int n_tok, int pos0)
{
    const strata_model *m = ctx->model;
    const st_hparams *hp = &m->hp;
    const st_layer *l = &m->layers[il];
    const int n_embd = hp->n_embd;
    const int hd = hp->head_dim;
    const int q_dim = hp->n_head * hd;
    const int kv_dim = hp->n_head_kv * hd;

    for (int t = 0; t < n_tok; t++) {
        rmsnorm(ctx->xn + (size_t)t * n_embd, ctx->x + (size_t)t * n_embd, l->attn_norm, n_embd, hp->rms_eps);
    }
    const st_weight *ws[3] = {&l->wq, &l->wk, &l->wv};
    float *ys[3] = {ctx->q, ctx->k, ctx->v};
    matmul_group(ctx, ctx->xn, n_tok, 3, ws, ys);
    add_bias(ctx->q, l->bq, n_tok, q_dim);
    add_bias(ctx->k, l->bk, n_tok, kv_dim);
    add_bias(ctx->v, l->bv, n_tok, kv_dim);

    for (int t = 0; t < n_tok; t++) {
        const float *cache = ctx->rope + (size_t)t * hp->n_rot;
        for (int h = 0; h < hp->n_head; h++) {
            float *qh = ctx->q + (size_t)t * q_dim + (size_t)h * hd;
            if (l->q_norm != NULL) {
                rmsnorm(qh, qh, l->q_norm, hd, hp->rms_eps);
            }
            rope_apply(hp->rope_kind, hp->n_rot, cache, qh);
        }
        for (int h = 0; h < hp->n_head_kv; h++) {
            float *kh = ctx->k + (size_t)t * kv_dim + (size_t)h * hd;
            if (l->k_norm != NULL) {
                rmsnorm(kh, kh, l->k_norm, hd, hp->rms_eps);
            }
            rope_apply(hp->rope_kind, hp->n_rot, cache, kh);
        }
    }
    kv_store(ctx, il, n_tok, pos0);

    att_job job = {.ctx = ctx, .layer = il, .n_tok = n_tok, .pos0 = pos0, .out = ctx->xn};
    st_pool_run(ctx->pool, att_task, &job);

    /* output projection into gate (free scratch), then residual add */
    matmul1(ctx, ctx->xn, n_tok, &l->wo, ctx->gate);
    for (size_t i = 0; i < (size_t)n_tok * n_embd; i++) {
        ctx->x[i] += ctx->gate[i];
    }
}

static void ffn_block(strata_ctx *ctx, int il, int n_tok)
{
    const strata_model *m = ctx->model;
    const st_hparams *hp = &m->hp;
    const st_layer *l = &m->layers[il];
    const int n_embd = hp->n_embd;
    const int n_ff = hp->n_ff;

    for (int t = 0; t < n_tok; t++) {
        rmsnorm(ctx->xn + (size_t)t * n_embd, ctx->x + (size_t)t * n_embd, l->ffn_norm, n_embd, hp->rms_eps);
    }
    const st_weight *ws[2] = {&l->w_gate, &l->w_up};
    float *ys[2] = {ctx->gate, ctx->up};
    matmul_group(ctx, ctx->xn, n_tok, 2, ws, ys);
    for (size_t i = 0; i < (size_t)n_tok * n_ff; i++) {
        const float g = ctx->gate[i];
        ctx->gate[i] = g / (1.0f + expf(-g)) * ctx->up[i];
    }
    matmul1(ctx, ctx->gate, n_tok, &l->w_down, ctx->up);
    for (size_t i = 0; i < (size_t)n_tok * n_embd; i++) {
        ctx->x[i] += ctx->up[i];
    }
}

strata_err st_forward(strata_ctx *ctx, const strata_token *toks, int n, float *logits, strata_error *err)
{
    const strata_model *m = ctx->model;
    const st_hparams *hp = &m->hp;
    if (n <= 0 || n > ctx->n_batch) {
        return st_error(err, STRATA_ERR_INTERNAL, "forward batch of %d tokens (1..%d allowed)", n, ctx->n_batch);
    }
    if (ctx->n_past + n > ctx->n_ctx) {
        return st_error(err, STRATA_ERR_LIMIT, "context is full: %d cached + %d new tokens exceed the context size %d",
                        ctx->n_past, n, ctx->n_ctx);
    }
    for (int t = 0; t < n; t++) {
        if (toks[t] < 0 || toks[t] >= hp->n_vocab) {
            return st_error(err, STRATA_ERR_ARG, "token id %d is out of range (vocabulary has %d tokens)", toks[t],
                            hp->n_vocab);
        }
    }
    const int pos0 = ctx->n_past;
    const size_t row_bytes = st_row_bytes(m->tok_embd.type, hp->n_embd);
    for (int t = 0; t < n; t++) {
        const uint8_t *row = (const uint8_t *)m->tok_embd.data + (size_t)toks[t] * row_bytes;
        st_dequant_row(m->tok_embd.type, row, ctx->x + (size_t)t * hp->n_embd, hp->n_embd);
        rope_cache(hp, m->rope_freqs, pos0 + t, ctx->rope + (size_t)t * hp->n_rot);
    }
    for (int il = 0; il < hp->n_layers; il++) {
        attention_block(ctx, il, n, pos0);
        ffn_block(ctx, il, n);
    }
    for (int t = 0; t < n; t++) {
        ctx->history[pos0 + t] = toks[t];
    }
    ctx->n_past += n;
    if (logits != NULL) {
        float *last = ctx->xn;
        rmsnorm(last, ctx->x + (size_t)(n - 1) * hp->n_embd, m->out_norm, hp->n_embd, hp->rms_eps);
        matmul1(ctx, last, 1, &m->output, logits);
    }
    return STRATA_OK;
}
