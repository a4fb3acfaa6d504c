/* Node-API addon: internal declarations shared by addon.c (module, helpers,
 * cancel tokens), model.c (load, tokenizer, chat template) and context.c
 * (contexts, eval, generate).
 *
 * Threading: every handle field below is read and written on the JS thread
 * only. Worker threads (napi_async_work execute callbacks) touch the engine
 * objects and their own work struct, never these handles. The one exception
 * is the `volatile int` cancel flag of a work item, written by the JS thread
 * and polled by the engine.
 */
#ifndef STRATA_ADDON_H
#define STRATA_ADDON_H

#ifndef NAPI_VERSION
#define NAPI_VERSION 8
#endif

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>

#include "strata.h"

/* ------------------------------------------------------------ handles -- */

/* A loaded model. The JS handle is an External tagged with the model tag.
 * The engine model is freed when `users` drops to zero; the struct itself
 * lives until the External is collected as well. */
typedef struct addon_model {
    strata_model *model;     /* NULL once freed */
    strata_model_info info;  /* cached at load */
    int users;               /* 1 while open + live contexts + in-flight work */
    bool closed;             /* close() called or handle collected: no new work */
    bool collected;          /* finalizer ran: free the struct when users == 0 */
} addon_model;

/* A context (KV cache) on a model. At most one async operation at a time. */
typedef struct addon_ctx {
    strata_ctx *ctx;         /* NULL once freed */
    addon_model *owner;      /* holds one of owner->users while ctx != NULL */
    napi_ref owner_ref;      /* keeps the model's JS handle alive */
    int n_vocab;             /* owner->info.n_vocab, for token checks */
    bool busy;               /* an eval/generate is in flight */
    volatile int *cancel;    /* the in-flight work's cancel flag, or NULL */
    bool closed;             /* freeContext() called: free when idle */
    bool collected;          /* finalizer ran: free the struct when idle */
} addon_ctx;

/* A work item's membership in a cancel token: cancel(token) raises *flag of
 * every linked work. */
typedef struct addon_cancel_link {
    volatile int *flag;
    struct addon_cancel_token *token; /* NULL when unlinked */
    struct addon_cancel_link *next;
} addon_cancel_link;

typedef struct addon_cancel_token {
    bool cancelled;
    addon_cancel_link *links; /* running works using this token */
} addon_cancel_token;

/* ------------------------------------------------------------ helpers -- */

/* Throw (unless an exception is already pending) and return false/NULL. */
bool addon_throw_type(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool addon_throw_range(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool addon_throw_state(napi_env env, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool addon_throw_strata(napi_env env, strata_err code, const strata_error *err);
bool addon_throw_napi(napi_env env, napi_status status, const char *what);

/* JS Error with .code = "STRATA_ERR_..." and the engine's message (for rejects). */
napi_value addon_strata_error(napi_env env, strata_err code, const strata_error *err);

/* Run a napi call; on failure throw and return NULL from the caller. */
#define ADDON_CALL(env, call)                                                       \
    do {                                                                            \
        napi_status addon_status_ = (call);                                         \
        if (addon_status_ != napi_ok) {                                             \
            addon_throw_napi((env), addon_status_, #call);                          \
            return NULL;                                                            \
        }                                                                           \
    } while (0)

/* Same, for helpers returning bool. */
#define ADDON_CHECK(env, call)                                                      \
    do {                                                                            \
        napi_status addon_status_ = (call);                                         \
        if (addon_status_ != napi_ok) {                                             \
            return addon_throw_napi((env), addon_status_, #call);                   \
        }                                                                           \
    } while (0)

/* Fetch exactly the callback's arguments (missing ones are undefined). */
bool addon_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv);

bool addon_is_nullish(napi_env env, napi_value v);
/* opts must be undefined, null or an object; *has tells which. */
bool addon_check_options(napi_env env, napi_value opts, const char *fn, bool *has);
/* Named option getters: leave *out untouched when the option is absent
 * (undefined/null or opts missing). Wrong type -> TypeError, out of range ->
 * RangeError. */
bool addon_opt_int(napi_env env, napi_value opts, const char *name, int min, int max, int *out);
bool addon_opt_double(napi_env env, napi_value opts, const char *name, double min, double max,
                      double *out);
bool addon_opt_bool(napi_env env, napi_value opts, const char *name, bool *out);
/* *out is malloc'd (caller frees) or left NULL when absent. */
bool addon_opt_string(napi_env env, napi_value opts, const char *name, char **out);
bool addon_opt_get(napi_env env, napi_value opts, const char *name, napi_value *out, bool *present);

/* A JS string as a malloc'd NUL-terminated UTF-8 copy; TypeError otherwise. */
bool addon_string(napi_env env, napi_value v, const char *what, char **out, size_t *len);
/* Int32Array or array of integers in [0, n_vocab) as a malloc'd copy. */
bool addon_tokens(napi_env env, napi_value v, const char *what, int n_vocab, strata_token **out,
                  size_t *n);
napi_value addon_int32_array(napi_env env, const strata_token *toks, size_t n);

/* Property setters for result objects. */
bool addon_set_string(napi_env env, napi_value obj, const char *key, const char *s);
bool addon_set_double(napi_env env, napi_value obj, const char *key, double v);
bool addon_set_bool(napi_env env, napi_value obj, const char *key, bool v);
bool addon_set_value(napi_env env, napi_value obj, const char *key, napi_value v);

/* Handle unwrapping with type-tag checks (TypeError on anything else). */
bool addon_unwrap_model(napi_env env, napi_value v, addon_model **out);
bool addon_unwrap_open_model(napi_env env, napi_value v, addon_model **out);
bool addon_unwrap_ctx(napi_env env, napi_value v, addon_ctx **out);
bool addon_unwrap_token(napi_env env, napi_value v, addon_cancel_token **out);
bool addon_tag(napi_env env, napi_value v, const napi_type_tag *tag);

extern const napi_type_tag addon_model_tag;
extern const napi_type_tag addon_ctx_tag;
extern const napi_type_tag addon_token_tag;

/* Model use counting (JS thread only). */
void addon_model_use(addon_model *m);
void addon_model_unuse(addon_model *m);

/* Cancel tokens. */
void addon_token_link(addon_cancel_token *t, addon_cancel_link *link, volatile int *flag);
void addon_token_unlink(addon_cancel_link *link);

/* Registration of each file's functions on the exports object. */
bool addon_register_model(napi_env env, napi_value exports);
bool addon_register_context(napi_env env, napi_value exports);
bool addon_define(napi_env env, napi_value exports, const char *name, napi_callback cb);

#endif
