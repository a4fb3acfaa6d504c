/* Parallel chunked preads (see stream_io.h). */
#include "stream_io.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct st_io_team {
    int n_requests;
    size_t chunk;
    int n_helpers;
    pthread_t *helpers;
    int n_started;
    pthread_mutex_t mu;
    pthread_cond_t work;    /* a job was posted, or stop */
    pthread_cond_t done;    /* a chunk finished */
    bool stop;
    /* the current job, all under mu */
    int fd;
    uint8_t *buf;
    size_t cap, len;
    uint64_t off;
    size_t n_chunks, next, n_done;
    uint8_t *chunk_done;    /* (done_cap) per chunk of the job: read */
    size_t done_cap;
    int err;                /* first error: errno value, or -1: the file ended */
    size_t short_at;        /* with err == -1: where */
};

/* Reads chunk [c0, c1) of the job until its first need bytes are in. */
static int read_chunk(int fd, uint8_t *buf, size_t c0, size_t c1, size_t need, uint64_t off, size_t *short_at)
{
    size_t got = 0;
    while (got < need) {
        ssize_t r = pread(fd, buf + c0 + got, c1 - c0 - got, (off_t)(off + c0 + got));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            return errno;
        }
        if (r == 0) {
            *short_at = c0 + got;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

/* Takes and reads chunks of the current job until none is left. Called
 * with mu held; returns with it held. */
static void work_chunks(st_io_team *t)
{
    while (t->next < t->n_chunks) {
        const size_t k = t->next++;
        const int fd = t->fd;
        uint8_t *buf = t->buf;
        const uint64_t off = t->off;
        const size_t c0 = k * t->chunk, c1 = ST_MIN(t->cap, c0 + t->chunk);
        const size_t need = t->len > c0 ? ST_MIN(c1, t->len) - c0 : 0;
        const bool skip = t->err != 0;
        pthread_mutex_unlock(&t->mu);
        size_t short_at = 0;
        int e = skip ? 0 : read_chunk(fd, buf, c0, c1, need, off, &short_at);
        pthread_mutex_lock(&t->mu);
        if (e != 0 && (t->err == 0 || (e == -1 && t->err == -1 && short_at < t->short_at))) {
            t->err = e;
            t->short_at = short_at;
        }
        t->chunk_done[k] = 1;
        t->n_done++;
        pthread_cond_broadcast(&t->done);
    }
}

static void *helper_main(void *arg)
{
    st_io_team *t = arg;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        if (t->next < t->n_chunks) {
            work_chunks(t);
        } else {
            pthread_cond_wait(&t->work, &t->mu);
        }
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

strata_err st_io_team_new(int n_requests, size_t chunk, st_io_team **out, strata_error *err)
{
    *out = NULL;
    if (n_requests < 1 || n_requests > 64 || chunk < 4096 || chunk % 4096 != 0) {
        return st_error(err, STRATA_ERR_ARG, "io: %d requests of %zu bytes: need 1..64 of a multiple of 4096",
                        n_requests, chunk);
    }
    st_io_team *t = st_calloc(1, sizeof(*t));
    if (t == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    t->n_requests = n_requests;
    t->chunk = chunk;
    t->n_helpers = n_requests > 1 ? n_requests : 0;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->work, NULL);
    pthread_cond_init(&t->done, NULL);
    if (t->n_helpers > 0) {
        t->helpers = st_calloc((size_t)t->n_helpers, sizeof(pthread_t));
        if (t->helpers == NULL) {
            st_io_team_free(t);
            return st_error(err, STRATA_ERR_NOMEM, "out of memory");
        }
        for (int i = 0; i < t->n_helpers; i++) {
            if (pthread_create(&t->helpers[i], NULL, helper_main, t) != 0) {
                st_io_team_free(t);
                return st_error(err, STRATA_ERR_NOMEM, "cannot start the streamer's read threads");
            }
            t->n_started++;
        }
    }
    *out = t;
    return STRATA_OK;
}

void st_io_team_free(st_io_team *t)
{
    if (t == NULL) {
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_broadcast(&t->work);
    pthread_mutex_unlock(&t->mu);
    for (int i = 0; i < t->n_started; i++) {
        pthread_join(t->helpers[i], NULL);
    }
    free(t->helpers);
    free(t->chunk_done);
    pthread_cond_destroy(&t->done);
    pthread_cond_destroy(&t->work);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

int st_io_team_requests(const st_io_team *t)
{
    return t != NULL ? t->n_requests : 1;
}

int st_io_read(st_io_team *t, int fd, void *buf, size_t cap, size_t len, uint64_t off, size_t *short_at)
{
    return st_io_read_consume(t, fd, buf, cap, len, off, short_at, NULL, NULL);
}

int st_io_read_consume(st_io_team *t, int fd, void *buf, size_t cap, size_t len, uint64_t off, size_t *short_at,
                       st_io_consume_fn consume, void *user)
{
    *short_at = 0;
    if (t == NULL || t->n_helpers == 0) {
        int e = read_chunk(fd, buf, 0, cap, len, off, short_at);
        if (e == 0 && consume != NULL) {
            consume(user, buf, len);
        }
        return e;
    }
    const size_t n_chunks = (cap + t->chunk - 1) / t->chunk;
    pthread_mutex_lock(&t->mu);
    if (n_chunks > t->done_cap) {
        /* no helper touches the flags between jobs */
        uint8_t *f = realloc(t->chunk_done, n_chunks);
        if (f == NULL) {
            pthread_mutex_unlock(&t->mu);
            return ENOMEM;
        }
        t->chunk_done = f;
        t->done_cap = n_chunks;
    }
    memset(t->chunk_done, 0, n_chunks);
    t->fd = fd;
    t->buf = buf;
    t->cap = cap;
    t->len = len;
    t->off = off;
    t->n_chunks = n_chunks;
    t->next = 0;
    t->n_done = 0;
    t->err = 0;
    t->short_at = 0;
    pthread_cond_broadcast(&t->work);
    /* the helpers read; this thread consumes the chunks in order as they land */
    for (size_t k = 0; k < n_chunks && consume != NULL; k++) {
        while (!t->chunk_done[k] && t->err == 0) {
            pthread_cond_wait(&t->done, &t->mu);
        }
        if (t->err != 0) {
            break;
        }
        const size_t c0 = k * t->chunk, c1 = ST_MIN(cap, c0 + t->chunk);
        const size_t need = len > c0 ? ST_MIN(c1, len) - c0 : 0;
        pthread_mutex_unlock(&t->mu);
        if (need > 0) {
            consume(user, (const uint8_t *)buf + c0, need);
        }
        pthread_mutex_lock(&t->mu);
    }
    while (t->n_done < t->n_chunks) {
        pthread_cond_wait(&t->done, &t->mu);
    }
    const int e = t->err;
    *short_at = t->short_at;
    t->n_chunks = t->next = t->n_done = 0;
    pthread_mutex_unlock(&t->mu);
    return e;
}
