/* Public glue: tokenizer and chat-template entry points on a model, and the
 * generation loop (prefix reuse, sampling, streaming text, stop conditions). */
#include "chat.h"
#include "forward.h"
#include "sampler.h"
#include "textout.h"

#include <stdlib.h>
#include <string.h>

strata_err strata_tokenize(const strata_model *model, const char *text, size_t len, bool add_bos,
                           bool parse_special, strata_token *out, size_t cap, size_t *n_out, strata_error *err)
{
    if (model == NULL || (text == NULL && len > 0) || n_out == NULL) {
        return st_error(err, STRATA_ERR_ARG, "model, text and n_out must not be NULL");
    }
    return st_tokenize(model->tok, text, len, add_bos, parse_special, out, cap, n_out, err);
}

int strata_token_to_piece(const strata_model *model, strata_token tok, char *buf, size_t cap, bool render_special)
{
    return st_token_to_piece(model->tok, tok, buf, cap, render_special);
}

strata_err strata_detokenize(const strata_model *model, const strata_token *toks, size_t n, bool render_special,
                             char **out, strata_error *err)
{
    if (model == NULL || out == NULL || (toks == NULL && n > 0)) {
        return st_error(err, STRATA_ERR_ARG, "model, tokens and output must not be NULL");
    }
    size_t len;
    return st_detokenize(model->tok, toks, n, render_special, out, &len, err);
}

bool strata_token_is_eog(const strata_model *model, strata_token tok)
{
    return st_token_is_eog(model->tok, tok);
}

strata_err strata_chat_apply(const strata_model *model, const char *template_name, const strata_chat_message *msgs,
                             size_t n, bool add_generation_prompt, char **out, strata_error *err)
{
    if (model == NULL || out == NULL || (msgs == NULL && n > 0)) {
        return st_error(err, STRATA_ERR_ARG, "model, messages and output must not be NULL");
    }
    const char *name = template_name != NULL && template_name[0] != '\0' ? template_name : model->chat_template;
    return st_chat_apply(name, st_tokenizer_chat_template(model->tok), msgs, n, add_generation_prompt, out, err);
}

/* ------------------------------------------------------------ generation -- */

void strata_generate_params_default(strata_generate_params *p)
{
    memset(p, 0, sizeof(*p));
    strata_sampler_params_default(&p->sampling);
    p->max_tokens = 256;
}

void strata_generate_result_free(strata_generate_result *res)
{
    if (res != NULL) {
        free(res->text);
        res->text = NULL;
    }
}

typedef struct {
    const strata_generate_params *p;
    bool stop_requested;
} emit_state;

static bool emit_piece(const char *piece, size_t len, void *user)
{
    emit_state *st = user;
    if (st->p->on_piece != NULL && len > 0 && !st->p->on_piece(piece, len, st->p->user)) {
        st->stop_requested = true;
        return false;
    }
    return true;
}

static bool cancelled(const strata_generate_params *p)
{
    return p->cancel != NULL && *p->cancel != 0;
}

/* Evaluate prompt tokens after the longest prefix already in the cache. */
static strata_err eval_prompt(strata_ctx *ctx, const strata_token *prompt, size_t n, const strata_generate_params *p,
                              strata_error *err)
{
    size_t common = 0;
    while (common < n && common < (size_t)ctx->n_past && ctx->history[common] == prompt[common]) {
        common++;
    }
    if (common == n) {
        common = n - 1; /* need at least one token evaluated to get logits */
    }
    strata_ctx_truncate(ctx, (int)common);
    return st_eval_chunks(ctx, prompt + common, n - common, ctx->logits, p->cancel, err);
}

strata_err strata_generate(strata_ctx *ctx, const strata_token *prompt, size_t n_prompt,
                           const strata_generate_params *p, strata_generate_result *res, strata_error *err)
{
    strata_generate_params defaults;
    if (ctx == NULL || res == NULL || (prompt == NULL && n_prompt > 0)) {
        return st_error(err, STRATA_ERR_ARG, "context, prompt and result must not be NULL");
    }
    memset(res, 0, sizeof(*res));
    if (n_prompt == 0) {
        return st_error(err, STRATA_ERR_ARG, "the prompt is empty: give at least one token");
    }
    if (p == NULL) {
        strata_generate_params_default(&defaults);
        p = &defaults;
    }
    const strata_model *m = ctx->model;
    res->n_prompt_tokens = n_prompt;

    strata_sampler *smp = NULL;
    strata_err rc = strata_sampler_new(m, &p->sampling, &smp, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    st_textout out;
    rc = st_textout_init(&out, p->stop, p->n_stop, err);
    if (rc != STRATA_OK) {
        strata_sampler_free(smp);
        return rc;
    }
    /* repetition penalties see the prompt, as llama.cpp's do */
    for (size_t i = 0; i < n_prompt; i++) {
        st_sampler_accept_history(smp, prompt[i]);
    }

    double t0 = st_now_ms();
    rc = eval_prompt(ctx, prompt, n_prompt, p, err);
    double t1 = st_now_ms();
    res->prompt_ms = t1 - t0;
    emit_state es = {.p = p};
    if (rc == STRATA_ERR_CANCELLED) {
        res->stop = STRATA_STOP_CANCELLED;
        rc = STRATA_OK;
        goto done;
    }
    if (rc != STRATA_OK) {
        goto done;
    }

    int max_tokens = p->max_tokens > 0 ? p->max_tokens : ctx->n_ctx;
    res->stop = STRATA_STOP_NONE;
    while (res->stop == STRATA_STOP_NONE) {
        if (cancelled(p)) {
            res->stop = STRATA_STOP_CANCELLED;
            break;
        }
        strata_token tok = strata_sampler_sample(smp, ctx->logits);
        strata_sampler_accept(smp, tok);
        if (st_token_is_eog(m->tok, tok)) {
            res->stop = STRATA_STOP_EOG;
            break;
        }
        res->n_gen_tokens++;
        size_t len;
        const char *bytes = st_token_bytes(m->tok, tok, &len);
        if (st_textout_push(&out, bytes, len, emit_piece, &es)) {
            res->stop = STRATA_STOP_STRING;
            break;
        }
        if (es.stop_requested) {
            res->stop = STRATA_STOP_CALLBACK;
            break;
        }
        if (p->sampling.json && strata_sampler_done(smp)) {
            res->stop = STRATA_STOP_JSON;
            break;
        }
        if ((int)res->n_gen_tokens >= max_tokens) {
            res->stop = STRATA_STOP_MAX_TOKENS;
            break;
        }
        if (ctx->n_past >= ctx->n_ctx) {
            res->stop = STRATA_STOP_CONTEXT;
            break;
        }
        rc = st_forward(ctx, &tok, 1, ctx->logits, err);
        if (rc != STRATA_OK) {
            break;
        }
    }
    if (rc == STRATA_OK && res->stop != STRATA_STOP_STRING) {
        st_textout_finish(&out, emit_piece, &es);
    }
done:
    res->gen_ms = st_now_ms() - t1;
    if (rc == STRATA_OK) {
        res->text = st_textout_take(&out);
        if (res->text == NULL) {
            rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
        }
    }
    st_textout_free(&out);
    strata_sampler_free(smp);
    return rc;
}
