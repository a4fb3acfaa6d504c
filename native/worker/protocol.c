/* strata-worker protocol: parsing and validation of requests, reply
 * builders (see protocol.h). Nothing here touches the model. */
#include "protocol.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void proto_limits_default(proto_limits *l)
{
    l->max_new_tokens = 4096;
    l->max_options = 64;
    l->max_stop = 16;
    l->max_messages = 256;
    l->max_tokens_in = 1 << 20;
}

static const struct {
    const char *name;
    proto_op op;
} OPS[] = {
    {"generate", PROTO_GENERATE}, {"chat", PROTO_CHAT},   {"score", PROTO_SCORE},   {"embed", PROTO_EMBED},
    {"tokenize", PROTO_TOKENIZE}, {"health", PROTO_HEALTH}, {"stats", PROTO_STATS}, {"cancel", PROTO_CANCEL},
    {"poll", PROTO_POLL},
};

const char *proto_op_name(proto_op op)
{
    for (size_t i = 0; i < sizeof(OPS) / sizeof(OPS[0]); i++) {
        if (OPS[i].op == op) {
            return OPS[i].name;
        }
    }
    return "?";
}

static bool fail(proto_error *e, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(proto_error *e, const char *code, const char *fmt, ...)
{
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    va_end(ap);
    return false;
}

#define ARG "STRATA_ERR_ARG"
#define LIMIT "STRATA_ERR_LIMIT"

/* Typed field getters: absent (or null) leaves *out alone. */
static bool get_bool(json_t *o, const char *k, bool *out, proto_error *e)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL || json_is_null(v)) {
        return true;
    }
    if (!json_is_boolean(v)) {
        return fail(e, ARG, "'%s' must be a boolean", k);
    }
    *out = json_is_true(v);
    return true;
}

static bool get_int(json_t *o, const char *k, long long min, long long max, long long *out, bool *present,
                    proto_error *e)
{
    json_t *v = json_object_get(o, k);
    if (present != NULL) {
        *present = false;
    }
    if (v == NULL || json_is_null(v)) {
        return true;
    }
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (long long)json_real_value(v);
    } else {
        return fail(e, ARG, "'%s' must be an integer", k);
    }
    if (x < min || x > max) {
        return fail(e, ARG, "'%s' must be between %lld and %lld (got %lld)", k, min, max, x);
    }
    *out = x;
    if (present != NULL) {
        *present = true;
    }
    return true;
}

static bool get_num(json_t *o, const char *k, double min, double max, float *out, proto_error *e)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL || json_is_null(v)) {
        return true;
    }
    if (!json_is_number(v)) {
        return fail(e, ARG, "'%s' must be a number", k);
    }
    double x = json_number_value(v);
    if (!(x >= min && x <= max)) {
        return fail(e, ARG, "'%s' must be between %g and %g", k, min, max);
    }
    *out = (float)x;
    return true;
}

static bool get_str(json_t *o, const char *k, bool required, const char **out, size_t *len, proto_error *e)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL || json_is_null(v)) {
        if (required) {
            return fail(e, ARG, "'%s' is required", k);
        }
        return true;
    }
    if (!json_is_string(v)) {
        return fail(e, ARG, "'%s' must be a string", k);
    }
    *out = json_string_value(v);
    if (len != NULL) {
        *len = json_string_length(v);
    }
    return true;
}

/* A string or an array of strings (max n) as an owned array of borrowed strings. */
static bool get_str_list(json_t *o, const char *k, bool allow_single, size_t max, const char ***out, size_t *n,
                         proto_error *e)
{
    json_t *v = json_object_get(o, k);
    *out = NULL;
    *n = 0;
    if (v == NULL || json_is_null(v)) {
        return true;
    }
    if (allow_single && json_is_string(v)) {
        *out = malloc(sizeof(char *));
        if (*out == NULL) {
            return fail(e, "STRATA_ERR_NOMEM", "out of memory");
        }
        (*out)[0] = json_string_value(v);
        *n = 1;
        return true;
    }
    if (!json_is_array(v)) {
        return fail(e, ARG, "'%s' must be %s", k, allow_single ? "a string or an array of strings" : "an array of strings");
    }
    size_t cnt = json_array_size(v);
    if (cnt > max) {
        return fail(e, LIMIT, "'%s' has %zu entries (at most %zu)", k, cnt, max);
    }
    *out = calloc(cnt > 0 ? cnt : 1, sizeof(char *));
    if (*out == NULL) {
        return fail(e, "STRATA_ERR_NOMEM", "out of memory");
    }
    for (size_t i = 0; i < cnt; i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s)) {
            return fail(e, ARG, "'%s[%zu]' must be a string", k, i);
        }
        (*out)[i] = json_string_value(s);
    }
    *n = cnt;
    return true;
}

static bool parse_sampling(json_t *o, const proto_limits *lim, proto_req *r, proto_error *e)
{
    strata_sampler_params *s = &r->sampling;
    long long x;
    bool present;
    if (!get_int(o, "max_tokens", 1, INT_MAX, &x, &present, e)) {
        return false;
    }
    if (present) {
        if (x > lim->max_new_tokens) {
            return fail(e, LIMIT, "max_tokens %lld is over this worker's limit of %d new tokens", x,
                        lim->max_new_tokens);
        }
        r->max_tokens = (int)x;
    }
    if (!get_num(o, "temperature", 0, 100, &s->temperature, e) || !get_num(o, "top_p", 0, 1, &s->top_p, e) ||
        !get_num(o, "min_p", 0, 1, &s->min_p, e) || !get_num(o, "repeat_penalty", 0, 100, &s->repeat_penalty, e) ||
        !get_num(o, "presence_penalty", -100, 100, &s->presence_penalty, e) ||
        !get_num(o, "frequency_penalty", -100, 100, &s->frequency_penalty, e) ||
        !get_bool(o, "json", &s->json, e) || !get_bool(o, "stream", &r->stream, e)) {
        return false;
    }
    if (!get_int(o, "top_k", 0, INT_MAX, &x, &present, e)) {
        return false;
    }
    if (present) {
        s->top_k = (int)x;
    }
    if (!get_int(o, "repeat_last_n", 0, 1 << 20, &x, &present, e)) {
        return false;
    }
    if (present) {
        s->repeat_last_n = (int)x;
    }
    if (!get_int(o, "seed", 0, (long long)UINT32_MAX, &x, &present, e)) {
        return false;
    }
    if (present) {
        s->seed = (uint64_t)x;
    }
    if (!get_str_list(o, "stop", true, (size_t)lim->max_stop, &r->stop, &r->n_stop, e)) {
        return false;
    }
    return true;
}

static bool parse_tokens(json_t *o, const proto_limits *lim, proto_req *r, proto_error *e)
{
    json_t *v = json_object_get(o, "tokens");
    if (v == NULL || json_is_null(v)) {
        return true;
    }
    if (!json_is_array(v)) {
        return fail(e, ARG, "'tokens' must be an array of token ids");
    }
    size_t n = json_array_size(v);
    if (n > (size_t)lim->max_tokens_in) {
        return fail(e, LIMIT, "'tokens' has %zu entries (at most %d)", n, lim->max_tokens_in);
    }
    r->tokens = malloc((n > 0 ? n : 1) * sizeof(strata_token));
    if (r->tokens == NULL) {
        return fail(e, "STRATA_ERR_NOMEM", "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(v, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX) {
            return fail(e, ARG, "'tokens[%zu]' must be a non-negative integer", i);
        }
        r->tokens[i] = (strata_token)json_integer_value(t);
    }
    r->n_tokens = (int)n;
    return true;
}

static bool parse_messages(json_t *o, const proto_limits *lim, proto_req *r, proto_error *e)
{
    json_t *v = json_object_get(o, "messages");
    if (!json_is_array(v)) {
        return fail(e, ARG, "'messages' must be an array of {role, content}");
    }
    size_t n = json_array_size(v);
    if (n > (size_t)lim->max_messages) {
        return fail(e, LIMIT, "'messages' has %zu entries (at most %d)", n, lim->max_messages);
    }
    r->messages = calloc(n > 0 ? n : 1, sizeof(strata_chat_message));
    if (r->messages == NULL) {
        return fail(e, "STRATA_ERR_NOMEM", "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(v, i);
        json_t *role = json_object_get(m, "role");
        json_t *content = json_object_get(m, "content");
        if (!json_is_object(m) || !json_is_string(role) || !json_is_string(content)) {
            return fail(e, ARG, "'messages[%zu]' needs string 'role' and 'content'", i);
        }
        r->messages[i].role = json_string_value(role);
        r->messages[i].content = json_string_value(content);
    }
    r->n_messages = n;
    return true;
}

bool proto_parse(const char *buf, size_t len, const proto_limits *lim, proto_req *r, proto_error *e)
{
    memset(r, 0, sizeof(*r));
    strata_sampler_params_default(&r->sampling);
    r->wait_ms = 1000;
    e->code = NULL;
    e->message[0] = '\0';
    if (buf == NULL) {
        return fail(e, "STRATA_ERR_PROTOCOL", "empty message");
    }
    json_error_t je;
    /* the whole buffer must be one JSON value; NUL bytes inside are refused */
    r->root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (r->root == NULL) {
        return fail(e, "STRATA_ERR_PROTOCOL", "malformed JSON at byte %d: %s", je.position, je.text);
    }
    json_t *o = r->root;
    if (!json_is_object(o)) {
        return fail(e, "STRATA_ERR_PROTOCOL", "a request must be a JSON object");
    }
    r->id = json_object_get(o, "id");
    json_t *v = json_object_get(o, "v");
    if (v == NULL) {
        return fail(e, "STRATA_ERR_PROTOCOL", "missing protocol version 'v' (this worker speaks %d)", PROTO_VERSION);
    }
    if (!json_is_integer(v) || json_integer_value(v) != PROTO_VERSION) {
        return fail(e, "STRATA_ERR_PROTOCOL", "unsupported protocol version (this worker speaks %d)", PROTO_VERSION);
    }
    json_t *tok = json_object_get(o, "token");
    if (tok != NULL && !json_is_null(tok)) {
        if (!json_is_string(tok)) {
            return fail(e, "STRATA_ERR_AUTH", "'token' must be a string");
        }
        r->token = json_string_value(tok);
    }
    const char *op = NULL;
    if (!get_str(o, "op", true, &op, NULL, e)) {
        e->code = "STRATA_ERR_PROTOCOL";
        return false;
    }
    bool found = false;
    for (size_t i = 0; i < sizeof(OPS) / sizeof(OPS[0]); i++) {
        if (strcmp(OPS[i].name, op) == 0) {
            r->op = OPS[i].op;
            found = true;
        }
    }
    if (!found) {
        return fail(e, "STRATA_ERR_PROTOCOL", "unknown op '%.64s'", op);
    }
    long long x;
    bool present;
    if (!get_int(o, "timeout_ms", 1, INT_MAX, &x, &present, e)) {
        return false;
    }
    if (present) {
        r->timeout_ms = (int)x;
    }
    if (!get_bool(o, "add_bos", &r->add_bos, e)) {
        return false;
    }
    r->has_add_bos = json_object_get(o, "add_bos") != NULL && !json_is_null(json_object_get(o, "add_bos"));
    if (!get_bool(o, "special", &r->special, e) || !get_bool(o, "async", &r->async, e)) {
        return false;
    }
    switch (r->op) {
    case PROTO_GENERATE:
        if (!get_str(o, "prompt", false, &r->text, &r->text_len, e) || !parse_tokens(o, lim, r, e) ||
            !parse_sampling(o, lim, r, e)) {
            return false;
        }
        if (r->text == NULL && r->tokens == NULL) {
            return fail(e, ARG, "generate needs 'prompt' (string) or 'tokens' (array)");
        }
        if (r->text != NULL && r->tokens != NULL) {
            return fail(e, ARG, "give 'prompt' or 'tokens', not both");
        }
        return true;
    case PROTO_CHAT:
        return parse_messages(o, lim, r, e) && get_str(o, "template", false, &r->template_name, NULL, e) &&
               get_str(o, "system", false, &r->system, NULL, e) && parse_sampling(o, lim, r, e);
    case PROTO_SCORE:
        if (!get_str(o, "prompt", true, &r->text, &r->text_len, e) ||
            !get_str_list(o, "options", false, (size_t)lim->max_options, &r->options, &r->n_options, e)) {
            return false;
        }
        if (r->n_options == 0) {
            return fail(e, ARG, "score needs 'options': a non-empty array of strings");
        }
        for (size_t i = 0; i < r->n_options; i++) {
            if (r->options[i][0] == '\0') {
                return fail(e, ARG, "'options[%zu]' is empty", i);
            }
        }
        return true;
    case PROTO_EMBED:
        return get_str(o, "input", true, &r->text, &r->text_len, e);
    case PROTO_TOKENIZE:
        return get_str(o, "text", true, &r->text, &r->text_len, e);
    case PROTO_HEALTH:
    case PROTO_STATS:
        return true;
    case PROTO_CANCEL:
    case PROTO_POLL:
        if (!get_int(o, "rid", 1, (long long)INT64_MAX, &x, &present, e)) {
            return false;
        }
        if (!present) {
            return fail(e, ARG, "'rid' is required");
        }
        r->rid = (uint64_t)x;
        if (!get_int(o, "offset", 0, (long long)INT32_MAX, &x, &present, e)) {
            return false;
        }
        if (present) {
            r->offset = (size_t)x;
        }
        if (!get_int(o, "wait_ms", 0, 60000, &x, &present, e)) {
            return false;
        }
        if (present) {
            r->wait_ms = (int)x;
        }
        return true;
    }
    return fail(e, "STRATA_ERR_PROTOCOL", "unknown op");
}

void proto_req_free(proto_req *r)
{
    if (r == NULL) {
        return;
    }
    free(r->tokens);
    free(r->messages);
    free(r->stop);
    free(r->options);
    if (r->root != NULL) {
        json_decref(r->root);
    }
    memset(r, 0, sizeof(*r));
}

static char *dump(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(o);
    return s;
}

static json_t *envelope(const json_t *id, bool ok)
{
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(o, "v", json_integer(PROTO_VERSION));
    json_object_set_new(o, "id", id != NULL ? json_deep_copy(id) : json_null());
    json_object_set_new(o, "ok", json_boolean(ok));
    return o;
}

char *proto_reply_ok(const json_t *id, json_t *body)
{
    json_t *o = envelope(id, true);
    if (o == NULL) {
        json_decref(body);
        return NULL;
    }
    if (body != NULL) {
        json_object_update(o, body);
        json_decref(body);
        json_object_set_new(o, "ok", json_true());
        json_object_set_new(o, "v", json_integer(PROTO_VERSION));
    }
    return dump(o);
}

char *proto_reply_error(const json_t *id, const char *code, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *o = envelope(id, false);
    if (o == NULL) {
        return NULL;
    }
    json_t *err = json_object();
    json_object_set_new(err, "code", json_string(code));
    /* messages may quote user input: keep only valid UTF-8 */
    json_t *m = json_string(msg);
    json_object_set_new(err, "message", m != NULL ? m : json_string("(message not valid UTF-8)"));
    json_object_set_new(o, "error", err);
    return dump(o);
}

bool proto_token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < lb; i++) {
        d |= (unsigned char)(a[i < la ? i : 0] ^ b[i]);
    }
    return d == 0 && la == lb;
}

json_t *proto_string(const char *s, size_t n)
{
    json_t *v = json_stringn(s, n);
    if (v != NULL) {
        return v;
    }
    /* not valid UTF-8 (a model can emit stray bytes): replace bad bytes with U+FFFD */
    char *out = malloc(n * 3 + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t len = u[i] < 0x80 ? 1 : (u[i] >> 5) == 6 ? 2 : (u[i] >> 4) == 14 ? 3 : (u[i] >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n && u[i] != 0;
        for (size_t k = 1; ok && k < len; k++) {
            ok = (u[i + k] & 0xC0) == 0x80;
        }
        json_t *probe = ok && len > 1 ? json_stringn(s + i, len) : NULL; /* overlongs, surrogates */
        if (ok && (len == 1 || probe != NULL)) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += 1;
        }
        if (probe != NULL) {
            json_decref(probe);
        }
    }
    v = json_stringn(out, o);
    free(out);
    return v;
}
