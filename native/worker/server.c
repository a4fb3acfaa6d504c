/* strata-worker server lifecycle: load the model, start the scheduler thread,
 * listen; drain and stop (see server.h; the parts are listed in
 * server_int.h). */
#include "server_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    o->step_tokens = 0; /* 256 resident, 2048 streamed */
    o->max_message_bytes = 4u << 20;
}

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
        ssp.direct_io = o->stream_direct_io;
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
    /* a streamed step is a pass over the weights from disk: let more
     * prompts share it */
    sp.step_tokens = o->step_tokens > 0 ? o->step_tokens : o->stream ? 2048 : 256;
    sp.prefix_slots = o->prefix_slots;
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

    rc = worker_listen(w, err);
    if (rc != STRATA_OK) {
        worker_stop(w);
        return rc;
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
            streams = streams || r->polled;
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

