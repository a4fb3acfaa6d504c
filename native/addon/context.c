/* Node-API addon: contexts, eval and generate. Eval and generate run on the
 * libuv thread pool; a context runs one of them at a time (busy flag), and
 * is never freed while one runs: freeContext() then cancels it and the
 * completion frees the context. */
#include "addon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ context -- */

/* Free the engine context and let go of the model (JS thread, ctx idle). */
static void ctx_release(napi_env env, addon_ctx *c)
{
    if (c->ctx != NULL) {
        strata_ctx_free(c->ctx);
        c->ctx = NULL;
    }
    if (c->owner_ref != NULL) {
        napi_delete_reference(env, c->owner_ref);
        c->owner_ref = NULL;
    }
    if (c->owner != NULL) {
        addon_model_unuse(c->owner);
        c->owner = NULL;
    }
}

static void ctx_finalize(napi_env env, void *data, void *hint)
{
    (void)hint;
    addon_ctx *c = data;
    c->collected = true;
    c->closed = true;
    if (c->busy) {
        /* Environment teardown with work in flight: the completion (if it
         * ever runs) frees everything. */
        if (c->cancel != NULL) {
            *c->cancel = 1;
        }
        return;
    }
    ctx_release(env, c);
    free(c);
}

/* Called by every completion once the engine is done with the context. */
static void ctx_idle(napi_env env, addon_ctx *c)
{
    c->busy = false;
    c->cancel = NULL;
    if (c->closed) {
        ctx_release(env, c);
    }
    if (c->collected) {
        free(c);
    }
}

/* createContext(model, {contextSize, batch, threads, kvF32}) -> External */
static napi_value create_context(napi_env env, napi_callback_info info)
{
    napi_value argv[2];
    addon_model *m;
    bool has_opts;
    strata_ctx_params p;
    strata_ctx_params_default(&p);
    if (!addon_args(env, info, 2, argv) || !addon_unwrap_open_model(env, argv[0], &m) ||
        !addon_check_options(env, argv[1], "createContext", &has_opts) ||
        !addon_opt_int(env, argv[1], "contextSize", 0, 1 << 24, &p.n_ctx) ||
        !addon_opt_int(env, argv[1], "batch", 0, 1 << 20, &p.n_batch) ||
        !addon_opt_int(env, argv[1], "threads", 0, 4096, &p.n_threads) ||
        !addon_opt_bool(env, argv[1], "kvF32", &p.kv_f32)) {
        return NULL;
    }
    strata_ctx *ctx = NULL;
    strata_error err = {0};
    strata_err rc = strata_ctx_new(m->model, &p, &ctx, &err);
    if (rc != STRATA_OK) {
        addon_throw_strata(env, rc, &err);
        return NULL;
    }
    addon_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        strata_ctx_free(ctx);
        addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory");
        return NULL;
    }
    c->ctx = ctx;
    c->owner = m;
    c->n_vocab = m->info.n_vocab;
    addon_model_use(m);
    napi_value ext;
    napi_status st = napi_create_external(env, c, ctx_finalize, NULL, &ext);
    if (st != napi_ok) {
        ctx_release(env, c);
        free(c);
        addon_throw_napi(env, st, "napi_create_external");
        return NULL;
    }
    /* From here on the finalizer owns c. */
    ADDON_CALL(env, napi_create_reference(env, argv[0], 1, &c->owner_ref));
    if (!addon_tag(env, ext, &addon_ctx_tag)) {
        return NULL;
    }
    return ext;
}

/* Unwrap a context usable for a new operation. */
static bool usable_ctx(napi_env env, napi_value v, const char *fn, addon_ctx **out)
{
    if (!addon_unwrap_ctx(env, v, out)) {
        return false;
    }
    addon_ctx *c = *out;
    if (c->closed || c->ctx == NULL) {
        return addon_throw_state(env, "STRATA_ERR_CLOSED", "%s: the context is freed", fn);
    }
    if (c->owner == NULL || c->owner->closed) {
        return addon_throw_state(env, "STRATA_ERR_CLOSED", "%s: the model is closed", fn);
    }
    if (c->busy) {
        return addon_throw_state(env, "STRATA_ERR_BUSY",
                                 "%s: the context is busy with another eval/generate; "
                                 "wait for it (one operation per context at a time)",
                                 fn);
    }
    return true;
}

/* freeContext(ctx): safe twice; cancels and defers when busy. */
static napi_value free_context(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    addon_ctx *c;
    if (!addon_args(env, info, 1, argv) || !addon_unwrap_ctx(env, argv[0], &c)) {
        return NULL;
    }
    if (c->closed) {
        return NULL;
    }
    c->closed = true;
    if (c->busy) {
        if (c->cancel != NULL) {
            *c->cancel = 1;
        }
        return NULL;
    }
    ctx_release(env, c);
    return NULL;
}

/* nPast(ctx) -> number */
static napi_value n_past(napi_env env, napi_callback_info info)
{
    napi_value argv[1], result;
    addon_ctx *c;
    if (!addon_args(env, info, 1, argv) || !usable_ctx(env, argv[0], "nPast", &c)) {
        return NULL;
    }
    ADDON_CALL(env, napi_create_int32(env, strata_ctx_n_past(c->ctx), &result));
    return result;
}

/* nCtx(ctx) -> number */
static napi_value n_ctx(napi_env env, napi_callback_info info)
{
    napi_value argv[1], result;
    addon_ctx *c;
    if (!addon_args(env, info, 1, argv) || !usable_ctx(env, argv[0], "nCtx", &c)) {
        return NULL;
    }
    ADDON_CALL(env, napi_create_int32(env, strata_ctx_n_ctx(c->ctx), &result));
    return result;
}

/* truncate(ctx, nPast) */
static napi_value truncate_ctx(napi_env env, napi_callback_info info)
{
    napi_value argv[2];
    addon_ctx *c;
    napi_valuetype t;
    double d = 0;
    if (!addon_args(env, info, 2, argv) || !usable_ctx(env, argv[0], "truncate", &c)) {
        return NULL;
    }
    ADDON_CALL(env, napi_typeof(env, argv[1], &t));
    if (t != napi_number) {
        addon_throw_type(env, "truncate: nPast must be a number");
        return NULL;
    }
    ADDON_CALL(env, napi_get_value_double(env, argv[1], &d));
    if (d != (double)(int)d || d < 0) {
        addon_throw_range(env, "truncate: nPast must be a non-negative integer (got %g)", d);
        return NULL;
    }
    strata_ctx_truncate(c->ctx, (int)d);
    return NULL;
}

/* Shared by eval and generate: promise + async work on a context. The work
 * keeps the context's JS handle alive. */
typedef struct ctx_work {
    napi_async_work work;
    napi_deferred deferred;
    addon_ctx *c;
    napi_ref ctx_ref;
    volatile int cancel;      /* polled by the engine */
    addon_cancel_link link;   /* membership in a cancel token */
    napi_ref token_ref;       /* keeps that token alive */
    strata_err status;
    strata_error err;
} ctx_work;

static bool ctx_work_start(napi_env env, ctx_work *w, addon_ctx *c, napi_value ctx_value,
                           const char *name, napi_async_execute_callback execute,
                           napi_async_complete_callback complete, napi_value *promise)
{
    napi_value name_v;
    /* Everything the worker reads is set before the work is queued. */
    w->c = c;
    ADDON_CHECK(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &name_v));
    ADDON_CHECK(env, napi_create_async_work(env, NULL, name_v, execute, complete, w, &w->work));
    napi_status st = napi_create_reference(env, ctx_value, 1, &w->ctx_ref);
    if (st == napi_ok) {
        st = napi_create_promise(env, &w->deferred, promise);
    }
    if (st == napi_ok) {
        st = napi_queue_async_work(env, w->work);
    }
    if (st != napi_ok) {
        napi_delete_async_work(env, w->work);
        w->work = NULL;
        if (w->ctx_ref != NULL) {
            napi_delete_reference(env, w->ctx_ref);
            w->ctx_ref = NULL;
        }
        return addon_throw_napi(env, st, "queueing async work");
    }
    c->busy = true;
    c->cancel = &w->cancel;
    addon_model_use(c->owner);
    return true;
}

/* First half of every completion: the context is idle again. */
static void ctx_work_finish(napi_env env, ctx_work *w)
{
    addon_token_unlink(&w->link);
    if (w->token_ref != NULL) {
        napi_delete_reference(env, w->token_ref);
        w->token_ref = NULL;
    }
    if (w->ctx_ref != NULL) {
        napi_delete_reference(env, w->ctx_ref);
        w->ctx_ref = NULL;
    }
    napi_delete_async_work(env, w->work);
    w->work = NULL;
    addon_model *owner = w->c->owner;
    ctx_idle(env, w->c);
    w->c = NULL;
    addon_model_unuse(owner);
}

/* Reject with the pending exception (a napi failure while building a result). */
static void reject_pending(napi_env env, napi_deferred deferred)
{
    napi_value error = NULL;
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
        napi_get_and_clear_last_exception(env, &error);
    } else {
        strata_error e = {STRATA_ERR_INTERNAL, "strata addon: failed to build the result"};
        error = addon_strata_error(env, STRATA_ERR_INTERNAL, &e);
    }
    napi_reject_deferred(env, deferred, error);
}

/* --------------------------------------------------------------- eval -- */

typedef struct eval_work {
    ctx_work base;
    strata_token *toks;   /* (n) */
    size_t n;
    float *logits;        /* (n_vocab) or NULL when not asked for */
    int n_vocab;
} eval_work;

static void eval_execute(napi_env env, void *data)
{
    (void)env;
    eval_work *w = data;
    if (w->base.cancel) {
        w->base.status = STRATA_ERR_CANCELLED;
        return;
    }
    w->base.status = strata_eval(w->base.c->ctx, w->toks, w->n, w->logits, &w->base.err);
}

static void eval_complete(napi_env env, napi_status status, void *data)
{
    eval_work *w = data;
    ctx_work_finish(env, &w->base);
    if (status == napi_ok) {
        if (w->base.status != STRATA_OK) {
            napi_reject_deferred(env, w->base.deferred,
                                 addon_strata_error(env, w->base.status, &w->base.err));
        } else {
            napi_value result = NULL, ab;
            void *buf = NULL;
            if (w->logits == NULL) {
                napi_get_undefined(env, &result);
            } else if (napi_create_arraybuffer(env, (size_t)w->n_vocab * sizeof(float), &buf, &ab) == napi_ok &&
                       napi_create_typedarray(env, napi_float32_array, (size_t)w->n_vocab, ab, 0, &result) == napi_ok) {
                memcpy(buf, w->logits, (size_t)w->n_vocab * sizeof(float));
            } else {
                result = NULL;
            }
            if (result != NULL) {
                napi_resolve_deferred(env, w->base.deferred, result);
            } else {
                reject_pending(env, w->base.deferred);
            }
        }
    }
    free(w->toks);
    free(w->logits);
    free(w);
}

/* eval(ctx, tokens, {logits}) -> Promise<Float32Array|undefined> */
static napi_value eval(napi_env env, napi_callback_info info)
{
    napi_value argv[3];
    addon_ctx *c;
    bool has_opts, want_logits = true;
    if (!addon_args(env, info, 3, argv) || !usable_ctx(env, argv[0], "eval", &c) ||
        !addon_check_options(env, argv[2], "eval", &has_opts) ||
        !addon_opt_bool(env, argv[2], "logits", &want_logits)) {
        return NULL;
    }
    eval_work *w = calloc(1, sizeof *w);
    if (w == NULL) {
        addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory");
        return NULL;
    }
    w->n_vocab = c->n_vocab;
    if (!addon_tokens(env, argv[1], "eval: tokens", c->n_vocab, &w->toks, &w->n)) {
        free(w);
        return NULL;
    }
    if (want_logits) {
        w->logits = malloc((size_t)(c->n_vocab > 0 ? c->n_vocab : 1) * sizeof(float));
        if (w->logits == NULL) {
            free(w->toks);
            free(w);
            addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory for logits");
            return NULL;
        }
    }
    napi_value promise;
    if (!ctx_work_start(env, &w->base, c, argv[0], "strata.eval", eval_execute, eval_complete, &promise)) {
        free(w->toks);
        free(w->logits);
        free(w);
        return NULL;
    }
    return promise;
}

/* ----------------------------------------------------------- generate -- */

typedef struct gen_work {
    ctx_work base;
    strata_token *prompt;            /* (n_prompt) */
    size_t n_prompt;
    strata_generate_params params;
    char **stop;                     /* (n_stop) malloc'd strings */
    size_t n_stop;
    napi_threadsafe_function tsfn;   /* delivers pieces to onPiece, or NULL */
    volatile int stop_requested;     /* onPiece returned false or threw */
    napi_ref callback_error;         /* what onPiece threw */
    char *text;                      /* pieces so far: the partial text on cancel */
    size_t text_len, text_cap;
    bool text_nomem;
    strata_generate_result res;
    bool env_ok;                     /* the completion ran with napi_ok */
} gen_work;

typedef struct piece_msg {
    size_t len;
    char data[];
} piece_msg;

/* Worker thread: keep the text, forward the piece to JS, never block. */
static bool on_piece(const char *piece, size_t len, void *user)
{
    gen_work *w = user;
    if (!w->text_nomem && w->text_len + len + 1 > w->text_cap) {
        size_t cap = w->text_cap > 0 ? w->text_cap : 256;
        while (cap < w->text_len + len + 1) {
            cap *= 2;
        }
        char *grown = realloc(w->text, cap);
        if (grown == NULL) {
            w->text_nomem = true;
        } else {
            w->text = grown;
            w->text_cap = cap;
        }
    }
    if (!w->text_nomem) {
        memcpy(w->text + w->text_len, piece, len);
        w->text_len += len;
        w->text[w->text_len] = '\0';
    }
    if (w->tsfn != NULL && len > 0 && !w->stop_requested) {
        piece_msg *msg = malloc(sizeof *msg + len);
        if (msg != NULL) {
            msg->len = len;
            memcpy(msg->data, piece, len);
            if (napi_call_threadsafe_function(w->tsfn, msg, napi_tsfn_nonblocking) != napi_ok) {
                free(msg);
            }
        }
    }
    return !w->stop_requested;
}

/* JS thread: call onPiece(text). */
static void call_on_piece(napi_env env, napi_value js_cb, void *context, void *data)
{
    gen_work *w = context;
    piece_msg *msg = data;
    if (env == NULL || js_cb == NULL || w->stop_requested) {
        free(msg);
        return;
    }
    napi_value str, undef, ret = NULL;
    napi_status st = napi_create_string_utf8(env, msg->data, msg->len, &str);
    free(msg);
    if (st != napi_ok) {
        return;
    }
    napi_get_undefined(env, &undef);
    st = napi_call_function(env, undef, js_cb, 1, &str, &ret);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
        napi_value error;
        if (napi_get_and_clear_last_exception(env, &error) == napi_ok && w->callback_error == NULL) {
            napi_create_reference(env, error, 1, &w->callback_error);
        }
        w->stop_requested = 1;
        return;
    }
    if (st == napi_ok && ret != NULL) {
        napi_valuetype t;
        bool b = true;
        if (napi_typeof(env, ret, &t) == napi_ok && t == napi_boolean &&
            napi_get_value_bool(env, ret, &b) == napi_ok && !b) {
            w->stop_requested = 1;
        }
    }
}

static void gen_execute(napi_env env, void *data)
{
    (void)env;
    gen_work *w = data;
    w->params.on_piece = on_piece;
    w->params.user = w;
    w->params.cancel = &w->base.cancel;
    w->params.stop = (const char *const *)w->stop;
    w->params.n_stop = w->n_stop;
    if (w->base.cancel) {
        w->base.status = STRATA_ERR_CANCELLED;
        return;
    }
    w->base.status = strata_generate(w->base.c->ctx, w->prompt, w->n_prompt, &w->params, &w->res,
                                     &w->base.err);
}

static void gen_free(gen_work *w)
{
    free(w->prompt);
    for (size_t i = 0; i < w->n_stop; i++) {
        free(w->stop[i]);
    }
    free(w->stop);
    free(w->text);
    strata_generate_result_free(&w->res);
    free(w);
}

/* Resolve or reject the generate promise (JS thread, after every piece has
 * been delivered). */
static void gen_settle(napi_env env, gen_work *w)
{
    if (w->callback_error != NULL) {
        napi_value error = NULL;
        napi_get_reference_value(env, w->callback_error, &error);
        napi_delete_reference(env, w->callback_error);
        w->callback_error = NULL;
        napi_reject_deferred(env, w->base.deferred, error);
        return;
    }
    strata_err status = w->base.status;
    if (status != STRATA_OK && status != STRATA_ERR_CANCELLED) {
        napi_reject_deferred(env, w->base.deferred, addon_strata_error(env, status, &w->base.err));
        return;
    }
    bool cancelled = status == STRATA_ERR_CANCELLED || w->res.stop == STRATA_STOP_CANCELLED;
    const char *text = w->res.text;
    if (text == NULL || (cancelled && w->text != NULL && strlen(text) < w->text_len)) {
        text = w->text != NULL ? w->text : "";
    }
    napi_value o = NULL;
    bool ok = napi_create_object(env, &o) == napi_ok && addon_set_string(env, o, "text", text) &&
              addon_set_double(env, o, "promptTokens", (double)w->res.n_prompt_tokens) &&
              addon_set_double(env, o, "genTokens", (double)w->res.n_gen_tokens) &&
              addon_set_string(env, o, "stopReason", cancelled ? "cancelled" : strata_stop_name(w->res.stop)) &&
              addon_set_double(env, o, "promptMs", w->res.prompt_ms) &&
              addon_set_double(env, o, "genMs", w->res.gen_ms);
    if (ok) {
        napi_resolve_deferred(env, w->base.deferred, o);
    } else {
        reject_pending(env, w->base.deferred);
    }
}

/* The thread-safe function is gone: its queue was drained, so every piece
 * reached onPiece before the promise settles. */
static void gen_tsfn_finalize(napi_env env, void *data, void *hint)
{
    (void)hint;
    gen_work *w = data;
    if (env != NULL && w->env_ok) {
        gen_settle(env, w);
    } else if (w->callback_error != NULL && env != NULL) {
        napi_delete_reference(env, w->callback_error);
    }
    gen_free(w);
}

static void gen_complete(napi_env env, napi_status status, void *data)
{
    gen_work *w = data;
    ctx_work_finish(env, &w->base);
    w->env_ok = status == napi_ok;
    if (w->tsfn != NULL) {
        napi_threadsafe_function tsfn = w->tsfn;
        w->tsfn = NULL; /* the worker is done; nothing else will call it */
        napi_release_threadsafe_function(tsfn, napi_tsfn_release);
        return; /* gen_tsfn_finalize settles and frees */
    }
    if (w->env_ok) {
        gen_settle(env, w);
    }
    gen_free(w);
}

static bool parse_stop(napi_env env, napi_value opts, gen_work *w)
{
    napi_value v;
    bool present = false, is_array = false;
    if (!addon_opt_get(env, opts, "stop", &v, &present)) {
        return false;
    }
    if (!present) {
        return true;
    }
    ADDON_CHECK(env, napi_is_array(env, v, &is_array));
    if (!is_array) {
        return addon_throw_type(env, "option 'stop' must be an array of strings");
    }
    uint32_t n = 0;
    ADDON_CHECK(env, napi_get_array_length(env, v, &n));
    if (n > 256) {
        return addon_throw_range(env, "option 'stop' has %u strings (at most 256)", n);
    }
    w->stop = calloc(n > 0 ? n : 1, sizeof *w->stop);
    if (w->stop == NULL) {
        return addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory");
    }
    for (uint32_t i = 0; i < n; i++) {
        napi_value e;
        char what[48];
        size_t len = 0;
        ADDON_CHECK(env, napi_get_element(env, v, i, &e));
        snprintf(what, sizeof what, "stop[%u]", i);
        if (!addon_string(env, e, what, &w->stop[i], &len)) {
            return false;
        }
        w->n_stop = i + 1;
        if (len == 0) {
            return addon_throw_range(env, "stop[%u] must not be empty", i);
        }
    }
    return true;
}

static bool parse_seed(napi_env env, napi_value opts, uint64_t *seed)
{
    napi_value v;
    bool present = false;
    if (!addon_opt_get(env, opts, "seed", &v, &present)) {
        return false;
    }
    if (!present) {
        return true;
    }
    napi_valuetype t;
    ADDON_CHECK(env, napi_typeof(env, v, &t));
    if (t == napi_bigint) {
        bool lossless = false;
        ADDON_CHECK(env, napi_get_value_bigint_uint64(env, v, seed, &lossless));
        if (!lossless) {
            return addon_throw_range(env, "option 'seed' must fit in 64 unsigned bits");
        }
        return true;
    }
    if (t != napi_number) {
        return addon_throw_type(env, "option 'seed' must be a number or a bigint");
    }
    double d = 0;
    ADDON_CHECK(env, napi_get_value_double(env, v, &d));
    if (d != d || d < 0 || d > 9007199254740991.0 || d != (double)(uint64_t)d) {
        return addon_throw_range(env, "option 'seed' must be a non-negative integer (got %g)", d);
    }
    *seed = (uint64_t)d;
    return true;
}

static bool parse_sampling(napi_env env, napi_value opts, strata_generate_params *p)
{
    strata_sampler_params *s = &p->sampling;
    double temperature = s->temperature, top_p = s->top_p, min_p = s->min_p;
    double repeat_penalty = s->repeat_penalty, presence = s->presence_penalty;
    double frequency = s->frequency_penalty;
    if (!addon_opt_int(env, opts, "maxTokens", -1, 1 << 24, &p->max_tokens) ||
        !addon_opt_double(env, opts, "temperature", 0, 1e6, &temperature) ||
        !addon_opt_int(env, opts, "topK", 0, 1 << 24, &s->top_k) ||
        !addon_opt_double(env, opts, "topP", 0, 1, &top_p) ||
        !addon_opt_double(env, opts, "minP", 0, 1, &min_p) ||
        !addon_opt_double(env, opts, "repeatPenalty", 0, 1e6, &repeat_penalty) ||
        !addon_opt_int(env, opts, "repeatLastN", 0, 1 << 24, &s->repeat_last_n) ||
        !addon_opt_double(env, opts, "presencePenalty", -1e6, 1e6, &presence) ||
        !addon_opt_double(env, opts, "frequencyPenalty", -1e6, 1e6, &frequency) ||
        !parse_seed(env, opts, &s->seed) || !addon_opt_bool(env, opts, "json", &s->json)) {
        return false;
    }
    s->temperature = (float)temperature;
    s->top_p = (float)top_p;
    s->min_p = (float)min_p;
    s->repeat_penalty = (float)repeat_penalty;
    s->presence_penalty = (float)presence;
    s->frequency_penalty = (float)frequency;
    return true;
}

/* generate(ctx, promptTokens, opts, onPiece?) -> Promise<result>
 * opts: sampling options, maxTokens, stop, cancelToken. */
static napi_value generate(napi_env env, napi_callback_info info)
{
    napi_value argv[4];
    addon_ctx *c;
    bool has_opts;
    if (!addon_args(env, info, 4, argv) || !usable_ctx(env, argv[0], "generate", &c) ||
        !addon_check_options(env, argv[2], "generate", &has_opts)) {
        return NULL;
    }
    napi_valuetype cb_type = napi_undefined;
    ADDON_CALL(env, napi_typeof(env, argv[3], &cb_type));
    if (cb_type != napi_undefined && cb_type != napi_null && cb_type != napi_function) {
        addon_throw_type(env, "generate: onPiece must be a function");
        return NULL;
    }
    gen_work *w = calloc(1, sizeof *w);
    if (w == NULL) {
        addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory");
        return NULL;
    }
    strata_generate_params_default(&w->params);
    napi_value token_v;
    bool has_token = false;
    addon_cancel_token *token = NULL;
    if (!addon_tokens(env, argv[1], "generate: prompt tokens", c->n_vocab, &w->prompt, &w->n_prompt) ||
        !parse_sampling(env, argv[2], &w->params) || !parse_stop(env, argv[2], w) ||
        !addon_opt_get(env, argv[2], "cancelToken", &token_v, &has_token) ||
        (has_token && !addon_unwrap_token(env, token_v, &token))) {
        gen_free(w);
        return NULL;
    }
    if (w->n_prompt == 0) {
        gen_free(w);
        addon_throw_range(env, "generate: the prompt needs at least one token");
        return NULL;
    }
    if (cb_type == napi_function) {
        napi_value name;
        napi_status st = napi_create_string_utf8(env, "strata.onPiece", NAPI_AUTO_LENGTH, &name);
        if (st == napi_ok) {
            st = napi_create_threadsafe_function(env, argv[3], NULL, name, 0, 1, w, gen_tsfn_finalize,
                                                 w, call_on_piece, &w->tsfn);
        }
        if (st != napi_ok) {
            gen_free(w);
            addon_throw_napi(env, st, "napi_create_threadsafe_function");
            return NULL;
        }
    }
    if (token != NULL) {
        napi_status st = napi_create_reference(env, token_v, 1, &w->base.token_ref);
        if (st != napi_ok) {
            token = NULL;
        }
    }
    napi_value promise;
    if (!ctx_work_start(env, &w->base, c, argv[0], "strata.generate", gen_execute, gen_complete,
                        &promise)) {
        if (w->base.token_ref != NULL) {
            napi_delete_reference(env, w->base.token_ref);
            w->base.token_ref = NULL;
        }
        if (w->tsfn != NULL) {
            /* Its finalizer frees w; nothing to settle (env_ok is false). */
            napi_release_threadsafe_function(w->tsfn, napi_tsfn_abort);
        } else {
            gen_free(w);
        }
        return NULL;
    }
    if (token != NULL) {
        addon_token_link(token, &w->base.link, &w->base.cancel);
    }
    return promise;
}

bool addon_register_context(napi_env env, napi_value exports)
{
    return addon_define(env, exports, "createContext", create_context) &&
           addon_define(env, exports, "freeContext", free_context) &&
           addon_define(env, exports, "nPast", n_past) && addon_define(env, exports, "nCtx", n_ctx) &&
           addon_define(env, exports, "truncate", truncate_ctx) &&
           addon_define(env, exports, "eval", eval) && addon_define(env, exports, "generate", generate);
}
