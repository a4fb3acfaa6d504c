/* strata-worker op handlers and the dispatch (see server_int.h, protocol.h). */
#include "server_int.h"

#include <stdlib.h>
#include <string.h>

/* A model request: validate, tokenize, queue. Replies now on error or for
 * a polled (async, streamed) request; otherwise c waits in the record. */
static void handle_model_op(worker *w, conn *c, const proto_req *q, uint32_t pipe)
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
        r->polled = r->stream || q->async;
        r->pipe = pipe;
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
    if (r->polled) {
        json_t *b = json_object();
        json_object_set_new(b, "rid", json_integer((json_int_t)r->rid));
        json_object_set_new(b, r->stream ? "stream" : "async", json_true());
        json_object_set_new(b, "prompt_tokens", json_integer(r->desc.n_prompt));
        now = proto_reply_ok(q->id, b);
    } else {
        r->waiter = c;
    }
    /* the connection may have closed while we tokenized (its pipe event
     * ran before the record existed) */
    if (!worker_pipe_alive(pipe)) {
        r->cancel = 1;
        w->n_cancelled_pipe++;
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
    if (r == NULL || !r->polled) {
        pthread_mutex_unlock(&w->mu);
        conn_reply(c, proto_reply_error(q->id, "STRATA_ERR_NOT_FOUND",
                                        "no async or streamed request %llu (finished and collected, or never existed)",
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
        json_object_set_new(b, "cancelled_disconnected", json_integer((json_int_t)w->n_cancelled_pipe));
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
    strata_err rc = worker_tokenize(w, q->text, q->text_len, add_bos, q->special, &toks, &n, &e);
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

void worker_handle(worker *w, conn *c, const char *buf, size_t len, uint32_t pipe)
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
        case PROTO_EMBED: handle_model_op(w, c, &q, pipe); break;
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

