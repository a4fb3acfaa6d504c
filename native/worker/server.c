/* strata-worker server: nng rep contexts, request records, the scheduler
 * thread (see server.h, protocol.h). */
#include "server.h"

#include "protocol.h"
#include "scheduler.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STREAM_IDLE_MS 60000.0 /* a streamed request nobody polls is cancelled */

typedef struct conn {
    worker *w;
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;
} conn;

/* One model request from arrival to its last reply. */
typedef struct wreq {
    struct worker *w;
    uint64_t rid;
    proto_op op;
    json_t *id;              /* client's id (owned copy) */
    conn *waiter;            /* non-streamed: the conn to answer when done */
    bool stream;
    char *buf;               /* streamed text so far */
    size_t len, cap;
    bool done;
    bool ok;
    json_t *body;            /* result when ok */
    const char *err_code;
    char err_msg[512];
    conn *poller;            /* a held poll */
    json_t *poll_id;
    size_t poll_offset;
    double poll_deadline;
    double last_touch;
    double deadline;         /* 0: none */
    volatile int cancel;
    /* submission (read by the scheduler thread) */
    st_req_desc desc;
    strata_token *toks;      /* (n_toks) */
    strata_token **opt_toks; /* (n_options) score */
    int *opt_len;
    char **opt_text;         /* (n_options) for the reply */
    char **stops;            /* (n_stop) */
    int n_stop;
    bool submitted;
    struct wreq *next;       /* all records */
    struct wreq *next_in;    /* incoming queue */
} wreq;

struct worker {
    worker_opts o;
    strata_model *model;
    strata_model_info info;
    proto_limits lim;
    nng_socket sock;
    bool sock_open;
    conn *conns;             /* (n_conns) */
    int n_conns;
    st_sched *sched;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    wreq *reqs;
    wreq *in_head, *in_tail;
    int n_inflight;          /* model requests not yet done */
    uint64_t next_rid;
    bool draining;
    bool stopping;
    st_sched_stats sstats;
    uint64_t n_requests, n_errors, n_done;
    double t_start;
    atomic_int n_sending;    /* replies handed to nng, not yet sent */
};

void worker_opts_default(worker_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->listen = "ipc:///tmp/strata.sock";
    o->max_prompt_tokens = 4096;
    o->max_new_tokens = 1024;
    o->max_queue = 64;
    o->timeout_ms = 120000;
    o->n_ctx = 2048;
    o->max_batch = 16;
    o->step_tokens = 256;
    o->max_message_bytes = 4u << 20;
}

/* ------------------------------------------------------------- replies -- */

static void conn_recv(conn *c)
{
    c->sending = false;
    nng_ctx_recv(c->ctx, c->aio);
}

/* Send text (malloc'd, taken) as the reply of the request c holds. */
static void conn_reply(conn *c, char *text)
{
    static const char oom[] = "{\"v\":1,\"ok\":false,\"error\":{\"code\":\"STRATA_ERR_NOMEM\",\"message\":\"out of memory\"}}";
    nng_msg *m = NULL;
    const char *t = text != NULL ? text : oom;
    if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, t, strlen(t)) != 0) {
        if (m != NULL) {
            nng_msg_free(m);
        }
        free(text);
        conn_recv(c); /* the client's request times out */
        return;
    }
    free(text);
    c->sending = true;
    atomic_fetch_add(&c->w->n_sending, 1);
    nng_aio_set_msg(c->aio, m);
    nng_ctx_send(c->ctx, c->aio);
}

static double now_ms(void)
{
    return st_now_ms();
}

/* ------------------------------------------------------------- records -- */

static void wreq_free(wreq *r)
{
    if (r == NULL) {
        return;
    }
    if (r->id != NULL) {
        json_decref(r->id);
    }
    if (r->poll_id != NULL) {
        json_decref(r->poll_id);
    }
    if (r->body != NULL) {
        json_decref(r->body);
    }
    free(r->buf);
    free(r->toks);
    if (r->opt_toks != NULL) {
        for (int i = 0; i < r->desc.n_options; i++) {
            free(r->opt_toks[i]);
            free(r->opt_text[i]);
        }
    }
    free(r->opt_toks);
    free(r->opt_text);
    free(r->opt_len);
    if (r->stops != NULL) {
        for (int i = 0; i < r->n_stop; i++) {
            free(r->stops[i]);
        }
    }
    free(r->stops);
    free(r);
}

/* Under mu. */
static void wreq_unlink(worker *w, wreq *r)
{
    for (wreq **p = &w->reqs; *p != NULL; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            return;
        }
    }
}

static wreq *wreq_find(worker *w, uint64_t rid)
{
    for (wreq *r = w->reqs; r != NULL; r = r->next) {
        if (r->rid == rid) {
            return r;
        }
    }
    return NULL;
}

/* The reply of a finished request, echoing id. */
static char *final_reply(const wreq *r, const json_t *id, json_t *extra)
{
    if (!r->ok) {
        if (extra != NULL) {
            json_decref(extra);
        }
        return proto_reply_error(id, r->err_code, "%s", r->err_msg);
    }
    json_t *body = json_deep_copy(r->body);
    if (extra != NULL && body != NULL) {
        json_object_update(body, extra);
    }
    if (extra != NULL) {
        json_decref(extra);
    }
    return proto_reply_ok(id, body);
}

/* Answer a held poll (under mu). When the request is done the record goes. */
static void answer_poll(worker *w, wreq *r)
{
    conn *c = r->poller;
    json_t *id = r->poll_id;
    size_t off = ST_MIN(r->poll_offset, r->len);
    r->poller = NULL;
    r->poll_id = NULL;
    r->last_touch = now_ms();
    char *text;
    if (r->done && !r->ok) {
        text = proto_reply_error(id, r->err_code, "%s", r->err_msg);
    } else {
        json_t *b = json_object();
        json_object_set_new(b, "rid", json_integer((json_int_t)r->rid));
        json_object_set_new(b, "text", proto_string(r->buf != NULL ? r->buf + off : "", r->len - off));
        json_object_set_new(b, "offset", json_integer((json_int_t)r->len));
        json_object_set_new(b, "done", json_boolean(r->done));
        if (r->done) {
            json_object_set(b, "result", r->body);
        }
        text = proto_reply_ok(id, b);
    }
    if (id != NULL) {
        json_decref(id);
    }
    conn_reply(c, text);
    if (r->done) {
        wreq_unlink(w, r);
        wreq_free(r);
    }
}

/* ------------------------------------------------- scheduler callbacks -- */

static void set_error(wreq *r, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_error(wreq *r, const char *code, const char *fmt, ...)
{
    r->ok = false;
    r->err_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err_msg, sizeof(r->err_msg), fmt, ap);
    va_end(ap);
}

static json_t *result_body(const wreq *r, const st_req_result *res)
{
    json_t *b = json_object();
    if (b == NULL) {
        return NULL;
    }
    json_object_set_new(b, "rid", json_integer((json_int_t)r->rid));
    json_object_set_new(b, "prompt_tokens", json_integer((json_int_t)res->n_prompt_tokens));
    json_object_set_new(b, "prefix_reused", json_integer((json_int_t)res->n_prefix_reused));
    json_object_set_new(b, "prompt_ms", json_real(res->prompt_ms));
    switch (r->op) {
    case PROTO_GENERATE:
    case PROTO_CHAT: {
        size_t n = res->text != NULL ? strlen(res->text) : 0;
        json_object_set_new(b, "text", proto_string(res->text != NULL ? res->text : "", n));
        json_object_set_new(b, "gen_tokens", json_integer((json_int_t)res->n_gen_tokens));
        json_object_set_new(b, "stop_reason", json_string(strata_stop_name(res->stop)));
        json_object_set_new(b, "gen_ms", json_real(res->gen_ms));
        break;
    }
    case PROTO_SCORE: {
        json_t *opts = json_array();
        for (int i = 0; i < res->n_options; i++) {
            json_t *o = json_object();
            json_object_set_new(o, "option", proto_string(r->opt_text[i], strlen(r->opt_text[i])));
            json_object_set_new(o, "logprob", json_real(res->logprob[i]));
            json_object_set_new(o, "prob", json_real(res->prob[i]));
            json_object_set_new(o, "tokens", json_integer(r->opt_len[i]));
            json_array_append_new(opts, o);
        }
        json_object_set_new(b, "options", opts);
        break;
    }
    case PROTO_EMBED: {
        json_t *e = json_array();
        for (int i = 0; i < res->n_embd; i++) {
            json_array_append_new(e, json_real(res->embd[i]));
        }
        json_object_set_new(b, "embedding", e);
        json_object_set_new(b, "dim", json_integer(res->n_embd));
        break;
    }
    default:
        break;
    }
    return b;
}

/* Record the end of a request and answer whoever waits (under mu). */
static void finish_locked(worker *w, wreq *r)
{
    r->done = true;
    r->last_touch = now_ms();
    w->n_inflight--;
    w->n_done++;
    if (!r->ok) {
        w->n_errors++;
    }
    if (r->waiter != NULL) {
        conn *c = r->waiter;
        r->waiter = NULL;
        conn_reply(c, final_reply(r, r->id, NULL));
        wreq_unlink(w, r);
        wreq_free(r);
    } else if (r->poller != NULL) {
        answer_poll(w, r);
    }
}

static bool sched_piece(st_req *req, const char *piece, size_t len, void *user)
{
    wreq *r = user;
    worker *w = r->w;
    (void)req;
    if (!r->stream) {
        return true;
    }
    pthread_mutex_lock(&w->mu);
    if (r->len + len + 1 > r->cap) {
        size_t cap = ST_MAX(r->cap * 2, r->len + len + 256);
        char *b = realloc(r->buf, cap);
        if (b == NULL) {
            pthread_mutex_unlock(&w->mu);
            return true; /* the final result still has the whole text */
        }
        r->buf = b;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, piece, len);
    r->len += len;
    r->buf[r->len] = '\0';
    if (r->poller != NULL) {
        answer_poll(w, r);
    }
    pthread_mutex_unlock(&w->mu);
    return true;
}

static void sched_done(st_req *req, void *user)
{
    wreq *r = user;
    worker *w = r->w;
    const st_req_result *res = st_req_get_result(req);
    json_t *body = NULL;
    if (res->rc == STRATA_OK) {
        body = result_body(r, res);
    }
    pthread_mutex_lock(&w->mu);
    if (res->rc == STRATA_OK && body != NULL) {
        r->ok = true;
        r->body = body;
        if (r->stream && (r->op == PROTO_GENERATE || r->op == PROTO_CHAT) && res->text != NULL) {
            /* what the pieces missed (none unless memory ran short) */
            size_t n = strlen(res->text);
            if (n > r->len) {
                char *b = realloc(r->buf, n + 1);
                if (b != NULL) {
                    memcpy(b, res->text, n + 1);
                    r->buf = b;
                    r->len = n;
                    r->cap = n + 1;
                }
            }
        }
    } else if (res->rc == STRATA_OK) {
        set_error(r, "STRATA_ERR_NOMEM", "out of memory");
    } else if (r->deadline > 0 && now_ms() >= r->deadline) {
        set_error(r, "STRATA_ERR_TIMEOUT", "request timed out after %d ms", w->o.timeout_ms);
    } else {
        set_error(r, strata_err_name(res->rc), "%s", res->err.msg);
    }
    st_req_free(req);
    finish_locked(w, r);
    pthread_mutex_unlock(&w->mu);
}

/* ------------------------------------------------------ scheduler thread -- */

/* Held polls past their wait, abandoned streams (under mu). */
static void expire_locked(worker *w, double now)
{
    for (wreq *r = w->reqs, *next; r != NULL; r = next) {
        next = r->next;
        if (r->poller != NULL && now >= r->poll_deadline) {
            answer_poll(w, r); /* may free r */
            continue;
        }
        if (r->stream && r->poller == NULL && now - r->last_touch > STREAM_IDLE_MS) {
            if (r->done) {
                wreq_unlink(w, r);
                wreq_free(r);
            } else {
                r->cancel = 1; /* the client is gone */
            }
        }
    }
}

static void *sched_thread(void *arg)
{
    worker *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stopping) {
        wreq *in = w->in_head;
        w->in_head = w->in_tail = NULL;
        expire_locked(w, now_ms());
        pthread_mutex_unlock(&w->mu);
        while (in != NULL) {
            wreq *r = in;
            in = r->next_in;
            st_req *sr = NULL;
            strata_error e = {0};
            strata_err rc = st_sched_submit(w->sched, &r->desc, &sr, &e);
            if (rc != STRATA_OK) {
                pthread_mutex_lock(&w->mu);
                set_error(r, strata_err_name(rc), "%s", e.msg);
                finish_locked(w, r);
                pthread_mutex_unlock(&w->mu);
            }
        }
        int pending = st_sched_pending(w->sched);
        if (pending > 0) {
            strata_error e = {0};
            strata_err rc = st_sched_step(w->sched, &pending, &e);
            if (rc != STRATA_OK) {
                fprintf(stderr, "strata-worker: step failed: %s\n", e.msg);
            }
        }
        pthread_mutex_lock(&w->mu);
        st_sched_get_stats(w->sched, &w->sstats);
        if (pending == 0 && w->in_head == NULL && !w->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 20 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        }
    }
    pthread_mutex_unlock(&w->mu);
    /* requests still queued or running end as cancelled (callbacks reply) */
    st_sched_free(w->sched);
    w->sched = NULL;
    pthread_mutex_lock(&w->mu);
    for (wreq *r = w->in_head, *next; r != NULL; r = next) {
        next = r->next_in;
        set_error(r, "STRATA_ERR_SHUTDOWN", "the worker is shutting down");
        finish_locked(w, r);
    }
    w->in_head = w->in_tail = NULL;
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ------------------------------------------------------------- handlers -- */

/* Tokenize text into a malloc'd array. */
static strata_err tokenize(worker *w, const char *text, size_t len, bool add_bos, bool special, strata_token **out,
                           size_t *n, strata_error *e)
{
    size_t cap = len + 8;
    *out = malloc(cap * sizeof(strata_token));
    if (*out == NULL) {
        return st_error(e, STRATA_ERR_NOMEM, "out of memory");
    }
    strata_err rc = strata_tokenize(w->model, text, len, add_bos, special, *out, cap, n, e);
    if (rc == STRATA_ERR_LIMIT && *n > cap) {
        strata_token *t = realloc(*out, *n * sizeof(strata_token));
        if (t == NULL) {
            return st_error(e, STRATA_ERR_NOMEM, "out of memory");
        }
        *out = t;
        cap = *n;
        rc = strata_tokenize(w->model, text, len, add_bos, special, *out, cap, n, e);
    }
    if (rc != STRATA_OK) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

static int common_prefix(const strata_token *a, size_t na, const strata_token *b, size_t nb)
{
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) {
        i++;
    }
    return (int)i;
}

/* Tokens of a model request into r (generate, chat, score, embed). Returns
 * an error reply (malloc'd) or NULL on success. */
static char *prepare(worker *w, const proto_req *q, wreq *r)
{
    strata_error e = {0};
    bool add_bos = q->has_add_bos ? q->add_bos : w->info.add_bos;
    size_t n = 0;
    strata_err rc = STRATA_OK;
    if (q->op == PROTO_GENERATE && q->tokens != NULL) {
        r->toks = malloc(((size_t)q->n_tokens + 1) * sizeof(strata_token));
        if (r->toks == NULL) {
            return proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
        }
        memcpy(r->toks, q->tokens, (size_t)q->n_tokens * sizeof(strata_token));
        n = (size_t)q->n_tokens;
        for (size_t i = 0; i < n; i++) {
            if (r->toks[i] >= w->info.n_vocab) {
                return proto_reply_error(q->id, "STRATA_ERR_ARG", "tokens[%zu] = %d is outside the vocabulary (%d)",
                                         i, r->toks[i], w->info.n_vocab);
            }
        }
    } else if (q->op == PROTO_CHAT) {
        size_t nm = q->n_messages;
        strata_chat_message *msgs = calloc(nm + 1, sizeof(*msgs));
        if (msgs == NULL) {
            return proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
        }
        size_t k = 0;
        if (q->system != NULL && (nm == 0 || strcmp(q->messages[0].role, "system") != 0)) {
            msgs[k].role = "system";
            msgs[k].content = q->system;
            k++;
        }
        memcpy(msgs + k, q->messages, nm * sizeof(*msgs));
        char *text = NULL;
        rc = strata_chat_apply(w->model, q->template_name, msgs, nm + k, true, &text, &e);
        free(msgs);
        if (rc == STRATA_OK) {
            rc = tokenize(w, text, strlen(text), add_bos, true, &r->toks, &n, &e);
        }
        free(text);
        /* templates that write BOS themselves would otherwise get it twice */
        if (rc == STRATA_OK && n >= 2 && r->toks[0] == w->info.bos && r->toks[1] == w->info.bos) {
            memmove(r->toks, r->toks + 1, (n - 1) * sizeof(strata_token));
            n--;
        }
    } else {
        rc = tokenize(w, q->text, q->text_len, add_bos, q->op == PROTO_GENERATE && q->special, &r->toks, &n, &e);
    }
    if (rc != STRATA_OK) {
        return proto_reply_error(q->id, strata_err_name(rc), "%s", e.msg);
    }
    if (n == 0) {
        return proto_reply_error(q->id, "STRATA_ERR_ARG", "the prompt is empty (no tokens)");
    }
    if (n > (size_t)w->o.max_prompt_tokens) {
        return proto_reply_error(q->id, "STRATA_ERR_LIMIT",
                                 "the prompt has %zu tokens; this worker accepts at most %d", n,
                                 w->o.max_prompt_tokens);
    }
    st_req_desc *d = &r->desc;
    d->prompt = r->toks;
    d->n_prompt = (int)n;
    d->cancel = &r->cancel;
    d->user = r;
    d->on_done = sched_done;
    if (q->op == PROTO_GENERATE || q->op == PROTO_CHAT) {
        d->kind = ST_REQ_GENERATE;
        d->sampling = q->sampling;
        d->max_tokens = q->max_tokens > 0 ? q->max_tokens : ST_MIN(256, w->o.max_new_tokens);
        d->on_piece = sched_piece;
        if (q->n_stop > 0) {
            r->stops = calloc(q->n_stop, sizeof(char *));
            if (r->stops == NULL) {
                return proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
            }
            r->n_stop = (int)q->n_stop;
            for (size_t i = 0; i < q->n_stop; i++) {
                r->stops[i] = strdup(q->stop[i]);
                if (r->stops[i] == NULL) {
                    return proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
                }
            }
            d->stop = (const char *const *)r->stops;
            d->n_stop = q->n_stop;
        }
    } else if (q->op == PROTO_EMBED) {
        d->kind = ST_REQ_EMBED;
    } else {
        /* score: each option's tokens are what tokenizing prompt + option adds
         * after the part all of them share with the prompt's own tokens */
        d->kind = ST_REQ_SCORE;
        int k = (int)q->n_options;
        r->opt_toks = calloc((size_t)k, sizeof(strata_token *));
        r->opt_text = calloc((size_t)k, sizeof(char *));
        r->opt_len = calloc((size_t)k, sizeof(int));
        strata_token **full = calloc((size_t)k, sizeof(strata_token *));
        size_t *nfull = calloc((size_t)k, sizeof(size_t));
        char *err = NULL;
        if (r->opt_toks == NULL || r->opt_text == NULL || r->opt_len == NULL || full == NULL || nfull == NULL) {
            err = proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
        }
        int shared = (int)n;
        for (int i = 0; err == NULL && i < k; i++) {
            size_t lo = strlen(q->options[i]);
            char *joined = malloc(q->text_len + lo + 1);
            r->opt_text[i] = strdup(q->options[i]);
            if (joined == NULL || r->opt_text[i] == NULL) {
                free(joined);
                err = proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
                break;
            }
            memcpy(joined, q->text, q->text_len);
            memcpy(joined + q->text_len, q->options[i], lo + 1);
            rc = tokenize(w, joined, q->text_len + lo, add_bos, false, &full[i], &nfull[i], &e);
            free(joined);
            if (rc != STRATA_OK) {
                err = proto_reply_error(q->id, strata_err_name(rc), "%s", e.msg);
                break;
            }
            shared = ST_MIN(shared, common_prefix(full[i], nfull[i], r->toks, n));
        }
        if (err == NULL && shared < 1) {
            err = proto_reply_error(q->id, "STRATA_ERR_ARG", "the prompt is empty (no tokens before the options)");
        }
        for (int i = 0; err == NULL && i < k; i++) {
            int len = (int)nfull[i] - shared;
            if (len < 1) {
                err = proto_reply_error(q->id, "STRATA_ERR_ARG", "option %d adds no token to the prompt", i);
                break;
            }
            if (shared + len > w->o.max_prompt_tokens) {
                err = proto_reply_error(q->id, "STRATA_ERR_LIMIT",
                                        "prompt and option %d have %d tokens; this worker accepts at most %d", i,
                                        shared + len, w->o.max_prompt_tokens);
                break;
            }
            r->opt_toks[i] = malloc((size_t)len * sizeof(strata_token));
            if (r->opt_toks[i] == NULL) {
                err = proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
                break;
            }
            memcpy(r->opt_toks[i], full[i] + shared, (size_t)len * sizeof(strata_token));
            r->opt_len[i] = len;
        }
        for (int i = 0; full != NULL && i < k; i++) {
            free(full[i]);
        }
        free(full);
        free(nfull);
        d->n_options = k; /* wreq_free walks the option arrays */
        if (err != NULL) {
            return err;
        }
        d->n_prompt = shared;
        d->options = (const strata_token *const *)r->opt_toks;
        d->option_len = r->opt_len;
    }
    return NULL;
}

/* A model request: validate, tokenize, queue. Replies now on error or for
 * a streamed request; otherwise c waits in the record. */
static void handle_model_op(worker *w, conn *c, const proto_req *q)
{
    pthread_mutex_lock(&w->mu);
    const char *code = NULL;
    if (w->draining || w->stopping) {
        code = "STRATA_ERR_SHUTDOWN";
    } else if (w->n_inflight >= w->o.max_queue) {
        code = "STRATA_ERR_BUSY";
    } else {
        w->n_inflight++; /* reserve the slot */
    }
    pthread_mutex_unlock(&w->mu);
    if (code != NULL) {
        bool busy = strcmp(code, "STRATA_ERR_BUSY") == 0;
        conn_reply(c, busy ? proto_reply_error(q->id, code, "the queue is full (%d requests in flight)", w->o.max_queue)
                           : proto_reply_error(q->id, code, "the worker is shutting down"));
        return;
    }
    wreq *r = calloc(1, sizeof(*r));
    char *err = NULL;
    if (r == NULL) {
        err = proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
    } else {
        r->w = w;
        r->op = q->op;
        r->stream = q->stream && (q->op == PROTO_GENERATE || q->op == PROTO_CHAT);
        r->id = q->id != NULL ? json_deep_copy(q->id) : NULL;
        err = prepare(w, q, r);
    }
    if (err != NULL) {
        pthread_mutex_lock(&w->mu);
        w->n_inflight--;
        w->n_errors++;
        pthread_mutex_unlock(&w->mu);
        wreq_free(r);
        conn_reply(c, err);
        return;
    }
    int timeout = q->timeout_ms > 0 ? ST_MIN(q->timeout_ms, w->o.timeout_ms) : w->o.timeout_ms;
    r->deadline = timeout > 0 ? now_ms() + timeout : 0;
    r->desc.deadline_ms = r->deadline;
    r->last_touch = now_ms();
    pthread_mutex_lock(&w->mu);
    r->rid = ++w->next_rid;
    r->next = w->reqs;
    w->reqs = r;
    if (w->in_tail != NULL) {
        w->in_tail->next_in = r;
    } else {
        w->in_head = r;
    }
    w->in_tail = r;
    char *now = NULL;
    if (r->stream) {
        json_t *b = json_object();
        json_object_set_new(b, "rid", json_integer((json_int_t)r->rid));
        json_object_set_new(b, "stream", json_true());
        json_object_set_new(b, "prompt_tokens", json_integer(r->desc.n_prompt));
        now = proto_reply_ok(q->id, b);
    } else {
        r->waiter = c;
    }
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    if (now != NULL) {
        conn_reply(c, now);
    }
}

static void handle_poll(worker *w, conn *c, const proto_req *q)
{
    pthread_mutex_lock(&w->mu);
    wreq *r = wreq_find(w, q->rid);
    if (r == NULL || !r->stream) {
        pthread_mutex_unlock(&w->mu);
        conn_reply(c, proto_reply_error(q->id, "STRATA_ERR_NOT_FOUND",
                                        "no streamed request %llu (finished and collected, or never existed)",
                                        (unsigned long long)q->rid));
        return;
    }
    if (r->poller != NULL) {
        answer_poll(w, r); /* the older poll gets what there is */
        r = wreq_find(w, q->rid);
        if (r == NULL) {
            pthread_mutex_unlock(&w->mu);
            conn_reply(c, proto_reply_error(q->id, "STRATA_ERR_NOT_FOUND", "request %llu already finished",
                                            (unsigned long long)q->rid));
            return;
        }
    }
    r->poller = c;
    r->poll_id = q->id != NULL ? json_deep_copy(q->id) : NULL;
    r->poll_offset = q->offset;
    r->poll_deadline = now_ms() + q->wait_ms;
    r->last_touch = now_ms();
    if (r->done || r->len > q->offset || q->wait_ms == 0) {
        answer_poll(w, r);
    }
    pthread_mutex_unlock(&w->mu);
}

static void handle_cancel(worker *w, conn *c, const proto_req *q)
{
    pthread_mutex_lock(&w->mu);
    wreq *r = wreq_find(w, q->rid);
    bool found = r != NULL;
    if (found) {
        r->cancel = 1;
    }
    pthread_mutex_unlock(&w->mu);
    json_t *b = json_object();
    json_object_set_new(b, "rid", json_integer((json_int_t)q->rid));
    json_object_set_new(b, "found", json_boolean(found));
    conn_reply(c, proto_reply_ok(q->id, b));
}

static json_t *model_json(const worker *w)
{
    const strata_model_info *i = &w->info;
    json_t *m = json_object();
    json_object_set_new(m, "path", json_string(w->o.model_path));
    json_object_set_new(m, "arch", json_string(i->arch));
    json_object_set_new(m, "name", proto_string(i->name, strlen(i->name)));
    json_object_set_new(m, "n_layers", json_integer(i->n_layers));
    json_object_set_new(m, "n_embd", json_integer(i->n_embd));
    json_object_set_new(m, "n_vocab", json_integer(i->n_vocab));
    json_object_set_new(m, "n_ctx", json_integer(w->o.n_ctx));
    json_object_set_new(m, "n_params", json_integer((json_int_t)i->n_params));
    json_object_set_new(m, "file_bytes", json_integer((json_int_t)i->file_bytes));
    json_object_set_new(m, "weight_type", json_string(i->weight_type));
    json_object_set_new(m, "chat_template", json_string(i->chat_template));
    json_object_set_new(m, "add_bos", json_boolean(i->add_bos));
    json_object_set_new(m, "bos", json_integer(i->bos));
    json_object_set_new(m, "eos", json_integer(i->eos));
    return m;
}

static void handle_info(worker *w, conn *c, const proto_req *q)
{
    json_t *b = json_object();
    pthread_mutex_lock(&w->mu);
    if (q->op == PROTO_HEALTH) {
        json_object_set_new(b, "status", json_string(w->draining ? "draining" : "ok"));
        json_object_set_new(b, "version", json_string(STRATA_VERSION));
        json_object_set_new(b, "protocol", json_integer(PROTO_VERSION));
        json_object_set_new(b, "model", model_json(w));
    } else {
        const st_sched_stats *s = &w->sstats;
        json_object_set_new(b, "uptime_ms", json_real(now_ms() - w->t_start));
        json_object_set_new(b, "requests", json_integer((json_int_t)w->n_requests));
        json_object_set_new(b, "errors", json_integer((json_int_t)w->n_errors));
        json_object_set_new(b, "done", json_integer((json_int_t)w->n_done));
        json_object_set_new(b, "in_flight", json_integer(w->n_inflight));
        json_object_set_new(b, "steps", json_integer((json_int_t)s->steps));
        json_object_set_new(b, "tokens", json_integer((json_int_t)s->tokens));
        json_object_set_new(b, "seq_steps", json_integer((json_int_t)s->seq_steps));
        json_object_set_new(b, "max_seqs_in_step", json_integer(s->max_seqs_in_step));
        json_object_set_new(b, "prefix_tokens", json_integer((json_int_t)s->prefix_tokens));
        json_object_set_new(b, "sched_requests", json_integer((json_int_t)s->requests_done));
        json_object_set_new(b, "contexts", json_integer((json_int_t)s->contexts));
        /* every step reads each weight once (resident: from RAM; streamed:
         * from the store, see /proc/PID/io for what really came off disk) */
        json_object_set_new(b, "weight_bytes_per_step", json_integer((json_int_t)w->info.file_bytes));
        json_object_set_new(b, "weight_bytes_read", json_integer((json_int_t)(s->steps * w->info.file_bytes)));
        json_object_set_new(b, "max_queue", json_integer(w->o.max_queue));
        json_object_set_new(b, "max_batch", json_integer(w->o.max_batch));
        json_object_set_new(b, "streamed", json_boolean(w->o.stream));
    }
    pthread_mutex_unlock(&w->mu);
    conn_reply(c, proto_reply_ok(q->id, b));
}

static void handle_tokenize(worker *w, conn *c, const proto_req *q)
{
    strata_token *toks = NULL;
    size_t n = 0;
    strata_error e = {0};
    bool add_bos = q->has_add_bos ? q->add_bos : w->info.add_bos;
    strata_err rc = tokenize(w, q->text, q->text_len, add_bos, q->special, &toks, &n, &e);
    if (rc != STRATA_OK) {
        conn_reply(c, proto_reply_error(q->id, strata_err_name(rc), "%s", e.msg));
        return;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, json_integer(toks[i]));
    }
    free(toks);
    json_t *b = json_object();
    json_object_set_new(b, "tokens", a);
    conn_reply(c, proto_reply_ok(q->id, b));
}

static void handle(worker *w, conn *c, const char *buf, size_t len)
{
    proto_req q;
    proto_error e;
    pthread_mutex_lock(&w->mu);
    w->n_requests++;
    pthread_mutex_unlock(&w->mu);
    bool ok = proto_parse(buf, len, &w->lim, &q, &e);
    /* auth before anything else is revealed, even the parse error */
    if (w->o.token != NULL && (q.token == NULL || !proto_token_equal(q.token, w->o.token))) {
        conn_reply(c, proto_reply_error(q.id, "STRATA_ERR_AUTH", "a valid 'token' is required"));
    } else if (!ok) {
        conn_reply(c, proto_reply_error(q.id, e.code, "%s", e.message));
    } else {
        switch (q.op) {
        case PROTO_GENERATE:
        case PROTO_CHAT:
        case PROTO_SCORE:
        case PROTO_EMBED: handle_model_op(w, c, &q); break;
        case PROTO_POLL: handle_poll(w, c, &q); break;
        case PROTO_CANCEL: handle_cancel(w, c, &q); break;
        case PROTO_TOKENIZE: handle_tokenize(w, c, &q); break;
        case PROTO_HEALTH:
        case PROTO_STATS: handle_info(w, c, &q); break;
        }
    }
    if (!ok || (w->o.token != NULL && (q.token == NULL || !proto_token_equal(q.token, w->o.token)))) {
        pthread_mutex_lock(&w->mu);
        w->n_errors++;
        pthread_mutex_unlock(&w->mu);
    }
    proto_req_free(&q);
}

static void conn_cb(void *arg)
{
    conn *c = arg;
    int rv = nng_aio_result(c->aio);
    if (c->sending) {
        atomic_fetch_sub(&c->w->n_sending, 1);
        if (rv != 0) {
            nng_msg *m = nng_aio_get_msg(c->aio);
            if (m != NULL) {
                nng_msg_free(m);
            }
        }
        if (rv == NNG_ECLOSED) {
            return;
        }
        conn_recv(c);
        return;
    }
    if (rv != 0) {
        if (rv == NNG_ECLOSED) {
            return;
        }
        conn_recv(c);
        return;
    }
    nng_msg *m = nng_aio_get_msg(c->aio);
    handle(c->w, c, nng_msg_body(m), nng_msg_len(m));
    nng_msg_free(m);
}

/* ------------------------------------------------------------ lifecycle -- */

strata_err worker_start(const worker_opts *o, worker **out, strata_error *err)
{
    *out = NULL;
    worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    w->o = *o;
    w->t_start = now_ms();
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    proto_limits_default(&w->lim);
    w->lim.max_new_tokens = o->max_new_tokens;
    w->lim.max_tokens_in = o->max_prompt_tokens;

    strata_model_params mp;
    strata_model_params_default(&mp);
    mp.n_threads = o->threads;
    strata_err rc;
    if (o->stream) {
        strata_stream_params ssp;
        strata_stream_params_default(&ssp);
        ssp.memory_budget = o->stream_budget;
        ssp.store_path = o->store_path;
        rc = strata_model_load_streamed(o->model_path, &mp, &ssp, &w->model, err);
    } else {
        rc = strata_model_load(o->model_path, &mp, &w->model, err);
    }
    if (rc != STRATA_OK) {
        worker_stop(w);
        return rc;
    }
    strata_model_get_info(w->model, &w->info);
    st_sched_params sp;
    st_sched_params_default(&sp);
    sp.max_batch = o->max_batch;
    sp.step_tokens = o->step_tokens;
    sp.n_ctx = o->n_ctx;
    sp.n_threads = o->threads;
    rc = st_sched_new(w->model, &sp, &w->sched, err);
    if (rc != STRATA_OK) {
        worker_stop(w);
        return rc;
    }
    if (pthread_create(&w->thread, NULL, sched_thread, w) != 0) {
        worker_stop(w);
        return st_error(err, STRATA_ERR_INTERNAL, "cannot start the scheduler thread");
    }
    w->thread_started = true;

    int rv = nng_rep0_open(&w->sock);
    if (rv == 0) {
        w->sock_open = true;
        rv = nng_socket_set_size(w->sock, NNG_OPT_RECVMAXSZ, o->max_message_bytes);
    }
    w->n_conns = o->contexts > 0 ? o->contexts : o->max_queue + 32;
    w->conns = rv == 0 ? calloc((size_t)w->n_conns, sizeof(conn)) : NULL;
    if (rv == 0 && w->conns == NULL) {
        rv = NNG_ENOMEM;
    }
    for (int i = 0; rv == 0 && i < w->n_conns; i++) {
        conn *c = &w->conns[i];
        c->w = w;
        rv = nng_aio_alloc(&c->aio, conn_cb, c);
        if (rv == 0) {
            rv = nng_ctx_open(&c->ctx, w->sock);
        }
    }
    if (rv == 0) {
        rv = nng_listen(w->sock, o->listen, NULL, 0);
    }
    if (rv != 0) {
        worker_stop(w);
        return st_error(err, STRATA_ERR_IO, "cannot listen on %s: %s", o->listen, nng_strerror(rv));
    }
    for (int i = 0; i < w->n_conns; i++) {
        conn_recv(&w->conns[i]);
    }
    *out = w;
    return STRATA_OK;
}

void worker_drain(worker *w, int max_ms)
{
    double t_end = now_ms() + max_ms;
    pthread_mutex_lock(&w->mu);
    w->draining = true;
    pthread_mutex_unlock(&w->mu);
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int left = w->n_inflight;
        bool streams = false;
        for (wreq *r = w->reqs; r != NULL; r = r->next) {
            streams = streams || r->stream;
        }
        pthread_mutex_unlock(&w->mu);
        if ((left == 0 && !streams) || now_ms() > t_end) {
            break;
        }
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* let the last replies leave before the socket closes (1 s at most) */
    for (int i = 0; i < 100 && atomic_load(&w->n_sending) > 0; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* a completed send is queued on the pipe, not yet written */
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
}

void worker_stop(worker *w)
{
    if (w == NULL) {
        return;
    }
    if (w->thread_started) {
        pthread_mutex_lock(&w->mu);
        w->stopping = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
    } else if (w->sched != NULL) {
        st_sched_free(w->sched);
    }
    if (w->sock_open) {
        nng_close(w->sock);
    }
    for (int i = 0; w->conns != NULL && i < w->n_conns; i++) {
        if (w->conns[i].aio != NULL) {
            nng_aio_stop(w->conns[i].aio);
            nng_aio_free(w->conns[i].aio);
        }
    }
    free(w->conns);
    while (w->reqs != NULL) {
        wreq *r = w->reqs;
        w->reqs = r->next;
        wreq_free(r);
    }
    strata_model_free(w->model);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
