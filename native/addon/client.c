/* Node-API addon: the nng client of strata-worker (node/lib/worker.js wraps
 * it). One REQ socket per client with a dialer that reconnects by itself
 * (100 ms .. 2 s back-off) when the worker restarts; one nng context per
 * request, so any number of requests are in flight at once.
 *
 * Exports:
 *   workerConnect(url, tls?) -> client handle (the connection is made in the
 *     background). tls (for tls+tcp:// URLs): { ca: PEM of the CA that signed
 *     the worker's certificate (required unless insecure), cert, key: PEM of
 *     a client certificate (when the worker asks for one), serverName (default:
 *     the URL's host when it is a name; mbedTLS 2.x cannot match IP addresses,
 *     so for an address only the CA signature is checked), insecure: true to
 *     skip verifying the worker }
 *   workerRequest(client, jsonText, timeoutMs) -> Promise<string reply text>
 *   workerConnected(client) -> bool (a pipe to the worker is up)
 *   workerClose(client)
 * Rejections: Error with code STRATA_ERR_TIMEOUT (no reply in time, or no
 * worker reachable), STRATA_ERR_WORKER_LOST (the connection dropped while the
 * request was in flight: the worker died or restarted), STRATA_ERR_CLOSED,
 * STRATA_ERR_IO (other transport errors).
 *
 * Threading: nng completes requests on its own threads; results reach JS
 * through one threadsafe function per request. The client's in-flight list is
 * guarded by its mutex (the pipe-removal callback walks it). */
#include "addon.h"
#include "common.h"

#ifdef STRATA_NO_WORKER_CLIENT
/* Built without nng: the functions exist and say why they cannot work. */
static napi_value no_client(napi_env env, napi_callback_info info)
{
    (void)info;
    addon_throw_state(env, "STRATA_ERR_UNSUPPORTED",
                      "strata: this addon was built without nng (install libnng-dev and rebuild): "
                      "the strata-worker client is unavailable; the embedded engine still works");
    return NULL;
}

bool addon_register_client(napi_env env, napi_value exports)
{
    return addon_define(env, exports, "workerConnect", no_client) &&
           addon_define(env, exports, "workerRequest", no_client) &&
           addon_define(env, exports, "workerConnected", no_client) &&
           addon_define(env, exports, "workerClose", no_client);
}
#else

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const napi_type_tag client_tag = {0x3d9a6e2b71c54f08ULL, 0xb62f0e8d4c1a7953ULL};

typedef struct client_req client_req;

typedef struct wclient {
    nng_socket sock;
    bool open;               /* the socket is not closed yet */
    pthread_mutex_t mu;
    client_req *inflight;    /* under mu */
    int pipes;               /* connected pipes, under mu */
    int refs;                /* JS handle + in-flight requests (JS thread) */
} wclient;

struct client_req {
    wclient *cl;
    nng_ctx ctx;
    bool ctx_open;
    nng_aio *aio;
    bool receiving;          /* the request went out; waiting for the reply */
    bool lost;               /* under cl->mu: the pipe went away */
    napi_threadsafe_function tsfn;
    napi_deferred deferred;
    char *reply;             /* reply text on success */
    int rv;                  /* nng error, 0 on success */
    client_req *next;
};

static void client_free(wclient *cl)
{
    pthread_mutex_destroy(&cl->mu);
    free(cl);
}

static void client_unref(wclient *cl)
{
    if (--cl->refs == 0) {
        if (cl->open) {
            nng_close(cl->sock);
            cl->open = false;
        }
        client_free(cl);
    }
}

/* A pipe to the worker went away: whatever was sent on it will never be
 * answered (req0 would quietly resend it to the next worker; we fail it). */
static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    wclient *cl = arg;
    pthread_mutex_lock(&cl->mu);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        cl->pipes++;
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        cl->pipes--;
        for (client_req *r = cl->inflight; r != NULL; r = r->next) {
            if (r->receiving && !r->lost) {
                r->lost = true;
                nng_aio_cancel(r->aio); /* completes on an nng thread, not here */
            }
        }
    }
    pthread_mutex_unlock(&cl->mu);
}

static void req_cleanup(client_req *r)
{
    wclient *cl = r->cl;
    pthread_mutex_lock(&cl->mu);
    for (client_req **p = &cl->inflight; *p != NULL; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            break;
        }
    }
    pthread_mutex_unlock(&cl->mu);
    if (r->aio != NULL) {
        nng_aio_free(r->aio); /* waits for the callback to return */
    }
    if (r->ctx_open) {
        nng_ctx_close(r->ctx);
    }
    free(r->reply);
    free(r);
    client_unref(cl);
}

static napi_value make_error(napi_env env, const char *code, const char *msg)
{
    napi_value c = NULL, m = NULL, e = NULL;
    napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c);
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, c, m, &e);
    return e;
}

/* JS thread: settle the promise and free the request. */
static void call_js(napi_env env, napi_value js_cb, void *context, void *data)
{
    (void)js_cb;
    (void)context;
    client_req *r = data;
    if (env != NULL) {
        if (r->rv == 0 && r->reply != NULL) {
            napi_value s;
            if (napi_create_string_utf8(env, r->reply, NAPI_AUTO_LENGTH, &s) == napi_ok) {
                napi_resolve_deferred(env, r->deferred, s);
            } else {
                napi_reject_deferred(env, r->deferred, make_error(env, "STRATA_ERR_NOMEM", "out of memory"));
            }
        } else {
            char msg[256];
            const char *code;
            pthread_mutex_lock(&r->cl->mu);
            bool lost = r->lost;
            pthread_mutex_unlock(&r->cl->mu);
            if (lost || r->rv == NNG_ECONNRESET || r->rv == NNG_ECONNSHUT) {
                code = "STRATA_ERR_WORKER_LOST";
                snprintf(msg, sizeof msg, "strata worker: the connection to the worker was lost while the request "
                                          "was in flight (the worker stopped or restarted)");
            } else if (r->rv == NNG_ETIMEDOUT) {
                code = "STRATA_ERR_TIMEOUT";
                snprintf(msg, sizeof msg, "strata worker: no reply within the timeout (is the worker running "
                                          "and reachable?)");
            } else if (r->rv == NNG_ECLOSED) {
                code = "STRATA_ERR_CLOSED";
                snprintf(msg, sizeof msg, "strata worker: the client was closed");
            } else {
                code = "STRATA_ERR_IO";
                snprintf(msg, sizeof msg, "strata worker: request failed: %s", nng_strerror(r->rv));
            }
            napi_reject_deferred(env, r->deferred, make_error(env, code, msg));
        }
    }
    req_cleanup(r);
}

static void req_complete(client_req *r, int rv)
{
    r->rv = rv;
    napi_threadsafe_function tsfn = r->tsfn;
    napi_call_threadsafe_function(tsfn, r, napi_tsfn_blocking);
    napi_release_threadsafe_function(tsfn, napi_tsfn_release);
}

static void req_cb(void *arg)
{
    client_req *r = arg;
    int rv = nng_aio_result(r->aio);
    if (!r->receiving) {
        if (rv != 0) {
            nng_msg *m = nng_aio_get_msg(r->aio);
            if (m != NULL) {
                nng_msg_free(m);
            }
            req_complete(r, rv);
            return;
        }
        pthread_mutex_lock(&r->cl->mu);
        r->receiving = true;
        bool lost = r->lost;
        pthread_mutex_unlock(&r->cl->mu);
        if (lost) {
            req_complete(r, NNG_ECANCELED);
            return;
        }
        nng_ctx_recv(r->ctx, r->aio);
        return;
    }
    if (rv != 0) {
        req_complete(r, rv);
        return;
    }
    nng_msg *m = nng_aio_get_msg(r->aio);
    size_t len = nng_msg_len(m);
    r->reply = malloc(len + 1);
    if (r->reply != NULL) {
        memcpy(r->reply, nng_msg_body(m), len);
        r->reply[len] = '\0';
    }
    nng_msg_free(m);
    req_complete(r, r->reply != NULL ? 0 : NNG_ENOMEM);
}

static void client_finalize(napi_env env, void *data, void *hint)
{
    (void)env;
    (void)hint;
    client_unref(data);
}

static bool unwrap_client(napi_env env, napi_value v, wclient **out)
{
    napi_valuetype t;
    bool ok = false;
    ADDON_CHECK(env, napi_typeof(env, v, &t));
    if (t == napi_external) {
        ADDON_CHECK(env, napi_check_object_type_tag(env, v, &client_tag, &ok));
    }
    if (!ok) {
        return addon_throw_type(env, "expected a worker client handle");
    }
    void *p = NULL;
    ADDON_CHECK(env, napi_get_value_external(env, v, &p));
    *out = p;
    return true;
}

typedef struct tls_opts {
    char *ca, *cert, *key, *server_name;
    bool insecure;
} tls_opts;

static void tls_opts_free(tls_opts *t)
{
    free(t->ca);
    free(t->cert);
    free(t->key);
    free(t->server_name);
    memset(t, 0, sizeof(*t));
}

/* The host of tls+tcp://host:port (for certificate name checks). */
static char *url_host(const char *url)
{
    const char *h = strstr(url, "://");
    h = h != NULL ? h + 3 : url;
    const char *end;
    if (*h == '[') {
        h++;
        end = strchr(h, ']');
    } else {
        end = strrchr(h, ':');
    }
    size_t n = end != NULL ? (size_t)(end - h) : strlen(h);
    char *s = malloc(n + 1);
    if (s != NULL) {
        memcpy(s, h, n);
        s[n] = '\0';
    }
    return s;
}

/* A client TLS configuration from t; NULL with msg filled on error. */
static nng_tls_config *tls_client_config(const char *url, const tls_opts *t, char *msg, size_t cap)
{
    nng_tls_config *cfg = NULL;
    int rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT);
    if (rv == NNG_ENOTSUP) {
        snprintf(msg, cap, "strata worker: this nng build has no TLS; use ipc:// or an SSH tunnel/stunnel");
        return NULL;
    }
    if (rv != 0) {
        snprintf(msg, cap, "strata worker: TLS: %s", nng_strerror(rv));
        return NULL;
    }
    char *host = t->server_name == NULL ? url_host(url) : NULL;
    const char *name = t->server_name != NULL ? t->server_name : host;
    unsigned char addr[16];
    if (t->server_name == NULL && host != NULL &&
        (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1)) {
        /* mbedTLS 2.x matches DNS names only (no IP subjectAltName): dialing
         * an address, the certificate is checked against the CA alone */
        name = NULL;
    }
    if (name != NULL && name[0] != '\0' && (rv = nng_tls_config_server_name(cfg, name)) != 0) {
        snprintf(msg, cap, "strata worker: TLS server name %s: %s", name, nng_strerror(rv));
    } else if (t->ca != NULL && (rv = nng_tls_config_ca_chain(cfg, t->ca, NULL)) != 0) {
        snprintf(msg, cap, "strata worker: TLS option 'ca' is not a usable PEM certificate: %s", nng_strerror(rv));
    } else if (t->cert != NULL && (rv = nng_tls_config_own_cert(cfg, t->cert, t->key, NULL)) != 0) {
        snprintf(msg, cap, "strata worker: TLS options 'cert'/'key' are not a usable PEM pair: %s", nng_strerror(rv));
    } else if ((rv = nng_tls_config_auth_mode(cfg, t->insecure ? NNG_TLS_AUTH_MODE_NONE
                                                                : NNG_TLS_AUTH_MODE_REQUIRED)) != 0) {
        snprintf(msg, cap, "strata worker: TLS auth mode: %s", nng_strerror(rv));
    }
    free(host);
    if (rv != 0) {
        nng_tls_config_free(cfg);
        return NULL;
    }
    return cfg;
}

static bool read_tls_opts(napi_env env, napi_value v, const char *url, tls_opts *t)
{
    bool has = false;
    if (!addon_check_options(env, v, "workerConnect", &has)) {
        return false;
    }
    if (!has) {
        return true;
    }
    if (!addon_opt_string(env, v, "ca", &t->ca) || !addon_opt_string(env, v, "cert", &t->cert) ||
        !addon_opt_string(env, v, "key", &t->key) || !addon_opt_string(env, v, "serverName", &t->server_name) ||
        !addon_opt_bool(env, v, "insecure", &t->insecure)) {
        return false;
    }
    if ((t->cert == NULL) != (t->key == NULL)) {
        return addon_throw_type(env, "strata worker: TLS options 'cert' and 'key' go together");
    }
    if (!st_url_is_tls(url) && (t->ca != NULL || t->cert != NULL || t->insecure)) {
        return addon_throw_type(env, "strata worker: TLS options need a tls+tcp:// URL");
    }
    return true;
}

static napi_value worker_connect(napi_env env, napi_callback_info info)
{
    napi_value argv[2];
    if (!addon_args(env, info, 2, argv)) {
        return NULL;
    }
    char *url = NULL;
    size_t len = 0;
    if (!addon_string(env, argv[0], "url", &url, &len)) {
        return NULL;
    }
    tls_opts tls = {0};
    if (!read_tls_opts(env, argv[1], url, &tls)) {
        tls_opts_free(&tls);
        free(url);
        return NULL;
    }
    nng_tls_config *tcfg = NULL;
    if (st_url_is_tls(url)) {
        char msg[256];
        if (tls.ca == NULL && !tls.insecure) {
            tls_opts_free(&tls);
            free(url);
            addon_throw_state(env, "STRATA_ERR_ARG", "strata worker: a tls+tcp:// URL needs the TLS option 'ca' "
                                                     "(PEM of the CA that signed the worker's certificate)");
            return NULL;
        }
        tcfg = tls_client_config(url, &tls, msg, sizeof msg);
        tls_opts_free(&tls);
        if (tcfg == NULL) {
            free(url);
            addon_throw_state(env, "STRATA_ERR_ARG", "%s", msg);
            return NULL;
        }
    }
    tls_opts_free(&tls);
    wclient *cl = calloc(1, sizeof(*cl));
    if (cl == NULL) {
        free(url);
        addon_throw_state(env, "STRATA_ERR_NOMEM", "out of memory");
        return NULL;
    }
    pthread_mutex_init(&cl->mu, NULL);
    int rv = nng_req0_open(&cl->sock);
    if (rv == 0) {
        cl->open = true;
        nng_pipe_notify(cl->sock, NNG_PIPE_EV_ADD_POST, pipe_event, cl);
        nng_pipe_notify(cl->sock, NNG_PIPE_EV_REM_POST, pipe_event, cl);
        nng_socket_set_ms(cl->sock, NNG_OPT_RECONNMINT, 100);
        nng_socket_set_ms(cl->sock, NNG_OPT_RECONNMAXT, 2000);
        /* never resend on our own: a lost request fails instead (pipe_event) */
        nng_socket_set_ms(cl->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
        nng_socket_set_size(cl->sock, NNG_OPT_RECVMAXSZ, 64u << 20);
        nng_dialer d = NNG_DIALER_INITIALIZER;
        rv = nng_dialer_create(&d, cl->sock, url);
        if (rv == 0 && tcfg != NULL) {
            rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tcfg);
        }
        if (rv == 0) {
            rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK);
        }
    }
    if (tcfg != NULL) {
        nng_tls_config_free(tcfg); /* the dialer holds its own reference */
    }
    if (rv != 0) {
        if (cl->open) {
            nng_close(cl->sock);
        }
        client_free(cl);
        addon_throw_state(env, "STRATA_ERR_ARG", "strata worker: cannot dial %s: %s", url, nng_strerror(rv));
        free(url);
        return NULL;
    }
    free(url);
    cl->refs = 1;
    napi_value ext;
    napi_status st = napi_create_external(env, cl, client_finalize, NULL, &ext);
    if (st != napi_ok) {
        client_unref(cl);
        addon_throw_napi(env, st, "napi_create_external");
        return NULL;
    }
    if (!addon_tag(env, ext, &client_tag)) {
        return NULL;
    }
    return ext;
}

static napi_value worker_request(napi_env env, napi_callback_info info)
{
    napi_value argv[3];
    if (!addon_args(env, info, 3, argv)) {
        return NULL;
    }
    wclient *cl = NULL;
    if (!unwrap_client(env, argv[0], &cl)) {
        return NULL;
    }
    if (!cl->open) {
        addon_throw_state(env, "STRATA_ERR_CLOSED", "strata worker: the client is closed");
        return NULL;
    }
    char *text = NULL;
    size_t len = 0;
    if (!addon_string(env, argv[1], "request", &text, &len)) {
        return NULL;
    }
    double timeout = 0;
    napi_valuetype t;
    if (napi_typeof(env, argv[2], &t) != napi_ok || t != napi_number ||
        napi_get_value_double(env, argv[2], &timeout) != napi_ok || !(timeout >= 1 && timeout <= 86400000.0)) {
        free(text);
        addon_throw_range(env, "strata worker: timeoutMs must be a number of milliseconds in [1, 86400000]");
        return NULL;
    }
    client_req *r = calloc(1, sizeof(*r));
    nng_msg *m = NULL;
    int rv = r == NULL ? NNG_ENOMEM : nng_msg_alloc(&m, 0);
    if (rv == 0) {
        rv = nng_msg_append(m, text, len);
    }
    free(text);
    if (rv == 0) {
        r->cl = cl;
        rv = nng_ctx_open(&r->ctx, cl->sock);
        r->ctx_open = rv == 0;
    }
    if (rv == 0) {
        rv = nng_aio_alloc(&r->aio, req_cb, r);
    }
    napi_value promise = NULL, name = NULL;
    napi_status st = napi_ok;
    if (rv == 0) {
        st = napi_create_promise(env, &r->deferred, &promise);
        if (st == napi_ok) {
            st = napi_create_string_utf8(env, "strata.workerRequest", NAPI_AUTO_LENGTH, &name);
        }
        if (st == napi_ok) {
            st = napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, NULL, call_js, &r->tsfn);
        }
    }
    if (rv != 0 || st != napi_ok) {
        if (m != NULL) {
            nng_msg_free(m);
        }
        if (r != NULL) {
            if (r->aio != NULL) {
                nng_aio_free(r->aio);
            }
            if (r->ctx_open) {
                nng_ctx_close(r->ctx);
            }
            free(r);
        }
        if (st != napi_ok) {
            addon_throw_napi(env, st, "workerRequest");
        } else {
            addon_throw_state(env, "STRATA_ERR_IO", "strata worker: %s", nng_strerror(rv));
        }
        return NULL;
    }
    cl->refs++;
    pthread_mutex_lock(&cl->mu);
    r->next = cl->inflight;
    cl->inflight = r;
    pthread_mutex_unlock(&cl->mu);
    nng_aio_set_timeout(r->aio, (nng_duration)timeout);
    nng_aio_set_msg(r->aio, m);
    nng_ctx_send(r->ctx, r->aio);
    return promise;
}

static napi_value worker_connected(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    wclient *cl = NULL;
    if (!addon_args(env, info, 1, argv) || !unwrap_client(env, argv[0], &cl)) {
        return NULL;
    }
    pthread_mutex_lock(&cl->mu);
    bool up = cl->open && cl->pipes > 0;
    pthread_mutex_unlock(&cl->mu);
    napi_value v;
    ADDON_CALL(env, napi_get_boolean(env, up, &v));
    return v;
}

static napi_value worker_close(napi_env env, napi_callback_info info)
{
    napi_value argv[1];
    wclient *cl = NULL;
    if (!addon_args(env, info, 1, argv) || !unwrap_client(env, argv[0], &cl)) {
        return NULL;
    }
    if (cl->open) {
        /* in-flight requests complete with NNG_ECLOSED */
        nng_close(cl->sock);
        cl->open = false;
    }
    napi_value u;
    ADDON_CALL(env, napi_get_undefined(env, &u));
    return u;
}

bool addon_register_client(napi_env env, napi_value exports)
{
    return addon_define(env, exports, "workerConnect", worker_connect) &&
           addon_define(env, exports, "workerRequest", worker_request) &&
           addon_define(env, exports, "workerConnected", worker_connected) &&
           addon_define(env, exports, "workerClose", worker_close);
}

#endif /* STRATA_NO_WORKER_CLIENT */
