/* strata-worker transport: the listener, nng rep contexts, replies and pipe
 * events (see server_int.h). */
#include "server_int.h"

#include "common.h"

#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void conn_recv(conn *c)
{
    c->sending = false;
    nng_ctx_recv(c->ctx, c->aio);
}

/* Send text (malloc'd, taken) as the reply of the request c holds. */
void conn_reply(conn *c, char *text)
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

void conn_cb(void *arg)
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
    int pipe_id = nng_pipe_id(nng_msg_get_pipe(m));
    worker_handle(c->w, c, nng_msg_body(m), nng_msg_len(m), pipe_id > 0 ? (uint32_t)pipe_id : 0);
    nng_msg_free(m);
}


/* A client connection closed: whatever it submitted and did not collect is
 * cancelled, so its batch slot frees (the client has failed those requests
 * with STRATA_ERR_WORKER_LOST already). */
void worker_pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    worker *w = arg;
    int id = nng_pipe_id(p);
    if (ev != NNG_PIPE_EV_REM_POST || id <= 0) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    cancel_pipe_locked(w, (uint32_t)id);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

bool worker_pipe_alive(uint32_t pipe_id)
{
    nng_pipe p = NNG_PIPE_INITIALIZER;
    nng_sockaddr sa;
    if (pipe_id == 0) {
        return true; /* unknown: keep it */
    }
    p.id = pipe_id;
    /* a closed pipe is gone from nng's table: its options fail */
    return nng_pipe_get_addr(p, NNG_OPT_REMADDR, &sa) == 0;
}

/* A whole file as a NUL-terminated string (PEM). */
static char *read_text(const char *path, strata_error *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        st_error(err, STRATA_ERR_IO, "cannot open %s", path);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap == 0 ? 8192 : cap * 2;
            if (cap > (16u << 20)) {
                st_error(err, STRATA_ERR_LIMIT, "%s is larger than 16 MiB: not a PEM file", path);
                break;
            }
            char *b = realloc(buf, cap);
            if (b == NULL) {
                st_error(err, STRATA_ERR_NOMEM, "out of memory");
                break;
            }
            buf = b;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) {
            fclose(f);
            buf[len] = '\0';
            return buf;
        }
    }
    fclose(f);
    free(buf);
    return NULL;
}

/* The TLS configuration of a tls+tcp:// listener: own certificate and key,
 * and with tls_ca a required client certificate signed by that CA. */
static strata_err tls_config(const worker_opts *o, nng_tls_config **out, strata_error *err)
{
    *out = NULL;
    if (o->tls_cert == NULL || o->tls_key == NULL) {
        return st_error(err, STRATA_ERR_ARG, "%s is a TLS URL: give --tls-cert FILE and --tls-key FILE (PEM)",
                        o->listen);
    }
    nng_tls_config *cfg = NULL;
    int rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_SERVER);
    if (rv == NNG_ENOTSUP) {
        return st_error(err, STRATA_ERR_UNSUPPORTED,
                        "this nng build has no TLS (%s): listen on ipc:// or on 127.0.0.1 behind an SSH tunnel "
                        "or stunnel instead",
                        nng_strerror(rv));
    }
    if (rv != 0) {
        return st_error(err, STRATA_ERR_IO, "TLS configuration: %s", nng_strerror(rv));
    }
    char *cert = read_text(o->tls_cert, err);
    char *key = cert != NULL ? read_text(o->tls_key, err) : NULL;
    char *ca = key != NULL && o->tls_ca != NULL ? read_text(o->tls_ca, err) : NULL;
    strata_err rc = STRATA_OK;
    if (cert == NULL || key == NULL || (o->tls_ca != NULL && ca == NULL)) {
        rc = err->code != STRATA_OK ? err->code : STRATA_ERR_IO;
    } else if ((rv = nng_tls_config_own_cert(cfg, cert, key, NULL)) != 0) {
        rc = st_error(err, STRATA_ERR_ARG, "TLS certificate %s / key %s: %s", o->tls_cert, o->tls_key,
                      nng_strerror(rv));
    } else if (ca != NULL && (rv = nng_tls_config_ca_chain(cfg, ca, NULL)) != 0) {
        rc = st_error(err, STRATA_ERR_ARG, "TLS client CA %s: %s", o->tls_ca, nng_strerror(rv));
    } else if ((rv = nng_tls_config_auth_mode(cfg, ca != NULL ? NNG_TLS_AUTH_MODE_REQUIRED
                                                               : NNG_TLS_AUTH_MODE_NONE)) != 0) {
        rc = st_error(err, STRATA_ERR_ARG, "TLS auth mode: %s", nng_strerror(rv));
    }
    free(cert);
    free(key);
    free(ca);
    if (rc != STRATA_OK) {
        nng_tls_config_free(cfg);
        return rc;
    }
    *out = cfg;
    return STRATA_OK;
}

/* Open the rep socket, its contexts and the listener (with TLS for
 * tls+tcp://), and start receiving. */
strata_err worker_listen(worker *w, strata_error *err)
{
    const worker_opts *o = &w->o;
    bool tls = st_url_is_tls(o->listen);
    if (!tls && (o->tls_cert != NULL || o->tls_key != NULL || o->tls_ca != NULL)) {
        return st_error(err, STRATA_ERR_ARG, "--tls-cert, --tls-key and --tls-ca need a tls+tcp:// URL (not %s)",
                        o->listen);
    }
    nng_tls_config *cfg = NULL;
    if (tls) {
        strata_err rc = tls_config(o, &cfg, err);
        if (rc != STRATA_OK) {
            return rc;
        }
    }
    int rv = nng_rep0_open(&w->sock);
    if (rv == 0) {
        w->sock_open = true;
        rv = nng_socket_set_size(w->sock, NNG_OPT_RECVMAXSZ, o->max_message_bytes);
    }
    if (rv == 0) {
        rv = nng_pipe_notify(w->sock, NNG_PIPE_EV_REM_POST, worker_pipe_event, w);
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
    nng_listener l = NNG_LISTENER_INITIALIZER;
    if (rv == 0) {
        rv = nng_listener_create(&l, w->sock, o->listen);
    }
    if (rv == 0 && cfg != NULL) {
        rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg);
    }
    if (rv == 0) {
        rv = nng_listener_start(l, 0);
    }
    if (cfg != NULL) {
        nng_tls_config_free(cfg); /* the listener holds its own reference */
    }
    if (rv != 0) {
        return st_error(err, STRATA_ERR_IO, "cannot listen on %s: %s", o->listen, nng_strerror(rv));
    }
    for (int i = 0; i < w->n_conns; i++) {
        conn_recv(&w->conns[i]);
    }
    return STRATA_OK;
}
