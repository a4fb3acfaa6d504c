/* Node-API addon: module registration, argument and error helpers, handle
 * type tags and cancel tokens. See addon.h for the threading rules.
 *
 * Exports (node/lib/index.js wraps them; handles are tagged Externals):
 *   load(path, {threads, mmap, mlock}) -> Promise<{model, info}>
 *   close(model), isClosed(model), modelInfo(model)
 *   tokenize(model, text, {addBos, special}) -> Int32Array
 *   detokenize(model, tokens, {special}) -> string
 *   tokenToPiece(model, token, {special}) -> string, isEog(model, token)
 *   applyChatTemplate(model, [{role, content}], {template, addGenerationPrompt}) -> string
 *   createContext(model, {contextSize, batch, threads, kvF32}) -> ctx
 *   freeContext(ctx), nPast(ctx), nCtx(ctx), truncate(ctx, nPast)
 *   eval(ctx, tokens, {logits}) -> Promise<Float32Array|undefined>
 *   generate(ctx, tokens, {maxTokens, temperature, topK, topP, minP,
 *            repeatPenalty, repeatLastN, presencePenalty, frequencyPenalty,
 *            seed, json, stop, cancelToken}, onPiece?) -> Promise<{text,
 *            promptTokens, genTokens, stopReason, promptMs, genMs}>
 *   createCancelToken(), cancel(token), isCancelled(token), version
 * Argument type errors throw TypeError (code STRATA_ERR_ARG); engine errors
 * are Errors whose code names the strata_err (STRATA_ERR_FORMAT, ...); state
 * errors use STRATA_ERR_CLOSED and STRATA_ERR_BUSY. */
#include "addon.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Random 128-bit tags: an External from another addon (or another kind of
 * ours) never passes for one of these. */
const napi_type_tag addon_model_tag = {0x7a3c1f52e04b4d19ULL, 0x9f1e6b2c8d4a3057ULL};
const napi_type_tag addon_ctx_tag = {0x2b8e4d61c9f04a37ULL, 0x8c5d2e7f1a3b6049ULL};
const napi_type_tag addon_token_tag = {0x5e1a9c3d7b2f4e68ULL, 0xa4c7e2915d8b3f06ULL};

/* ------------------------------------------------------------- errors -- */

static bool is_exception_pending(napi_env env)
{
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) != napi_ok) {
        return true; /* be conservative: do not throw over something */
    }
    return pending;
}

typedef enum { THROW_ERROR, THROW_TYPE, THROW_RANGE } throw_kind;

static bool throw_v(napi_env env, throw_kind kind, const char *code, const char *fmt, va_list ap)
{
    if (is_exception_pending(env)) {
        return false;
    }
    char msg[768];
    vsnprintf(msg, sizeof msg, fmt, ap);
    switch (kind) {
    case THROW_TYPE: napi_throw_type_error(env, code, msg); break;
    case THROW_RANGE: napi_throw_range_error(env, code, msg); break;
    case THROW_ERROR: napi_throw_error(env, code, msg); break;
    }
    return false;
}

bool addon_throw_type(napi_env env, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    throw_v(env, THROW_TYPE, "STRATA_ERR_ARG", fmt, ap);
    va_end(ap);
    return false;
}

bool addon_throw_range(napi_env env, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    throw_v(env, THROW_RANGE, "STRATA_ERR_ARG", fmt, ap);
    va_end(ap);
    return false;
}

bool addon_throw_state(napi_env env, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    throw_v(env, THROW_ERROR, code, fmt, ap);
    va_end(ap);
    return false;
}

static const char *strata_message(strata_err code, const strata_error *err)
{
    if (err != NULL && err->msg[0] != '\0') {
        return err->msg;
    }
    const char *s = strata_strerror(code);
    return s != NULL ? s : "unknown error";
}

bool addon_throw_strata(napi_env env, strata_err code, const strata_error *err)
{
    if (is_exception_pending(env)) {
        return false;
    }
    if (code == STRATA_ERR_ARG) {
        napi_throw_range_error(env, strata_err_name(code), strata_message(code, err));
    } else {
        napi_throw_error(env, strata_err_name(code), strata_message(code, err));
    }
    return false;
}

bool addon_throw_napi(napi_env env, napi_status status, const char *what)
{
    if (is_exception_pending(env)) {
        return false;
    }
    const napi_extended_error_info *info = NULL;
    const char *detail = "unknown";
    if (napi_get_last_error_info(env, &info) == napi_ok && info != NULL &&
        info->error_message != NULL) {
        detail = info->error_message;
    }
    char msg[512];
    snprintf(msg, sizeof msg, "strata addon: %s failed (status %d: %s)", what, (int)status, detail);
    napi_throw_error(env, "STRATA_ERR_INTERNAL", msg);
    return false;
}

napi_value addon_strata_error(napi_env env, strata_err code, const strata_error *err)
{
    napi_value code_v = NULL, msg_v = NULL, error = NULL;
    const char *msg = strata_message(code, err);
    if (napi_create_string_utf8(env, strata_err_name(code), NAPI_AUTO_LENGTH, &code_v) != napi_ok ||
        napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &msg_v) != napi_ok) {
        return NULL;
    }
    if (code == STRATA_ERR_ARG) {
        napi_create_range_error(env, code_v, msg_v, &error);
    } else {
        napi_create_error(env, code_v, msg_v, &error);
    }
    return error;
}

/* ---------------------------------------------------------- arguments -- */

bool addon_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv)
{
    size_t argc = n;
    ADDON_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
    /* napi fills missing arguments with undefined. */
    return true;
}

bool addon_is_nullish(napi_env env, napi_value v)
{
    napi_valuetype t;
    if (v == NULL || napi_typeof(env, v, &t) != napi_ok) {
        return true;
    }
    return t == napi_undefined || t == napi_null;
}

bool addon_check_options(napi_env env, napi_value opts, const char *fn, bool *has)
{
    *has = false;
    if (addon_is_nullish(env, opts)) {
        return true;
    }
    napi_valuetype t;
    ADDON_CHECK(env, napi_typeof(env, opts, &t));
    if (t != napi_object) {
        return addon_throw_type(env, "%s: options must be an object", fn);
    }
    *has = true;
    return true;
}

bool addon_opt_get(napi_env env, napi_value opts, const char *name, napi_value *out, bool *present)
{
    *present = false;
    if (addon_is_nullish(env, opts)) {
        return true;
    }
    ADDON_CHECK(env, napi_get_named_property(env, opts, name, out));
    *present = !addon_is_nullish(env, *out);
    return true;
}

static bool opt_number(napi_env env, napi_value opts, const char *name, double *out, bool *present)
{
    napi_value v;
    if (!addon_opt_get(env, opts, name, &v, present)) {
        return false;
    }
    if (!*present) {
        return true;
    }
    napi_valuetype t;
    ADDON_CHECK(env, napi_typeof(env, v, &t));
    if (t != napi_number) {
        return addon_throw_type(env, "option '%s' must be a number", name);
    }
    ADDON_CHECK(env, napi_get_value_double(env, v, out));
    if (isnan(*out)) {
        return addon_throw_range(env, "option '%s' must not be NaN", name);
    }
    return true;
}

bool addon_opt_int(napi_env env, napi_value opts, const char *name, int min, int max, int *out)
{
    double d = 0;
    bool present = false;
    if (!opt_number(env, opts, name, &d, &present)) {
        return false;
    }
    if (!present) {
        return true;
    }
    if (d != floor(d)) {
        return addon_throw_type(env, "option '%s' must be an integer (got %g)", name, d);
    }
    if (d < (double)min || d > (double)max) {
        return addon_throw_range(env, "option '%s' must be in [%d, %d] (got %g)", name, min, max, d);
    }
    *out = (int)d;
    return true;
}

bool addon_opt_double(napi_env env, napi_value opts, const char *name, double min, double max,
                      double *out)
{
    double d = 0;
    bool present = false;
    if (!opt_number(env, opts, name, &d, &present)) {
        return false;
    }
    if (!present) {
        return true;
    }
    if (!(d >= min && d <= max)) {
        return addon_throw_range(env, "option '%s' must be in [%g, %g] (got %g)", name, min, max, d);
    }
    *out = d;
    return true;
}

bool addon_opt_bool(napi_env env, napi_value opts, const char *name, bool *out)
{
    napi_value v;
    bool present = false;
    if (!addon_opt_get(env, opts, name, &v, &present)) {
        return false;
    }
    if (!present) {
        return true;
    }
    napi_valuetype t;
    ADDON_CHECK(env, napi_typeof(env, v, &t));
    if (t != napi_boolean) {
        return addon_throw_type(env, "option '%s' must be a boolean", name);
    }
    ADDON_CHECK(env, napi_get_value_bool(env, v, out));
    return true;
}

bool addon_opt_string(napi_env env, napi_value opts, const char *name, char **out)
{
    napi_value v;
    bool present = false;
    *out = NULL;
    if (!addon_opt_get(env, opts, name, &v, &present)) {
        return false;
    }
    if (!present) {
        return true;
    }
    char what[96];
    snprintf(what, sizeof what, "option '%s'", name);
    return addon_string(env, v, what, out, NULL);
}

bool addon_string(napi_env env, napi_value v, const char *what, char **out, size_t *len)
{
    *out = NULL;
    napi_valuetype t;
    ADDON_CHECK(env, napi_typeof(env, v, &t));
    if (t != napi_string) {
        return addon_throw_type(env, "%s must be a string", what);
    }
    size_t n = 0;
    ADDON_CHECK(env, napi_get_value_string_utf8(env, v, NULL, 0, &n));
    char *s = malloc(n + 1);
    if (s == NULL) {
        return addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory copying %s", what);
    }
    napi_status st = napi_get_value_string_utf8(env, v, s, n + 1, &n);
    if (st != napi_ok) {
        free(s);
        return addon_throw_napi(env, st, "napi_get_value_string_utf8");
    }
    *out = s;
    if (len != NULL) {
        *len = n;
    }
    return true;
}

static bool check_token(napi_env env, const char *what, double d, int n_vocab, size_t i)
{
    if (d != floor(d) || isnan(d)) {
        return addon_throw_type(env, "%s[%zu] must be an integer token id (got %g)", what, i, d);
    }
    if (d < 0 || (n_vocab > 0 && d >= (double)n_vocab)) {
        return addon_throw_range(env, "%s[%zu] = %g is not a token id (vocabulary size %d)", what, i,
                                 d, n_vocab);
    }
    return true;
}

bool addon_tokens(napi_env env, napi_value v, const char *what, int n_vocab, strata_token **out,
                  size_t *n)
{
    *out = NULL;
    *n = 0;
    bool is_typed = false, is_array = false;
    ADDON_CHECK(env, napi_is_typedarray(env, v, &is_typed));
    if (is_typed) {
        napi_typedarray_type type;
        size_t len = 0;
        void *data = NULL;
        ADDON_CHECK(env, napi_get_typedarray_info(env, v, &type, &len, &data, NULL, NULL));
        if (type != napi_int32_array) {
            return addon_throw_type(env, "%s must be an Int32Array or an array of numbers", what);
        }
        strata_token *toks = malloc((len > 0 ? len : 1) * sizeof *toks);
        if (toks == NULL) {
            return addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory copying %s", what);
        }
        if (len > 0) {
            memcpy(toks, data, len * sizeof *toks);
        }
        for (size_t i = 0; i < len; i++) {
            if (!check_token(env, what, (double)toks[i], n_vocab, i)) {
                free(toks);
                return false;
            }
        }
        *out = toks;
        *n = len;
        return true;
    }
    ADDON_CHECK(env, napi_is_array(env, v, &is_array));
    if (!is_array) {
        return addon_throw_type(env, "%s must be an Int32Array or an array of numbers", what);
    }
    uint32_t len = 0;
    ADDON_CHECK(env, napi_get_array_length(env, v, &len));
    strata_token *toks = malloc((len > 0 ? len : 1) * sizeof *toks);
    if (toks == NULL) {
        return addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory copying %s", what);
    }
    for (uint32_t i = 0; i < len; i++) {
        napi_value e;
        napi_valuetype t;
        double d = 0;
        if (napi_get_element(env, v, i, &e) != napi_ok || napi_typeof(env, e, &t) != napi_ok) {
            free(toks);
            return addon_throw_napi(env, napi_generic_failure, "reading token array");
        }
        if (t != napi_number) {
            free(toks);
            return addon_throw_type(env, "%s[%u] must be a number", what, i);
        }
        napi_get_value_double(env, e, &d);
        if (!check_token(env, what, d, n_vocab, i)) {
            free(toks);
            return false;
        }
        toks[i] = (strata_token)d;
    }
    *out = toks;
    *n = len;
    return true;
}

napi_value addon_int32_array(napi_env env, const strata_token *toks, size_t n)
{
    napi_value ab, arr;
    void *data = NULL;
    ADDON_CALL(env, napi_create_arraybuffer(env, n * sizeof(int32_t), &data, &ab));
    if (n > 0) {
        memcpy(data, toks, n * sizeof(int32_t));
    }
    ADDON_CALL(env, napi_create_typedarray(env, napi_int32_array, n, ab, 0, &arr));
    return arr;
}

bool addon_set_value(napi_env env, napi_value obj, const char *key, napi_value v)
{
    ADDON_CHECK(env, napi_set_named_property(env, obj, key, v));
    return true;
}

bool addon_set_string(napi_env env, napi_value obj, const char *key, const char *s)
{
    napi_value v;
    ADDON_CHECK(env, napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v));
    return addon_set_value(env, obj, key, v);
}

bool addon_set_double(napi_env env, napi_value obj, const char *key, double d)
{
    napi_value v;
    ADDON_CHECK(env, napi_create_double(env, d, &v));
    return addon_set_value(env, obj, key, v);
}

bool addon_set_bool(napi_env env, napi_value obj, const char *key, bool b)
{
    napi_value v;
    ADDON_CHECK(env, napi_get_boolean(env, b, &v));
    return addon_set_value(env, obj, key, v);
}

/* ------------------------------------------------------------ handles -- */

bool addon_tag(napi_env env, napi_value v, const napi_type_tag *tag)
{
    ADDON_CHECK(env, napi_type_tag_object(env, v, tag));
    return true;
}

static bool unwrap_tagged(napi_env env, napi_value v, const napi_type_tag *tag, const char *what,
                          void **out)
{
    napi_valuetype t;
    bool ok = false;
    *out = NULL;
    ADDON_CHECK(env, napi_typeof(env, v, &t));
    if (t == napi_external) {
        ADDON_CHECK(env, napi_check_object_type_tag(env, v, tag, &ok));
    }
    if (!ok) {
        return addon_throw_type(env, "expected a %s handle", what);
    }
    ADDON_CHECK(env, napi_get_value_external(env, v, out));
    return true;
}

bool addon_unwrap_model(napi_env env, napi_value v, addon_model **out)
{
    return unwrap_tagged(env, v, &addon_model_tag, "strata model", (void **)out);
}

bool addon_unwrap_open_model(napi_env env, napi_value v, addon_model **out)
{
    if (!addon_unwrap_model(env, v, out)) {
        return false;
    }
    if ((*out)->closed || (*out)->model == NULL) {
        return addon_throw_state(env, "STRATA_ERR_CLOSED", "the model is closed");
    }
    return true;
}

bool addon_unwrap_ctx(napi_env env, napi_value v, addon_ctx **out)
{
    return unwrap_tagged(env, v, &addon_ctx_tag, "strata context", (void **)out);
}

bool addon_unwrap_token(napi_env env, napi_value v, addon_cancel_token **out)
{
    return unwrap_tagged(env, v, &addon_token_tag, "strata cancel token", (void **)out);
}

void addon_model_use(addon_model *m)
{
    m->users++;
}

void addon_model_unuse(addon_model *m)
{
    m->users--;
    if (m->users > 0) {
        return;
    }
    if (m->model != NULL) {
        strata_model_free(m->model);
        m->model = NULL;
    }
    if (m->collected) {
        free(m);
    }
}

/* ------------------------------------------------------ cancel tokens -- */

void addon_token_link(addon_cancel_token *t, addon_cancel_link *link, volatile int *flag)
{
    link->flag = flag;
    link->token = t;
    link->next = t->links;
    t->links = link;
    if (t->cancelled) {
        *flag = 1;
    }
}

void addon_token_unlink(addon_cancel_link *link)
{
    addon_cancel_token *t = link->token;
    if (t == NULL) {
        return;
    }
    for (addon_cancel_link **p = &t->links; *p != NULL; p = &(*p)->next) {
        if (*p == link) {
            *p = link->next;
            break;
        }
    }
    link->token = NULL;
    link->next = NULL;
}

static void token_finalize(napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    addon_cancel_token *t = data;
    /* Works hold a reference to their token, so this only happens at
     * environment teardown; detach them so a late unlink is a no-op. */
    for (addon_cancel_link *l = t->links; l != NULL;) {
        addon_cancel_link *next = l->next;
        l->token = NULL;
        l->next = NULL;
        l = next;
    }
    free(t);
}

/* createCancelToken() -> External */
static napi_value create_cancel_token(napi_env env, napi_callback_info info)
{
    (void)info;
    addon_cancel_token *t = calloc(1, sizeof *t);
    if (t == NULL) {
        addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory");
        return NULL;
    }
    napi_value ext;
    napi_status st = napi_create_external(env, t, token_finalize, NULL, &ext);
    if (st != napi_ok) {
        free(t);
        addon_throw_napi(env, st, "napi_create_external");
        return NULL;
    }
    if (!addon_tag(env, ext, &addon_token_tag)) {
        return NULL;
    }
    return ext;
}

/* cancel(token): raise the flag of every work using it, now and later. */
static napi_value cancel(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    addon_cancel_token *t;
    if (!addon_args(env, info, 1, argv) || !addon_unwrap_token(env, argv[0], &t)) {
        return NULL;
    }
    t->cancelled = true;
    for (addon_cancel_link *l = t->links; l != NULL; l = l->next) {
        *l->flag = 1;
    }
    return NULL;
}

/* isCancelled(token) -> boolean */
static napi_value is_cancelled(napi_env env, napi_callback_info info)
{
    napi_value argv[1], result;
    addon_cancel_token *t;
    if (!addon_args(env, info, 1, argv) || !addon_unwrap_token(env, argv[0], &t)) {
        return NULL;
    }
    ADDON_CALL(env, napi_get_boolean(env, t->cancelled, &result));
    return result;
}

/* ------------------------------------------------------------- module -- */

bool addon_define(napi_env env, napi_value exports, const char *name, napi_callback cb)
{
    napi_value fn;
    ADDON_CHECK(env, napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn));
    return addon_set_value(env, exports, name, fn);
}

/* client.c: the strata-worker nng client (workerConnect, workerRequest, ...). */
bool addon_register_client(napi_env env, napi_value exports);

NAPI_MODULE_INIT()
{
    if (!addon_define(env, exports, "createCancelToken", create_cancel_token) ||
        !addon_define(env, exports, "cancel", cancel) ||
        !addon_define(env, exports, "isCancelled", is_cancelled) ||
        !addon_set_string(env, exports, "version", STRATA_VERSION) ||
        !addon_register_model(env, exports) || !addon_register_context(env, exports) ||
        !addon_register_client(env, exports)) {
        return NULL;
    }
    return exports;
}
