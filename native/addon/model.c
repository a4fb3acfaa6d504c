/* Node-API addon: model loading (async), model info, tokenizer and chat
 * template. Tokenizer calls are synchronous: they are fast and only read
 * the model, which is immutable after load. */
#include "addon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- load -- */

typedef struct load_work {
    napi_async_work work;
    napi_deferred deferred;
    char *path;                /* malloc'd */
    strata_model_params params;
    bool streamed;             /* layer streaming (strata_model_load_streamed) */
    strata_stream_params stream;
    char *compression;         /* malloc'd or NULL; stream.compression points here */
    char *store_path;          /* malloc'd or NULL; stream.store_path points here */
    strata_model *model;       /* result, owned until handed to a handle */
    strata_err status;
    strata_error err;
} load_work;

static void load_execute(napi_env env, void *data)
{
    (void)env;
    load_work *w = data;
    if (w->streamed) {
        w->status = strata_model_load_streamed(w->path, &w->params, &w->stream, &w->model, &w->err);
    } else {
        w->status = strata_model_load(w->path, &w->params, &w->model, &w->err);
    }
    if (w->status != STRATA_OK && w->model != NULL) {
        strata_model_free(w->model);
        w->model = NULL;
    }
}

static void model_finalize(napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    addon_model *m = data;
    m->collected = true;
    if (!m->closed) {
        m->closed = true;
        addon_model_unuse(m); /* frees m when nothing else uses it */
    } else if (m->users == 0) {
        free(m);
    }
}

static napi_value info_object(napi_env env, const strata_model_info *in)
{
    napi_value o;
    ADDON_CALL(env, napi_create_object(env, &o));
    bool ok = addon_set_string(env, o, "arch", in->arch) && addon_set_string(env, o, "name", in->name) &&
              addon_set_double(env, o, "nLayers", in->n_layers) &&
              addon_set_double(env, o, "nEmbd", in->n_embd) &&
              addon_set_double(env, o, "nHeads", in->n_heads) &&
              addon_set_double(env, o, "nKvHeads", in->n_kv_heads) &&
              addon_set_double(env, o, "headDim", in->head_dim) &&
              addon_set_double(env, o, "nFf", in->n_ff) &&
              addon_set_double(env, o, "nVocab", in->n_vocab) &&
              addon_set_double(env, o, "nCtxTrain", in->n_ctx_train) &&
              addon_set_double(env, o, "nParams", (double)in->n_params) &&
              addon_set_double(env, o, "fileBytes", (double)in->file_bytes) &&
              addon_set_string(env, o, "weightType", in->weight_type) &&
              addon_set_string(env, o, "tokenizer", in->tokenizer) &&
              addon_set_string(env, o, "chatTemplate", in->chat_template) &&
              addon_set_double(env, o, "bos", in->bos) && addon_set_double(env, o, "eos", in->eos) &&
              addon_set_double(env, o, "eot", in->eot) && addon_set_bool(env, o, "addBos", in->add_bos) &&
              addon_set_string(env, o, "backend", in->backend) && addon_set_string(env, o, "device", in->device);
    return ok ? o : NULL;
}

/* Wrap a loaded engine model in a tagged External; takes ownership. */
static napi_value model_handle(napi_env env, strata_model *model, addon_model **out)
{
    addon_model *m = calloc(1, sizeof *m);
    if (m == NULL) {
        strata_model_free(model);
        addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory");
        return NULL;
    }
    m->model = model;
    m->users = 1;
    strata_model_get_info(model, &m->info);
    napi_value ext;
    napi_status st = napi_create_external(env, m, model_finalize, NULL, &ext);
    if (st != napi_ok) {
        strata_model_free(model);
        free(m);
        addon_throw_napi(env, st, "napi_create_external");
        return NULL;
    }
    if (!addon_tag(env, ext, &addon_model_tag)) {
        return NULL; /* the finalizer frees m */
    }
    *out = m;
    return ext;
}

static void load_complete(napi_env env, napi_status status, void *data)
{
    load_work *w = data;
    napi_value result = NULL, ext = NULL, info = NULL, error = NULL;
    if (status != napi_ok) {
        /* Environment going away: nobody to answer. */
        if (w->model != NULL) {
            strata_model_free(w->model);
        }
    } else if (w->status != STRATA_OK) {
        error = addon_strata_error(env, w->status, &w->err);
    } else {
        addon_model *m = NULL;
        ext = model_handle(env, w->model, &m);
        if (ext != NULL) {
            info = info_object(env, &m->info);
        }
        if (ext != NULL && info != NULL && napi_create_object(env, &result) == napi_ok &&
            addon_set_value(env, result, "model", ext) && addon_set_value(env, result, "info", info)) {
            napi_resolve_deferred(env, w->deferred, result);
        } else {
            result = NULL;
        }
    }
    if (status == napi_ok && result == NULL) {
        if (error == NULL) {
            /* A napi failure above: turn the pending exception into the rejection. */
            bool pending = false;
            napi_is_exception_pending(env, &pending);
            if (pending) {
                napi_get_and_clear_last_exception(env, &error);
            } else {
                strata_error e = {STRATA_ERR_INTERNAL, "strata addon: failed to build the model handle"};
                error = addon_strata_error(env, STRATA_ERR_INTERNAL, &e);
            }
        }
        napi_reject_deferred(env, w->deferred, error);
    }
    napi_delete_async_work(env, w->work);
    free(w->compression);
    free(w->store_path);
    free(w->path);
    free(w);
}

/* load(path, {threads, mmap, mlock, streaming, memoryBudget, prefetch,
 * compression, storePath, deleteOriginal, inPlace, directIo, backend,
 * vramBudget})
 * -> Promise<{model, info}>. backend: "auto" | "cpu" | "cuda"; vramBudget:
 * bytes of weights kept on the GPU (0: all that fit).
 * streaming (or any of memoryBudget, compression, storePath) loads through
 * a split store, streaming layers within memoryBudget bytes. */
static napi_value load(napi_env env, napi_callback_info info)
{
    napi_value argv[2];
    bool has_opts;
    if (!addon_args(env, info, 2, argv) || !addon_check_options(env, argv[1], "load", &has_opts)) {
        return NULL;
    }
    load_work *w = calloc(1, sizeof *w);
    if (w == NULL) {
        addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory");
        return NULL;
    }
    strata_model_params_default(&w->params);
    strata_stream_params_default(&w->stream);
    size_t path_len = 0;
    double budget = -1.0, vram = 0.0;
    char *backend = NULL;
    if (!addon_string(env, argv[0], "load: path", &w->path, &path_len) ||
        !addon_opt_string(env, argv[1], "backend", &backend) ||
        !addon_opt_double(env, argv[1], "vramBudget", 0.0, 9007199254740991.0, &vram) ||
        !addon_opt_int(env, argv[1], "threads", 0, 4096, &w->params.n_threads) ||
        !addon_opt_bool(env, argv[1], "mmap", &w->params.use_mmap) ||
        !addon_opt_bool(env, argv[1], "mlock", &w->params.use_mlock) ||
        !addon_opt_bool(env, argv[1], "streaming", &w->streamed) ||
        !addon_opt_double(env, argv[1], "memoryBudget", 0.0, 9007199254740991.0, &budget) ||
        !addon_opt_int(env, argv[1], "prefetch", -1, 1024, &w->stream.prefetch) ||
        !addon_opt_bool(env, argv[1], "deleteOriginal", &w->stream.delete_original) ||
        !addon_opt_bool(env, argv[1], "inPlace", &w->stream.in_place) ||
        !addon_opt_bool(env, argv[1], "directIo", &w->stream.direct_io) ||
        !addon_opt_string(env, argv[1], "compression", &w->compression) ||
        !addon_opt_string(env, argv[1], "storePath", &w->store_path)) {
        free(backend);
        free(w->compression);
        free(w->store_path);
        free(w->path);
        free(w);
        return NULL;
    }
    w->params.vram_budget = (uint64_t)vram;
    if (backend != NULL) {
        const char *b = backend;
        w->params.backend = strcmp(b, "cpu") == 0    ? STRATA_BACKEND_CPU
                            : strcmp(b, "cuda") == 0 ? STRATA_BACKEND_CUDA
                                                     : STRATA_BACKEND_AUTO;
        bool known = strcmp(b, "auto") == 0 || w->params.backend != STRATA_BACKEND_AUTO;
        free(backend);
        if (!known) {
            free(w->compression);
            free(w->store_path);
            free(w->path);
            free(w);
            addon_throw_type(env, "load: backend must be \"auto\", \"cpu\" or \"cuda\"");
            return NULL;
        }
    }
    if (budget >= 0.0 || w->compression != NULL || w->store_path != NULL || w->stream.in_place) {
        w->streamed = true;
    }
    w->stream.memory_budget = budget > 0.0 ? (uint64_t)budget : 0;
    w->stream.compression = w->compression;
    w->stream.store_path = w->store_path;
    if (path_len == 0 || strlen(w->path) != path_len) {
        free(w->compression);
        free(w->store_path);
        free(w->path);
        free(w);
        addon_throw_type(env, "load: path must be a non-empty string without NUL characters");
        return NULL;
    }
    napi_value promise, name;
    napi_status st = napi_create_promise(env, &w->deferred, &promise);
    if (st == napi_ok) {
        st = napi_create_string_utf8(env, "strata.load", NAPI_AUTO_LENGTH, &name);
    }
    if (st == napi_ok) {
        st = napi_create_async_work(env, NULL, name, load_execute, load_complete, w, &w->work);
    }
    if (st == napi_ok) {
        st = napi_queue_async_work(env, w->work);
    }
    if (st != napi_ok) {
        /* A created deferred that is never settled is only a leaked promise. */
        if (w->work != NULL) {
            napi_delete_async_work(env, w->work);
        }
        free(w->compression);
        free(w->store_path);
        free(w->path);
        free(w);
        addon_throw_napi(env, st, "queueing load");
        return NULL;
    }
    return promise;
}

/* close(model): no new work; the engine model is freed once its contexts
 * and in-flight work are gone. Safe to call twice. */
static napi_value close_model(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    addon_model *m;
    if (!addon_args(env, info, 1, argv) || !addon_unwrap_model(env, argv[0], &m)) {
        return NULL;
    }
    if (!m->closed) {
        m->closed = true;
        addon_model_unuse(m); /* m stays allocated: the External still points at it */
    }
    return NULL;
}

/* modelInfo(model) -> object */
static napi_value model_info(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    addon_model *m;
    if (!addon_args(env, info, 1, argv) || !addon_unwrap_model(env, argv[0], &m)) {
        return NULL;
    }
    return info_object(env, &m->info);
}

/* isClosed(model) -> boolean */
static napi_value is_closed(napi_env env, napi_callback_info info)
{
    napi_value argv[1], result;
    addon_model *m;
    if (!addon_args(env, info, 1, argv) || !addon_unwrap_model(env, argv[0], &m)) {
        return NULL;
    }
    ADDON_CALL(env, napi_get_boolean(env, m->closed, &result));
    return result;
}

/* ---------------------------------------------------------- tokenizer -- */

/* tokenize(model, text, {addBos, special}) -> Int32Array */
static napi_value tokenize(napi_env env, napi_callback_info info)
{
    napi_value argv[3];
    addon_model *m;
    bool has_opts, add_bos = true, special = false;
    char *text = NULL;
    size_t len = 0;
    if (!addon_args(env, info, 3, argv) || !addon_unwrap_open_model(env, argv[0], &m) ||
        !addon_check_options(env, argv[2], "tokenize", &has_opts) ||
        !addon_opt_bool(env, argv[2], "addBos", &add_bos) ||
        !addon_opt_bool(env, argv[2], "special", &special) ||
        !addon_string(env, argv[1], "tokenize: text", &text, &len)) {
        return NULL;
    }
    /* One token per byte plus BOS covers byte-fallback tokenizers; retry
     * with the size the engine asks for otherwise. */
    size_t cap = len + 8, n = 0;
    strata_token *toks = NULL;
    strata_error err = {0};
    strata_err rc = STRATA_ERR_LIMIT;
    for (int attempt = 0; attempt < 3 && rc == STRATA_ERR_LIMIT; attempt++) {
        strata_token *grown = realloc(toks, cap * sizeof *toks);
        if (grown == NULL) {
            rc = STRATA_ERR_NOMEM;
            break;
        }
        toks = grown;
        n = 0;
        memset(&err, 0, sizeof err);
        rc = strata_tokenize(m->model, text, len, add_bos, special, toks, cap, &n, &err);
        if (rc == STRATA_ERR_LIMIT && n > cap) {
            cap = n;
        } else if (rc == STRATA_ERR_LIMIT) {
            break; /* a real limit, not a short buffer */
        }
    }
    free(text);
    napi_value result = NULL;
    if (rc == STRATA_OK) {
        result = addon_int32_array(env, toks, n);
    } else {
        addon_throw_strata(env, rc, &err);
    }
    free(toks);
    return result;
}

/* detokenize(model, tokens, {special}) -> string */
static napi_value detokenize(napi_env env, napi_callback_info info)
{
    napi_value argv[3];
    addon_model *m;
    bool has_opts, special = false;
    strata_token *toks = NULL;
    size_t n = 0;
    if (!addon_args(env, info, 3, argv) || !addon_unwrap_open_model(env, argv[0], &m) ||
        !addon_check_options(env, argv[2], "detokenize", &has_opts) ||
        !addon_opt_bool(env, argv[2], "special", &special) ||
        !addon_tokens(env, argv[1], "detokenize: tokens", m->info.n_vocab, &toks, &n)) {
        return NULL;
    }
    char *text = NULL;
    strata_error err = {0};
    strata_err rc = strata_detokenize(m->model, toks, n, special, &text, &err);
    free(toks);
    napi_value result = NULL;
    if (rc == STRATA_OK) {
        napi_status st = napi_create_string_utf8(env, text != NULL ? text : "", NAPI_AUTO_LENGTH, &result);
        if (st != napi_ok) {
            addon_throw_napi(env, st, "napi_create_string_utf8");
            result = NULL;
        }
    } else {
        addon_throw_strata(env, rc, &err);
    }
    free(text);
    return result;
}

/* tokenToPiece(model, token, {special}) -> string */
static napi_value token_to_piece(napi_env env, napi_callback_info info)
{
    napi_value argv[3];
    addon_model *m;
    bool has_opts, special = false;
    napi_valuetype t;
    double d = 0;
    if (!addon_args(env, info, 3, argv) || !addon_unwrap_open_model(env, argv[0], &m) ||
        !addon_check_options(env, argv[2], "tokenToPiece", &has_opts) ||
        !addon_opt_bool(env, argv[2], "special", &special)) {
        return NULL;
    }
    ADDON_CALL(env, napi_typeof(env, argv[1], &t));
    if (t != napi_number) {
        addon_throw_type(env, "tokenToPiece: token must be a number");
        return NULL;
    }
    ADDON_CALL(env, napi_get_value_double(env, argv[1], &d));
    if (d != (double)(strata_token)d || d < 0 || d >= (double)m->info.n_vocab) {
        addon_throw_range(env, "tokenToPiece: %g is not a token id (vocabulary size %d)", d,
                          m->info.n_vocab);
        return NULL;
    }
    char small[64];
    char *buf = small;
    int n = strata_token_to_piece(m->model, (strata_token)d, small, sizeof small, special);
    if (n < 0) {
        size_t need = (size_t)(-n);
        buf = malloc(need);
        if (buf == NULL) {
            addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory");
            return NULL;
        }
        n = strata_token_to_piece(m->model, (strata_token)d, buf, need, special);
    }
    napi_value result = NULL;
    if (n < 0) {
        addon_throw_state(env, "STRATA_ERR_INTERNAL", "tokenToPiece: piece size changed between calls");
    } else if (napi_create_string_utf8(env, buf, (size_t)n, &result) != napi_ok) {
        addon_throw_napi(env, napi_generic_failure, "napi_create_string_utf8");
        result = NULL;
    }
    if (buf != small) {
        free(buf);
    }
    return result;
}

/* isEog(model, token) -> boolean */
static napi_value is_eog(napi_env env, napi_callback_info info)
{
    napi_value argv[2], result;
    addon_model *m;
    napi_valuetype t;
    double d = 0;
    if (!addon_args(env, info, 2, argv) || !addon_unwrap_open_model(env, argv[0], &m)) {
        return NULL;
    }
    ADDON_CALL(env, napi_typeof(env, argv[1], &t));
    if (t != napi_number) {
        addon_throw_type(env, "isEog: token must be a number");
        return NULL;
    }
    ADDON_CALL(env, napi_get_value_double(env, argv[1], &d));
    if (d != (double)(strata_token)d || d < 0 || d >= (double)m->info.n_vocab) {
        addon_throw_range(env, "isEog: %g is not a token id", d);
        return NULL;
    }
    ADDON_CALL(env, napi_get_boolean(env, strata_token_is_eog(m->model, (strata_token)d), &result));
    return result;
}

/* ------------------------------------------------------ chat template -- */

static void free_messages(strata_chat_message *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)msgs[i].role);
        free((char *)msgs[i].content);
    }
    free(msgs);
}

static bool message_field(napi_env env, napi_value msg, const char *key, uint32_t i, char **out)
{
    napi_value v;
    char what[64];
    ADDON_CHECK(env, napi_get_named_property(env, msg, key, &v));
    snprintf(what, sizeof what, "messages[%u].%s", i, key);
    return addon_string(env, v, what, out, NULL);
}

/* applyChatTemplate(model, [{role, content}], {template, addGenerationPrompt}) -> string */
static napi_value apply_chat_template(napi_env env, napi_callback_info info)
{
    napi_value argv[3];
    addon_model *m;
    bool has_opts, is_array = false, add_gen = true;
    char *template_name = NULL;
    if (!addon_args(env, info, 3, argv) || !addon_unwrap_open_model(env, argv[0], &m) ||
        !addon_check_options(env, argv[2], "applyChatTemplate", &has_opts) ||
        !addon_opt_bool(env, argv[2], "addGenerationPrompt", &add_gen)) {
        return NULL;
    }
    ADDON_CALL(env, napi_is_array(env, argv[1], &is_array));
    if (!is_array) {
        addon_throw_type(env, "applyChatTemplate: messages must be an array of {role, content}");
        return NULL;
    }
    uint32_t n = 0;
    ADDON_CALL(env, napi_get_array_length(env, argv[1], &n));
    strata_chat_message *msgs = calloc(n > 0 ? n : 1, sizeof *msgs);
    if (msgs == NULL) {
        addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory");
        return NULL;
    }
    for (uint32_t i = 0; i < n; i++) {
        napi_value msg;
        napi_valuetype t;
        if (napi_get_element(env, argv[1], i, &msg) != napi_ok || napi_typeof(env, msg, &t) != napi_ok ||
            t != napi_object) {
            free_messages(msgs, n);
            addon_throw_type(env, "applyChatTemplate: messages[%u] must be an object {role, content}", i);
            return NULL;
        }
        char *role = NULL, *content = NULL;
        if (!message_field(env, msg, "role", i, &role) || !message_field(env, msg, "content", i, &content)) {
            free(role);
            free_messages(msgs, n);
            return NULL;
        }
        msgs[i].role = role;
        msgs[i].content = content;
    }
    if (!addon_opt_string(env, argv[2], "template", &template_name)) {
        free_messages(msgs, n);
        return NULL;
    }
    char *out = NULL;
    strata_error err = {0};
    strata_err rc = strata_chat_apply(m->model, template_name, msgs, n, add_gen, &out, &err);
    free_messages(msgs, n);
    free(template_name);
    napi_value result = NULL;
    if (rc == STRATA_OK) {
        if (napi_create_string_utf8(env, out != NULL ? out : "", NAPI_AUTO_LENGTH, &result) != napi_ok) {
            addon_throw_napi(env, napi_generic_failure, "napi_create_string_utf8");
            result = NULL;
        }
    } else {
        addon_throw_strata(env, rc, &err);
    }
    free(out);
    return result;
}

/* streamStats(model, {reset}) -> null (not streamed) or [{part, resident,
 * loads, bytesRead, readMs, stallMs, computeMs}] in part order (part -1:
 * embeddings, n_layers: head). */
static napi_value stream_stats(napi_env env, napi_callback_info info)
{
    napi_value argv[2], result;
    addon_model *m;
    bool has_opts, reset = false;
    if (!addon_args(env, info, 2, argv) || !addon_unwrap_open_model(env, argv[0], &m) ||
        !addon_check_options(env, argv[1], "streamStats", &has_opts) ||
        !addon_opt_bool(env, argv[1], "reset", &reset)) {
        return NULL;
    }
    size_t n = strata_model_stream_stats(m->model, NULL, 0, false);
    if (n == 0) {
        ADDON_CALL(env, napi_get_null(env, &result));
        return result;
    }
    strata_stream_stats *st = calloc(n, sizeof *st);
    if (st == NULL) {
        addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory");
        return NULL;
    }
    n = strata_model_stream_stats(m->model, st, n, reset);
    bool ok = napi_create_array_with_length(env, n, &result) == napi_ok;
    for (size_t i = 0; ok && i < n; i++) {
        napi_value o;
        ok = napi_create_object(env, &o) == napi_ok && addon_set_double(env, o, "part", st[i].part) &&
             addon_set_bool(env, o, "resident", st[i].resident) &&
             addon_set_double(env, o, "loads", (double)st[i].loads) &&
             addon_set_double(env, o, "bytesRead", (double)st[i].bytes_read) &&
             addon_set_double(env, o, "readMs", st[i].read_ms) && addon_set_double(env, o, "stallMs", st[i].stall_ms) &&
             addon_set_double(env, o, "computeMs", st[i].compute_ms) &&
             napi_set_element(env, result, (uint32_t)i, o) == napi_ok;
    }
    free(st);
    return ok ? result : NULL;
}

bool addon_register_model(napi_env env, napi_value exports)
{
    return addon_define(env, exports, "load", load) && addon_define(env, exports, "close", close_model) &&
           addon_define(env, exports, "modelInfo", model_info) &&
           addon_define(env, exports, "isClosed", is_closed) &&
           addon_define(env, exports, "tokenize", tokenize) &&
           addon_define(env, exports, "detokenize", detokenize) &&
           addon_define(env, exports, "tokenToPiece", token_to_piece) &&
           addon_define(env, exports, "isEog", is_eog) &&
           addon_define(env, exports, "applyChatTemplate", apply_chat_template) &&
           addon_define(env, exports, "streamStats", stream_stats);
}
