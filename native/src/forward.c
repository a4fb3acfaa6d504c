/* Forward pass: embeddings -> n_layers x (attention + SwiGLU FFN) -> logits,
 * layer-major over a batch of sequences (see batch.h).
 *
 * Numerics follow llama.cpp's CPU backend so logits can be compared with it:
 * activations are converted to each weight's dot type (Q8_0/Q8_K/F16/...)
 * before a matmul, RMSNorm sums in double, RoPE uses ggml's cache recurrence. */
#include "batch.h"
#include "matmul.h"
#include "../cuda/backend.h"

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
void st_rope_cache(const st_hparams *hp, const float *freq_factors, int pos, float *cache)
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

/* -------------------------------------------------------------- runner -- */

struct st_runner {
    const strata_model *model;
    st_pool *pool;           /* not owned */
    int simd;                /* kernel level for this CPU */
    int max_tokens;
    int n_ctx_max;
    float *x;                /* (max_tokens, n_embd) residual stream */
    float *xn;               /* (max_tokens, max(n_embd, q_dim)) normed input / attention out */
    void *xq;                /* activations converted for the next matmul */
    float *q;                /* (max_tokens, q_dim) */
    float *k;                /* (max_tokens, kv_dim) */
    float *v;                /* (max_tokens, kv_dim) */
    float *gate;             /* (max_tokens, max(n_ff, n_embd)) */
    float *up;               /* (max_tokens, max(n_ff, n_embd)) */
    float *rope;             /* (max_tokens, n_rot) cos/sin pairs per row */
    float *att_scratch;      /* (n_threads, att_scratch_floats) */
    strata_ctx **row_ctx;    /* (max_tokens) sequence of each stacked row */
    int *row_pos;            /* (max_tokens) position of each row */
    float *out_rows;         /* (n_out_cap, n_vocab) logits of rows that want them */
    int *out_row_idx;        /* (max_tokens) */
    int n_out_cap;
    st_cuda_runner *gpu;     /* CUDA models: the step runs there (backend.h) */
};

static float *alloc_floats(size_t n)
{
    return st_aligned_alloc(64, (n == 0 ? 1 : n) * sizeof(float));
}

/* Attention scratch per thread: scores of the query heads sharing a KV head,
 * and one converted K or V row. */
static size_t att_scratch_floats(const st_runner *r)
{
    const st_hparams *hp = &r->model->hp;
    return (size_t)(hp->n_head / hp->n_head_kv) * r->n_ctx_max + hp->head_dim + 16;
}

strata_err st_runner_new(const strata_model *m, int max_tokens, int n_ctx_max, st_pool *pool, st_runner **out,
                         strata_error *err)
{
    *out = NULL;
    if (max_tokens <= 0 || n_ctx_max <= 0 || pool == NULL) {
        return st_error(err, STRATA_ERR_ARG, "runner needs max_tokens > 0, n_ctx_max > 0 and a thread pool");
    }
    const st_hparams *hp = &m->hp;
    st_runner *r = st_calloc(1, sizeof(*r));
    if (r == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    r->model = m;
    r->pool = pool;
    r->simd = st_simd_level();
    r->max_tokens = max_tokens;
    r->n_ctx_max = n_ctx_max;
    const size_t B = (size_t)max_tokens;
    const size_t q_dim = (size_t)hp->n_head * hp->head_dim;
    const size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    const size_t wide = ST_MAX(ST_MAX((size_t)hp->n_embd, q_dim), (size_t)hp->n_ff);
    r->x = alloc_floats(B * hp->n_embd);
    r->xn = alloc_floats(B * ST_MAX((size_t)hp->n_embd, q_dim));
    r->xq = st_aligned_alloc(64, B * wide * 4 + 4096); /* widest converted row: F32 */
    r->q = alloc_floats(B * q_dim);
    r->k = alloc_floats(B * kv_dim);
    r->v = alloc_floats(B * kv_dim);
    r->gate = alloc_floats(B * wide);
    r->up = alloc_floats(B * wide);
    r->rope = alloc_floats(B * hp->n_rot);
    r->att_scratch = alloc_floats((size_t)st_pool_size(pool) * att_scratch_floats(r));
    r->row_ctx = st_calloc(B, sizeof(strata_ctx *));
    r->row_pos = st_calloc(B, sizeof(int));
    r->out_row_idx = st_calloc(B, sizeof(int));
    if (!r->x || !r->xn || !r->xq || !r->q || !r->k || !r->v || !r->gate || !r->up || !r->rope || !r->att_scratch ||
        !r->row_ctx || !r->row_pos || !r->out_row_idx) {
        st_runner_free(r);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory for a %d-token batch", max_tokens);
    }
    if (m->gpu != NULL) {
        strata_err rc = st_cuda_runner_new(m, max_tokens, n_ctx_max, pool, &r->gpu, err);
        if (rc != STRATA_OK) {
            st_runner_free(r);
            return rc;
        }
    }
    *out = r;
    return STRATA_OK;
}

void st_runner_free(st_runner *r)
{
    if (r == NULL) {
        return;
    }
    st_cuda_runner_free(r->gpu);
    st_aligned_free(r->x);
    st_aligned_free(r->xn);
    st_aligned_free(r->xq);
    st_aligned_free(r->q);
    st_aligned_free(r->k);
    st_aligned_free(r->v);
    st_aligned_free(r->gate);
    st_aligned_free(r->up);
    st_aligned_free(r->rope);
    st_aligned_free(r->att_scratch);
    st_aligned_free(r->out_rows);
    free(r->row_ctx);
    free(r->row_pos);
    free(r->out_row_idx);
    free(r);
}

int st_runner_max_tokens(const st_runner *r)
{
    return r->max_tokens;
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

/* y_i = w_i x for weights that read the same input x (n_tok rows of n_in).
 * x is converted once per distinct dot type (q/k/v and gate/up share one in
 * practice; Q4_K_M mixes Q4_K and Q6_K, which both read Q8_K). */
static void matmul_group(st_runner *r, const float *x, int n_tok, int n, const st_weight **ws, float **ys)
{
    int i = 0;
    while (i < n) {
        mm_job job = {.simd = r->simd, .n_mm = 0, .xq = r->xq, .n_tok = n_tok};
        st_type vt = st_vec_dot_type(ws[i]->type);
        st_quantize_activations(ws[i]->type, x, n_tok, ws[i]->n_in, r->xq);
        while (i < n && job.n_mm < 3 && st_vec_dot_type(ws[i]->type) == vt) {
            job.w[job.n_mm] = ws[i];
            job.y[job.n_mm] = ys[i];
            job.n_mm++;
            i++;
        }
        st_pool_run(r->pool, mm_task, &job);
    }
}

static void matmul1(st_runner *r, const float *x, int n_tok, const st_weight *w, float *y)
{
    matmul_group(r, x, n_tok, 1, &w, &y);
}

/* ----------------------------------------------------------- attention -- */

/* y += a * x: the attention's V accumulation, vectorized per CPU level. */
#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static void axpy_avx512(int n, float a, const float *x, float *y)
{
    const __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    }
    for (; i < n; i++) {
        y[i] += a * x[i];
    }
}

__attribute__((target("avx2,fma"))) static void axpy_avx2(int n, float a, const float *x, float *y)
{
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    }
    for (; i < n; i++) {
        y[i] += a * x[i];
    }
}
#endif

static void axpy(int simd, int n, float a, const float *x, float *y)
{
#if defined(__x86_64__)
    if (simd >= 2) {
        axpy_avx512(n, a, x, y);
        return;
    }
    if (simd >= 1) {
        axpy_avx2(n, a, x, y);
        return;
    }
#endif
    for (int i = 0; i < n; i++) {
        y[i] += a * x[i];
    }
}

typedef struct {
    st_runner *r;
    int layer;
    int n_rows;
    float *out;     /* (n_rows, n_head * head_dim) */
} att_job;

/* One task = one query row and one KV head: the `group` query heads that
 * share that KV head read each K and V row once (GQA), converted to F32 once. */
static void att_task(void *arg, int ith, int nth)
{
    att_job *job = arg;
    st_runner *r = job->r;
    const st_hparams *hp = &r->model->hp;
    const int hd = hp->head_dim;
    const int kv_dim = hp->n_head_kv * hd;
    const int group = hp->n_head / hp->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    st_vec_dot_fn dot = st_vec_dot_get(ST_F32, r->simd);
    float *scores = r->att_scratch + (size_t)ith * att_scratch_floats(r);  /* (group, n_ctx_max) */
    float *row = scores + (size_t)group * r->n_ctx_max;                    /* (head_dim) */

    int64_t start, end;
    st_split_range((int64_t)job->n_rows * hp->n_head_kv, ith, nth, &start, &end);
    for (int64_t task = start; task < end; task++) {
        const int t = (int)(task / hp->n_head_kv);
        const int g = (int)(task % hp->n_head_kv);
        const strata_ctx *ctx = r->row_ctx[t];
        const st_kv_layer *kv = &ctx->kv[job->layer];
        const bool f16 = ctx->kv_type == ST_F16;
        const size_t esz = f16 ? 2 : 4;
        const int n_keys = r->row_pos[t] + 1; /* causal: keys 0..pos */
        const float *q = r->q + (size_t)t * hp->n_head * hd + (size_t)g * group * hd;
        float *o = job->out + (size_t)t * hp->n_head * hd + (size_t)g * group * hd;

        for (int j = 0; j < n_keys; j++) {
            const uint8_t *k = (const uint8_t *)kv->k + ((size_t)j * kv_dim + (size_t)g * hd) * esz;
            const float *kf = (const float *)k;
            if (f16) {
                st_fp16_to_fp32_row((const st_half *)k, row, hd);
                kf = row;
            }
            for (int h = 0; h < group; h++) {
                float sc;
                dot(hd, &sc, kf, q + (size_t)h * hd);
                scores[(size_t)h * r->n_ctx_max + j] = sc * scale;
            }
        }
        for (int h = 0; h < group; h++) {
            float *sh = scores + (size_t)h * r->n_ctx_max;
            float max = -INFINITY;
            for (int j = 0; j < n_keys; j++) {
                max = sh[j] > max ? sh[j] : max;
            }
            double sum = 0.0;
            for (int j = 0; j < n_keys; j++) {
                sh[j] = expf(sh[j] - max);
                sum += sh[j];
            }
            const float inv = (float)(1.0 / sum);
            for (int j = 0; j < n_keys; j++) {
                sh[j] *= inv;
            }
        }
        memset(o, 0, (size_t)group * hd * sizeof(float));
        for (int j = 0; j < n_keys; j++) {
            const uint8_t *v = (const uint8_t *)kv->v + ((size_t)j * kv_dim + (size_t)g * hd) * esz;
            const float *vf = (const float *)v;
            if (f16) {
                st_fp16_to_fp32_row((const st_half *)v, row, hd);
                vf = row;
            }
            for (int h = 0; h < group; h++) {
                axpy(r->simd, hd, scores[(size_t)h * r->n_ctx_max + j], vf, o + (size_t)h * hd);
            }
        }
    }
}

size_t st_kv_row_bytes(const strata_ctx *ctx)
{
    const st_hparams *hp = &ctx->model->hp;
    return (size_t)hp->n_head_kv * hp->head_dim * (ctx->kv_type == ST_F16 ? 2 : 4);
}

static void kv_store(st_runner *r, int layer, int n_rows)
{
    const st_hparams *hp = &r->model->hp;
    const int kv_dim = hp->n_head_kv * hp->head_dim;
    for (int t = 0; t < n_rows; t++) {
        strata_ctx *ctx = r->row_ctx[t];
        const size_t rb = st_kv_row_bytes(ctx);
        uint8_t *kd = (uint8_t *)ctx->kv[layer].k + (size_t)r->row_pos[t] * rb;
        uint8_t *vd = (uint8_t *)ctx->kv[layer].v + (size_t)r->row_pos[t] * rb;
        st_quantize_row(ctx->kv_type, r->k + (size_t)t * kv_dim, kd, kv_dim);
        st_quantize_row(ctx->kv_type, r->v + (size_t)t * kv_dim, vd, kv_dim);
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

static void attention_block(st_runner *r, const st_layer *l, int il, int n_rows)
{
    const st_hparams *hp = &r->model->hp;
    const int n_embd = hp->n_embd;
    const int hd = hp->head_dim;
    const int q_dim = hp->n_head * hd;
    const int kv_dim = hp->n_head_kv * hd;

    for (int t = 0; t < n_rows; t++) {
        rmsnorm(r->xn + (size_t)t * n_embd, r->x + (size_t)t * n_embd, l->attn_norm, n_embd, hp->rms_eps);
    }
    const st_weight *ws[3] = {&l->wq, &l->wk, &l->wv};
    float *ys[3] = {r->q, r->k, r->v};
    matmul_group(r, r->xn, n_rows, 3, ws, ys);
    add_bias(r->q, l->bq, n_rows, q_dim);
    add_bias(r->k, l->bk, n_rows, kv_dim);
    add_bias(r->v, l->bv, n_rows, kv_dim);

    for (int t = 0; t < n_rows; t++) {
        const float *cache = r->rope + (size_t)t * hp->n_rot;
        for (int h = 0; h < hp->n_head; h++) {
            float *qh = r->q + (size_t)t * q_dim + (size_t)h * hd;
            if (l->q_norm != NULL) {
                rmsnorm(qh, qh, l->q_norm, hd, hp->rms_eps);
            }
            rope_apply(hp->rope_kind, hp->n_rot, cache, qh);
        }
        for (int h = 0; h < hp->n_head_kv; h++) {
            float *kh = r->k + (size_t)t * kv_dim + (size_t)h * hd;
            if (l->k_norm != NULL) {
                rmsnorm(kh, kh, l->k_norm, hd, hp->rms_eps);
            }
            rope_apply(hp->rope_kind, hp->n_rot, cache, kh);
        }
    }
    kv_store(r, il, n_rows);

    att_job job = {.r = r, .layer = il, .n_rows = n_rows, .out = r->xn};
    st_pool_run(r->pool, att_task, &job);

    /* output projection into gate (free scratch), then residual add */
    matmul1(r, r->xn, n_rows, &l->wo, r->gate);
    for (size_t i = 0; i < (size_t)n_rows * n_embd; i++) {
        r->x[i] += r->gate[i];
    }
}

static void ffn_block(st_runner *r, const st_layer *l, int n_rows)
{
    const st_hparams *hp = &r->model->hp;
    const int n_embd = hp->n_embd;
    const int n_ff = hp->n_ff;

    for (int t = 0; t < n_rows; t++) {
        rmsnorm(r->xn + (size_t)t * n_embd, r->x + (size_t)t * n_embd, l->ffn_norm, n_embd, hp->rms_eps);
    }
    const st_weight *ws[2] = {&l->w_gate, &l->w_up};
    float *ys[2] = {r->gate, r->up};
    matmul_group(r, r->xn, n_rows, 2, ws, ys);
    for (size_t i = 0; i < (size_t)n_rows * n_ff; i++) {
        const float g = r->gate[i];
        r->gate[i] = g / (1.0f + expf(-g)) * r->up[i];
    }
    matmul1(r, r->gate, n_rows, &l->w_down, r->up);
    for (size_t i = 0; i < (size_t)n_rows * n_embd; i++) {
        r->x[i] += r->up[i];
    }
}

/* --------------------------------------------------------------- steps -- */

static strata_err check_batch(const st_runner *r, const st_batch_seq *seqs, int n_seqs, int *n_rows,
                              strata_error *err)
{
    const st_hparams *hp = &r->model->hp;
    int rows = 0;
    for (int s = 0; s < n_seqs; s++) {
        const strata_ctx *ctx = seqs[s].ctx;
        if (ctx == NULL || ctx->model != r->model || seqs[s].n <= 0 || seqs[s].toks == NULL) {
            return st_error(err, STRATA_ERR_ARG, "batch entry %d: needs a context of this model and tokens", s);
        }
        if (ctx->n_ctx > r->n_ctx_max) {
            return st_error(err, STRATA_ERR_INTERNAL, "context of %d tokens exceeds the runner's %d", ctx->n_ctx,
                            r->n_ctx_max);
        }
        if (ctx->n_past + seqs[s].n > ctx->n_ctx) {
            return st_error(err, STRATA_ERR_LIMIT,
                            "context is full: %d cached + %d new tokens exceed the context size %d", ctx->n_past,
                            seqs[s].n, ctx->n_ctx);
        }
        for (int j = 0; j < s; j++) {
            if (seqs[j].ctx == ctx) {
                return st_error(err, STRATA_ERR_ARG, "batch entries %d and %d share a context", j, s);
            }
        }
        for (int t = 0; t < seqs[s].n; t++) {
            if (seqs[s].toks[t] < 0 || seqs[s].toks[t] >= hp->n_vocab) {
                return st_error(err, STRATA_ERR_ARG, "token id %d is out of range (vocabulary has %d tokens)",
                                seqs[s].toks[t], hp->n_vocab);
            }
        }
        rows += seqs[s].n;
        if (rows > r->max_tokens) {
            return st_error(err, STRATA_ERR_LIMIT, "batch of %d+ tokens exceeds the step size of %d", rows,
                            r->max_tokens);
        }
    }
    *n_rows = rows;
    return STRATA_OK;
}

static bool wants_row(const st_batch_seq *q, int t)
{
    if (q->embd != NULL || (q->logits != NULL && q->all_logits)) {
        return true;
    }
    return q->logits != NULL && t == q->n - 1;
}

int st_batch_out_rows(const st_batch_seq *seqs, int n_seqs, int *idx)
{
    int n_out = 0, row = 0;
    for (int s = 0; s < n_seqs; s++) {
        for (int t = 0; t < seqs[s].n; t++, row++) {
            if (wants_row(&seqs[s], t)) {
                idx[n_out++] = row;
            }
        }
    }
    return n_out;
}

void st_batch_hand_back(st_batch_seq *seqs, int n_seqs, const float *embd_rows, const float *logit_rows, int n_embd,
                        int n_vocab)
{
    int i = 0;
    for (int s = 0; s < n_seqs; s++) {
        st_batch_seq *q = &seqs[s];
        for (int t = 0; t < q->n; t++) {
            if (!wants_row(q, t)) {
                continue;
            }
            if (q->embd != NULL) {
                memcpy(q->embd + (size_t)t * n_embd, embd_rows + (size_t)i * n_embd, (size_t)n_embd * sizeof(float));
            }
            if (q->logits != NULL && (q->all_logits || t == q->n - 1)) {
                float *dst = q->logits + (q->all_logits ? (size_t)t * n_vocab : 0);
                memcpy(dst, logit_rows + (size_t)i * n_vocab, (size_t)n_vocab * sizeof(float));
            }
            i++;
        }
    }
}

/* Final norm and output matmul for the rows that want logits or embeddings. */
static strata_err head_step(st_runner *r, const st_part_view *head, st_batch_seq *seqs, int n_seqs,
                            strata_error *err)
{
    const st_hparams *hp = &r->model->hp;
    const int n_embd = hp->n_embd;
    const int n_out = st_batch_out_rows(seqs, n_seqs, r->out_row_idx);
    if (n_out == 0) {
        return STRATA_OK;
    }
    for (int i = 0; i < n_out; i++) {
        const int src = r->out_row_idx[i];
        rmsnorm(r->xn + (size_t)i * n_embd, r->x + (size_t)src * n_embd, head->out_norm, n_embd, hp->rms_eps);
    }
    if (n_out > r->n_out_cap) {
        st_aligned_free(r->out_rows);
        r->out_rows = alloc_floats((size_t)n_out * hp->n_vocab);
        r->n_out_cap = r->out_rows ? n_out : 0;
        if (r->out_rows == NULL) {
            return st_error(err, STRATA_ERR_NOMEM, "out of memory for %d rows of logits", n_out);
        }
    }
    bool any_logits = false;
    for (int s = 0; s < n_seqs; s++) {
        any_logits = any_logits || seqs[s].logits != NULL;
    }
    if (any_logits) {
        matmul1(r, r->xn, n_out, &head->output, r->out_rows);
    }
    st_batch_hand_back(seqs, n_seqs, r->xn, r->out_rows, n_embd, hp->n_vocab);
    return STRATA_OK;
}

strata_err st_forward_batch(st_runner *r, const st_part_source *src, st_batch_seq *seqs, int n_seqs,
                            strata_error *err)
{
    const st_hparams *hp = &r->model->hp;
    int n_rows = 0;
    strata_err rc = check_batch(r, seqs, n_seqs, &n_rows, err);
    if (rc != STRATA_OK || n_rows == 0) {
        return rc;
    }
    if (r->gpu != NULL) {
        if ((rc = st_cuda_forward_batch(r->gpu, src, seqs, n_seqs, err)) != STRATA_OK) {
            return rc;
        }
        goto done;
    }
    /* stack rows: sequence, position, RoPE angles */
    int row = 0;
    for (int s = 0; s < n_seqs; s++) {
        for (int t = 0; t < seqs[s].n; t++, row++) {
            r->row_ctx[row] = seqs[s].ctx;
            r->row_pos[row] = seqs[s].ctx->n_past + t;
            st_rope_cache(hp, r->model->rope_freqs, r->row_pos[row], r->rope + (size_t)row * hp->n_rot);
        }
    }
    st_part_view view;
    if ((rc = src->acquire(src->user, ST_PART_EMBED, &view, err)) != STRATA_OK) {
        return rc;
    }
    const size_t row_bytes = st_row_bytes(view.tok_embd.type, hp->n_embd);
    row = 0;
    for (int s = 0; s < n_seqs; s++) {
        for (int t = 0; t < seqs[s].n; t++, row++) {
            const uint8_t *e = (const uint8_t *)view.tok_embd.data + (size_t)seqs[s].toks[t] * row_bytes;
            st_dequant_row(view.tok_embd.type, e, r->x + (size_t)row * hp->n_embd, hp->n_embd);
        }
    }
    src->release(src->user, ST_PART_EMBED);
    for (int il = 0; il < hp->n_layers; il++) {
        if ((rc = src->acquire(src->user, il, &view, err)) != STRATA_OK) {
            return rc;
        }
        attention_block(r, view.layer, il, n_rows);
        ffn_block(r, view.layer, n_rows);
        src->release(src->user, il);
    }
    if ((rc = src->acquire(src->user, ST_PART_HEAD(hp->n_layers), &view, err)) != STRATA_OK) {
        return rc;
    }
    rc = head_step(r, &view, seqs, n_seqs, err);
    src->release(src->user, ST_PART_HEAD(hp->n_layers));
    if (rc != STRATA_OK) {
        return rc;
    }
done:
    for (int s = 0; s < n_seqs; s++) {
        strata_ctx *ctx = seqs[s].ctx;
        memcpy(ctx->history + ctx->n_past, seqs[s].toks, (size_t)seqs[s].n * sizeof(strata_token));
        ctx->n_past += seqs[s].n;
    }
    return STRATA_OK;
}

strata_err st_forward(strata_ctx *ctx, const strata_token *toks, int n, float *logits, strata_error *err)
{
    if (ctx->runner == NULL) {
        return st_error(err, STRATA_ERR_INTERNAL, "this context has no runner of its own");
    }
    st_batch_seq seq = {.ctx = ctx, .toks = toks, .n = n, .logits = logits};
    return st_forward_batch(ctx->runner, &ctx->model->source, &seq, 1, err);
}

/* ------------------------------------------------------ resident source -- */

static strata_err resident_acquire(void *user, int part, st_part_view *view, strata_error *err)
{
    const strata_model *m = user;
    memset(view, 0, sizeof(*view));
    if (part == ST_PART_EMBED) {
        view->tok_embd = m->tok_embd;
    } else if (part == ST_PART_HEAD(m->hp.n_layers)) {
        view->out_norm = m->out_norm;
        view->output = m->output;
    } else if (part >= 0 && part < m->hp.n_layers) {
        view->layer = &m->layers[part];
    } else {
        return st_error(err, STRATA_ERR_INTERNAL, "no weight part %d", part);
    }
    return STRATA_OK;
}

static void resident_release(void *user, int part)
{
    (void)user;
    (void)part;
}

void st_part_source_resident(strata_model *m, st_part_source *out)
{
    out->user = m;
    out->acquire = resident_acquire;
    out->release = resident_release;
    out->hold = NULL;
}
