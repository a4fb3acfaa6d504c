/* strata-worker: an nng REP server in front of the batching scheduler.
 *
 * Transport: one nng rep0 socket listening on ipc://, tcp:// or tls+tcp://
 * (nng's mbedTLS engine; --tls-cert/--tls-key, --tls-ca), with many
 * rep contexts (one per request that can be outstanding at once), so slow
 * requests never block quick ones. Requests for the model (generate, chat,
 * score, embed) are tokenized on nng's callback threads and handed to the
 * scheduler thread, which runs layer-major batched steps and answers when a
 * request finishes; streamed generations answer "poll" requests (long-poll)
 * with the text produced since the client's offset. See protocol.h. */
#ifndef STRATA_WORKER_SERVER_H
#define STRATA_WORKER_SERVER_H

#include <stddef.h>

#include "strata.h"

typedef struct worker_opts {
    const char *model_path;
    const char *listen;         /* nng URL */
    const char *token;          /* NULL: no auth */
    int max_prompt_tokens;      /* prompt tokens per request */
    int max_new_tokens;         /* max_tokens per request */
    int max_queue;              /* requests in flight (running + waiting) */
    int timeout_ms;             /* per request, from arrival */
    int threads;                /* 0: all cores */
    int n_ctx;                  /* KV length per sequence */
    int max_batch;              /* requests run together */
    int step_tokens;            /* token rows per batched step; 0: 256, or 2048 when streaming */
    int prefix_slots;           /* finished contexts kept for prefix reuse; 0: min(max_batch, 8); -1: none */
    size_t max_message_bytes;   /* larger messages are dropped by nng */
    int contexts;               /* nng contexts; 0: max_queue + 32 */
    bool stream;                /* stream weights from a split store (strata_model_load_streamed) */
    uint64_t stream_budget;     /* bytes of weights kept resident when streaming; 0: one layer */
    bool stream_direct_io;      /* streamed reads with O_DIRECT instead of buffered + dropped */
    const char *store_path;     /* NULL: beside the model */
    /* tls+tcp:// listeners: PEM files of the server certificate and key; with
     * tls_ca, clients must present a certificate signed by that CA */
    const char *tls_cert;
    const char *tls_key;
    const char *tls_ca;
} worker_opts;

void worker_opts_default(worker_opts *o);

typedef struct worker worker;

/* Load the model, start the scheduler thread and listen. */
strata_err worker_start(const worker_opts *o, worker **out, strata_error *err);
/* Refuse new work, wait (at most max_ms) for requests in flight to finish. */
void worker_drain(worker *w, int max_ms);
/* Close the socket, stop the threads, free everything. */
void worker_stop(worker *w);

#endif
