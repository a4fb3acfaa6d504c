/* strata-worker wire protocol, version 1: one JSON object per nng message.
 *
 * Request:  {"v":1, "op":OP, "id":ANY, "token":SECRET, ...op fields}
 * Reply:    {"v":1, "id":ANY, "ok":true, ...result}
 *        or {"v":1, "id":ANY, "ok":false, "error":{"code":CODE, "message":TEXT}}
 *
 * Ops and their fields (all optional unless marked):
 *   generate  prompt (string) | tokens (int[]): one is required; add_bos,
 *             special, max_tokens, temperature, top_k, top_p, min_p,
 *             repeat_penalty, repeat_last_n, presence_penalty,
 *             frequency_penalty, seed, json, stop (string | string[]),
 *             stream, timeout_ms
 *   chat      messages ([{role, content}], required), template, system,
 *             add_bos, and the sampling fields of generate
 *   score     prompt (required), options (string[], required), add_bos
 *   embed     input (string, required), add_bos
 *   tokenize  text (string, required), add_bos, special
 *   health, stats
 *   cancel    rid (the id the worker gave a request: any model op, running
 *             or queued; a generation ends with stop_reason "cancelled" and
 *             the text so far, the other ops with STRATA_ERR_CANCELLED)
 *   poll      rid (required), offset (bytes already received), wait_ms
 *
 * Every model op (generate, chat, score, embed) takes "timeout_ms" (capped
 * by the worker's --timeout-ms) and "async":true: the reply comes at once
 * with {"rid":N,"async":true}, so the client can cancel it, and the result
 * is collected by poll. Streaming: generate/chat with "stream":true (implies
 * async) reply at once with {"rid":N,"stream":true}; the client then sends
 * poll requests. A poll is held until text past `offset` exists, the request
 * ends, or wait_ms passes; it answers {"rid":N,"text":NEW,"offset":END,
 * "done":BOOL} and, when done, "result":{...the fields of the op's plain
 * reply} (or the op's error). A request whose client connection closes
 * (the pipe it was submitted on) is cancelled, so its batch slot frees.
 *
 * Error codes: the strata_err names (STRATA_ERR_ARG, STRATA_ERR_LIMIT, ...)
 * plus STRATA_ERR_PROTOCOL (malformed JSON, bad version, unknown op),
 * STRATA_ERR_AUTH, STRATA_ERR_BUSY (queue full), STRATA_ERR_TIMEOUT,
 * STRATA_ERR_SHUTDOWN (draining), STRATA_ERR_NOT_FOUND (unknown rid). */
#ifndef STRATA_WORKER_PROTOCOL_H
#define STRATA_WORKER_PROTOCOL_H

#include <jansson.h>

#include "strata.h"

#define PROTO_VERSION 1

typedef enum {
    PROTO_GENERATE,
    PROTO_CHAT,
    PROTO_SCORE,
    PROTO_EMBED,
    PROTO_TOKENIZE,
    PROTO_HEALTH,
    PROTO_STATS,
    PROTO_CANCEL,
    PROTO_POLL,
} proto_op;

typedef struct proto_limits {
    int max_new_tokens;    /* max_tokens above this is an error */
    int max_options;       /* score options */
    int max_stop;          /* stop strings */
    int max_messages;      /* chat messages */
    int max_tokens_in;     /* length of a "tokens" array */
} proto_limits;

void proto_limits_default(proto_limits *l);

typedef struct proto_req {
    json_t *root;                  /* owned: the parsed message */
    proto_op op;
    json_t *id;                    /* borrowed from root, NULL when absent */
    const char *token;             /* borrowed, NULL when absent */
    /* text input: prompt (generate, score), input (embed), text (tokenize) */
    const char *text;
    size_t text_len;
    strata_token *tokens;          /* (n_tokens) owned: "tokens" of generate */
    int n_tokens;
    bool has_add_bos;
    bool add_bos;
    bool special;
    /* chat */
    strata_chat_message *messages; /* (n_messages) owned array, borrowed strings */
    size_t n_messages;
    const char *template_name;
    const char *system;
    /* generate and chat */
    strata_sampler_params sampling;
    int max_tokens;                /* 0: not given */
    const char **stop;             /* (n_stop) owned array, borrowed strings */
    size_t n_stop;
    bool stream;
    /* score */
    const char **options;          /* (n_options) owned array, borrowed strings */
    size_t n_options;
    /* cancel, poll */
    uint64_t rid;
    size_t offset;
    int wait_ms;                   /* poll: how long to hold it; default 1000 */
    int timeout_ms;                /* 0: the worker's */
    bool async;                    /* model ops: reply {rid} at once, the result by poll */
} proto_req;

typedef struct proto_error {
    const char *code;              /* static string */
    char message[256];
} proto_error;

/* Parse and validate one message. On failure *e names the problem (out is
 * left empty; proto_req_free is still safe). id is set as soon as it is
 * known, so the error reply can echo it: the caller frees out either way. */
bool proto_parse(const char *buf, size_t len, const proto_limits *lim, proto_req *out, proto_error *e);
void proto_req_free(proto_req *r);

const char *proto_op_name(proto_op op);

/* Reply text (malloc'd, NUL-terminated). ok: body (may be NULL) is merged
 * into the reply and released. */
char *proto_reply_ok(const json_t *id, json_t *body);
char *proto_reply_error(const json_t *id, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Constant-time comparison of two NUL-terminated secrets. */
bool proto_token_equal(const char *a, const char *b);

/* A JSON string of n bytes; invalid UTF-8 bytes become U+FFFD. */
json_t *proto_string(const char *s, size_t n);


#endif
