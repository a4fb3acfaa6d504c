/* strata-worker internals shared by its modules:
 *   server.c     lifecycle: load, start the threads, listen, drain, stop
 *   transport.c  nng: listener (tcp, ipc, tls+tcp), rep contexts, replies,
 *                pipe events (a client that goes away cancels its requests)
 *   requests.c   request records, poll answers, the scheduler thread and
 *                its callbacks
 *   prepare.c    tokenizing a model request into a scheduler request
 *   ops.c        the op handlers and the dispatch (auth first)
 * Locking: w->mu guards the request records and counters; the scheduler
 * is touched only by the scheduler thread. */
#ifndef STRATA_WORKER_SERVER_INT_H
#define STRATA_WORKER_SERVER_INT_H

#include "server.h"

#include "protocol.h"
#include "scheduler.h"

#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>

#define STREAM_IDLE_MS 60000.0 /* a polled request nobody polls is cancelled */

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
    conn *waiter;            /* not polled: the conn to answer when done */
    uint32_t pipe;           /* the client connection it came on (0: unknown) */
    bool polled;             /* async or stream: the result goes to a poll */
    bool stream;             /* generate/chat text kept for polls */
    char *buf;               /* streamed text so far */
    size_t len, cap;
    bool done;
    bool orphan;             /* its client connection closed: free it when done */
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
    uint64_t n_cancelled_pipe;   /* requests cancelled because their client went away */
    double t_start;
    atomic_int n_sending;    /* replies handed to nng, not yet sent */
};


static inline double now_ms(void)
{
    return st_now_ms();
}

/* transport.c */
void conn_recv(conn *c);
void conn_reply(conn *c, char *text); /* text malloc'd, taken; NULL: out of memory */
void conn_cb(void *arg);
strata_err worker_listen(worker *w, strata_error *err);
void worker_pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg);
bool worker_pipe_alive(uint32_t pipe_id); /* false once the client connection closed */

/* requests.c (the _locked ones under w->mu) */
void wreq_free(wreq *r);
void wreq_unlink(worker *w, wreq *r);
wreq *wreq_find(worker *w, uint64_t rid);
void answer_poll(worker *w, wreq *r);
void set_error(wreq *r, const char *code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void finish_locked(worker *w, wreq *r);
void cancel_pipe_locked(worker *w, uint32_t pipe_id);
bool sched_piece(st_req *req, const char *piece, size_t len, void *user);
void sched_done(st_req *req, void *user);
void *sched_thread(void *arg);

/* prepare.c */
strata_err worker_tokenize(worker *w, const char *text, size_t len, bool add_bos, bool special, strata_token **out,
                           size_t *n, strata_error *e);
char *prepare(worker *w, const proto_req *q, wreq *r);

/* ops.c */
void worker_handle(worker *w, conn *c, const char *buf, size_t len, uint32_t pipe_id);

#endif
