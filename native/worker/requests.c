/* strata-worker request records: poll answers, the scheduler thread and its
 * callbacks (see server_int.h). */
#include "server_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void wreq_free(wreq *r)
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
void wreq_unlink(worker *w, wreq *r)
{
    for (wreq **p = &w->reqs; *p != NULL; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            return;
        }
    }
}

wreq *wreq_find(worker *w, uint64_t rid)
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
void answer_poll(worker *w, wreq *r)
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

void set_error(wreq *r, const char *code, const char *fmt, ...)
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
void finish_locked(worker *w, wreq *r)
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
    } else if (r->orphan) {
        wreq_unlink(w, r); /* nobody left to collect it */
        wreq_free(r);
    }
}

bool sched_piece(st_req *req, const char *piece, size_t len, void *user)
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

void sched_done(st_req *req, void *user)
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

/* Held polls past their wait, abandoned polled requests (under mu). */
static void expire_locked(worker *w, double now)
{
    for (wreq *r = w->reqs, *next; r != NULL; r = next) {
        next = r->next;
        if (r->poller != NULL && now >= r->poll_deadline) {
            answer_poll(w, r); /* may free r */
            continue;
        }
        if (r->polled && r->poller == NULL && now - r->last_touch > STREAM_IDLE_MS) {
            if (r->done) {
                wreq_unlink(w, r);
                wreq_free(r);
            } else {
                r->cancel = 1; /* the client is gone */
            }
        }
    }
}

/* The client connection pipe_id closed (under mu): cancel what it submitted. */
void cancel_pipe_locked(worker *w, uint32_t pipe_id)
{
    for (wreq *r = w->reqs, *next; r != NULL; r = next) {
        next = r->next;
        if (r->pipe != pipe_id) {
            continue;
        }
        if (r->done) {
            if (r->poller == NULL) {
                wreq_unlink(w, r); /* a finished result nobody can collect now */
                wreq_free(r);
            }
        } else {
            /* the scheduler still holds a running record: cancel it and let
             * finish_locked free it */
            r->orphan = true;
            if (!r->cancel) {
                r->cancel = 1;
                w->n_cancelled_pipe++;
            }
        }
    }
}

void *sched_thread(void *arg)
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

