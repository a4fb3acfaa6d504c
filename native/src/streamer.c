/* Streamer: resident prefix + a ring of buffers filled by a reader thread
 * (see streamer.h). */
#include "streamer.h"

#include "stream_io.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* One loaded part: the file image and views into it. */
typedef struct {
    uint8_t *buf;           /* (cap) aligned: bytes [base_off, base_off + size) of the file */
    size_t cap;
    size_t size;
    gguf_file *g;           /* owned: parsed over buf (split part) or mapped (embedding); NULL in place */
    const gguf_file *tg;    /* the tensor table bound from: g, or the streamer's source GGUF */
    const uint8_t *base;    /* file offset base_off is at base */
    uint64_t base_off;
    bool loaded;
    st_layer layer;         /* blocks */
    st_part_view view;
} part_data;

typedef enum {
    SLOT_FREE,
    SLOT_LOADING,
    SLOT_READY,
    SLOT_IN_USE,
    SLOT_ERROR,
} slot_state;

typedef struct {
    slot_state state;
    int idx;                /* part index (store order) */
    bool stale;             /* loading a part nobody will ask for: free when done */
    part_data d;
    strata_err rc;
    strata_error err;
} slot;

struct st_streamer {
    st_store *store;
    st_hparams hp;
    st_stream_opts opts;
    int n_parts;            /* L + 2 */
    part_data *resident;    /* (n_parts) buf != NULL for resident parts */
    int n_resident;         /* resident prefix length */
    uint64_t resident_bytes;
    bool embed_mapped;      /* embedding not resident: mapped from its file */
    int *streamed;          /* (n_streamed) part indices that go through the ring, in cycle order */
    int n_streamed;
    slot *slots;            /* (n_slots) */
    int n_slots;
    size_t slot_cap;
    int next;               /* position in streamed[] the reader loads next */
    bool *held;             /* (n_parts) taken out of the cycle by hold(): never read again */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool thread_started;
    bool stop;

    bool *verified;         /* (n_parts) checksum checked once (touched by one thread at a time) */
    st_io_team *io;         /* parallel preads (used by one thread at a time: the opener, then the reader) */
    gguf_file *src;         /* in place: the GGUF (mapped; its tensor table, and the embedding) */
    st_part_stats *stats;   /* (n_parts) */
    double *acquired_at;    /* (n_parts) */
};

void st_stream_opts_default(st_stream_opts *o)
{
    o->memory_budget = 0;
    o->prefetch = -1;
    o->verify = true;
    o->verify_every_load = false;
    o->drop_cache = true;
    o->direct_io = false;
    o->io_requests = 4;
}

#define IO_ALIGN 4096

static size_t io_round(uint64_t n)
{
    return (size_t)((n + IO_ALIGN - 1) / IO_ALIGN * IO_ALIGN);
}

/* ---------------------------------------------------------------- views -- */

static const uint8_t *tensor_data(const part_data *d, const gguf_tensor *t)
{
    return d->base + (d->tg->data_offset + t->offset - d->base_off);
}

static strata_err bind_weight(const part_data *d, const char *path, const char *name, int64_t n_in, int64_t n_out,
                              bool required, st_weight *w, strata_error *err)
{
    memset(w, 0, sizeof(*w));
    const gguf_tensor *t = gguf_find_tensor(d->tg, name);
    if (t == NULL) {
        return required ? st_error(err, STRATA_ERR_FORMAT, "store part %s is missing tensor '%s'", path, name)
                        : STRATA_OK;
    }
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out) {
        return st_error(err, STRATA_ERR_FORMAT, "tensor '%s' in %s has shape [%lld, %lld], expected [%lld, %lld]",
                        name, path, (long long)t->ne[0], (long long)t->ne[1], (long long)n_in, (long long)n_out);
    }
    if (!st_type_supported(t->type)) {
        return st_error(err, STRATA_ERR_UNSUPPORTED, "tensor '%s' in %s has type %s, which Strata cannot compute with",
                        name, path, st_type_name(t->type));
    }
    w->type = t->type;
    w->data = tensor_data(d, t);
    w->n_in = n_in;
    w->n_out = n_out;
    return STRATA_OK;
}

static strata_err bind_vector(const part_data *d, const char *path, const char *name, int64_t n, bool required,
                              const float **out, strata_error *err)
{
    *out = NULL;
    const gguf_tensor *t = gguf_find_tensor(d->tg, name);
    if (t == NULL) {
        return required ? st_error(err, STRATA_ERR_FORMAT, "store part %s is missing tensor '%s'", path, name)
                        : STRATA_OK;
    }
    const uint8_t *data = tensor_data(d, t);
    if (t->type != ST_F32 || t->ne[0] != n || (uintptr_t)data % sizeof(float) != 0) {
        return st_error(err, STRATA_ERR_FORMAT, "tensor '%s' in %s must be an aligned F32 vector of %lld", name, path,
                        (long long)n);
    }
    *out = (const float *)data;
    return STRATA_OK;
}

static strata_err bind_part(st_streamer *s, int idx, part_data *d, strata_error *err)
{
    const st_hparams *hp = &s->hp;
    const char *path = s->store->parts[idx].path;
    strata_err rc;
    memset(&d->view, 0, sizeof(d->view));
    if (idx == 0) {
        return bind_weight(d, path, "token_embd.weight", hp->n_embd, hp->n_vocab, true, &d->view.tok_embd, err);
    }
    if (idx == s->n_parts - 1) {
        if ((rc = bind_vector(d, path, "output_norm.weight", hp->n_embd, true, &d->view.out_norm, err)) != STRATA_OK) {
            return rc;
        }
        return bind_weight(d, path, "output.weight", hp->n_embd, hp->n_vocab, true, &d->view.output, err);
    }
    const int i = idx - 1;
    st_layer *l = &d->layer;
    char name[96];
    memset(l, 0, sizeof(*l));
    st_layer_tensor specs[ST_LAYER_TENSORS];
    st_layer_tensors(hp, specs);
    for (int j = 0; j < ST_LAYER_TENSORS; j++) {
        const st_layer_tensor *t = &specs[j];
        uint8_t *field = (uint8_t *)l + t->offset;
        snprintf(name, sizeof(name), "blk.%d.%s", i, t->suffix);
        rc = t->matrix ? bind_weight(d, path, name, t->n_in, t->n_out, t->required, (st_weight *)field, err)
                       : bind_vector(d, path, name, t->n_in, t->required, (const float **)field, err);
        if (rc != STRATA_OK) {
            return rc;
        }
    }
    d->view.layer = l;
    return STRATA_OK;
}

static void consume_checksum(void *user, const uint8_t *data, size_t n)
{
    st_checksum_update(user, data, n);
}

/* Reads part idx into d->buf (allocated if too small), checks, parses and
 * binds it. Adds read bytes to *bytes. With direct_io the file is read with
 * O_DIRECT (no page cache, no kernel copy: the CPU stays with the compute
 * threads), else read() and the pages dropped afterwards. */
static strata_err load_part(st_streamer *s, int idx, part_data *d, uint64_t *bytes, strata_error *err)
{
    const st_store_part *p = &s->store->parts[idx];
    gguf_close(d->g);
    d->g = NULL;
    d->loaded = false;
    /* read [start, end): the part, from an aligned offset for O_DIRECT */
    const uint64_t start = p->offset / IO_ALIGN * IO_ALIGN, end = p->offset + p->bytes;
    const size_t len = (size_t)(end - start);
    const size_t cap = io_round(len);
    if (cap > d->cap) {
        st_aligned_free(d->buf);
        d->buf = st_aligned_alloc(IO_ALIGN, cap);
        d->cap = d->buf != NULL ? cap : 0;
        if (d->buf == NULL) {
            return st_error(err, STRATA_ERR_NOMEM, "out of memory for store part %s (%llu bytes)", p->path,
                            (unsigned long long)p->bytes);
        }
    }
    bool direct = s->opts.direct_io;
    int fd = direct ? open(p->path, O_RDONLY | O_CLOEXEC | O_DIRECT) : -1;
    if (fd < 0) {
        direct = false;
        fd = open(p->path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0) {
        return st_error(err, STRATA_ERR_IO, "cannot open store part %s: %s", p->path, strerror(errno));
    }
    if (!direct && s->opts.drop_cache) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    }
    /* a part's first load is checksummed as its chunks come in */
    const bool verify = !s->store->in_place && s->opts.verify && p->has_checksum &&
                        (s->opts.verify_every_load || !s->verified[idx]);
    st_checksum_state sum;
    st_checksum_begin(&sum);
    size_t short_at = 0;
    int e = st_io_read_consume(s->io, fd, d->buf, direct ? cap : len, len, start, &short_at,
                               verify ? consume_checksum : NULL, &sum);
    if (e == EINVAL && direct) {
        /* the file system refuses O_DIRECT: read through the cache */
        close(fd);
        direct = false;
        fd = open(p->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return st_error(err, STRATA_ERR_IO, "cannot open store part %s: %s", p->path, strerror(errno));
        }
        st_checksum_begin(&sum);
        e = st_io_read_consume(s->io, fd, d->buf, len, len, start, &short_at, verify ? consume_checksum : NULL,
                               &sum);
    }
    if (e != 0) {
        close(fd);
        if (e < 0) {
            return st_error(err, STRATA_ERR_IO, "store part %s: short read at %zu of %zu bytes (file truncated?)",
                            p->path, short_at, len);
        }
        return st_error(err, STRATA_ERR_IO, "store part %s: cannot read: %s", p->path, strerror(e));
    }
    size_t got = len;
    if (!direct && s->opts.drop_cache) {
        /* a store part is its own file: drop all of it. In place, the GGUF
         * holds every part: drop only this one's range, so the kernel's
         * read-ahead into the next part is not thrown away */
        if (s->store->in_place) {
            posix_fadvise(fd, (off_t)start, (off_t)len, POSIX_FADV_DONTNEED);
        } else {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        }
    }
    close(fd);
    *bytes += got;
    d->size = got;
    d->base = d->buf;
    d->base_off = start;
    if (s->store->in_place) {
        d->tg = s->src;
        strata_err rc = bind_part(s, idx, d, err);
        d->loaded = rc == STRATA_OK;
        return rc;
    }
    if (verify) {
        if (st_checksum_end(&sum) != p->checksum) {
            return st_error(err, STRATA_ERR_FORMAT, "store part %s is corrupt: checksum mismatch", p->path);
        }
        s->verified[idx] = true;
    }
    strata_err rc = gguf_parse(d->buf, got, &d->g, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    d->tg = d->g;
    d->base_off = 0;
    rc = bind_part(s, idx, d, err);
    d->loaded = rc == STRATA_OK;
    return rc;
}

static void part_data_free(part_data *d)
{
    gguf_close(d->g);
    st_aligned_free(d->buf);
    memset(d, 0, sizeof(*d));
}

/* The embedding, mapped: only the rows a step reads come in. */
static strata_err map_embed(st_streamer *s, part_data *d, strata_error *err)
{
    const st_store_part *p = &s->store->parts[0];
    if (s->store->in_place) {
        d->tg = s->src;
        d->base = s->src->image;
        d->base_off = 0;
        strata_err rc = bind_part(s, 0, d, err);
        d->loaded = rc == STRATA_OK;
        return rc;
    }
    if (s->opts.verify) {
        uint64_t sum, size;
        strata_err rc = st_checksum_file(p->path, &sum, &size, err);
        if (rc != STRATA_OK) {
            return rc;
        }
        if (sum != p->checksum || size != p->bytes) {
            return st_error(err, STRATA_ERR_FORMAT, "store part %s is corrupt: checksum mismatch", p->path);
        }
    }
    strata_err rc = gguf_open(p->path, true, &d->g, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    if (d->g->mapped) {
        madvise((void *)d->g->image, d->g->size, MADV_RANDOM);
    }
    d->tg = d->g;
    d->base = d->g->image;
    d->base_off = 0;
    rc = bind_part(s, 0, d, err);
    d->loaded = rc == STRATA_OK;
    return rc;
}

/* --------------------------------------------------------------- reader -- */

static bool part_in_ring(const st_streamer *s, int idx)
{
    for (int k = 0; k < s->n_slots; k++) {
        if (s->slots[k].state != SLOT_FREE && !s->slots[k].stale && s->slots[k].idx == idx) {
            return true;
        }
    }
    return false;
}

static void *reader_main(void *arg)
{
    st_streamer *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        slot *free_slot = NULL;
        for (int k = 0; k < s->n_slots && free_slot == NULL; k++) {
            if (s->slots[k].state == SLOT_FREE) {
                free_slot = &s->slots[k];
            }
        }
        if (free_slot == NULL) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        /* next part of the cycle that is not already in the ring */
        int idx = -1;
        for (int tries = 0; tries < s->n_streamed && idx < 0; tries++) {
            int cand = s->streamed[s->next];
            s->next = (s->next + 1) % s->n_streamed;
            if (!part_in_ring(s, cand)) {
                idx = cand;
            }
        }
        if (idx < 0) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        free_slot->state = SLOT_LOADING;
        free_slot->idx = idx;
        free_slot->stale = false;
        pthread_mutex_unlock(&s->mu);

        uint64_t bytes = 0;
        strata_error err = {0};
        double t0 = st_now_ms();
        strata_err rc = load_part(s, idx, &free_slot->d, &bytes, &err);
        double dt = st_now_ms() - t0;

        pthread_mutex_lock(&s->mu);
        s->stats[idx].loads++;
        s->stats[idx].bytes_read += bytes;
        s->stats[idx].read_ms += dt;
        if (free_slot->stale) {
            free_slot->state = SLOT_FREE;
            free_slot->stale = false;
        } else if (rc != STRATA_OK) {
            free_slot->state = SLOT_ERROR;
            free_slot->rc = rc;
            free_slot->err = err;
        } else {
            free_slot->state = SLOT_READY;
        }
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* An acquire out of cycle order: drop what was read ahead and restart the
 * cycle at idx. Called with mu held. */
static void restart_at(st_streamer *s, int idx)
{
    for (int k = 0; k < s->n_slots; k++) {
        slot *sl = &s->slots[k];
        if (sl->state == SLOT_READY || sl->state == SLOT_ERROR) {
            sl->state = SLOT_FREE;
        } else if (sl->state == SLOT_LOADING) {
            sl->stale = true;
        }
    }
    for (int j = 0; j < s->n_streamed; j++) {
        if (s->streamed[j] == idx) {
            s->next = j;
        }
    }
    pthread_cond_broadcast(&s->cv);
}

/* A held part asked for anyway (a runner that raced the hold): back into
 * the cycle, in part order, to be read as usual. Called with mu held. */
static void unhold(st_streamer *s, int idx)
{
    s->held[idx] = false;
    int j = 0;
    while (j < s->n_streamed && s->streamed[j] < idx) {
        j++;
    }
    memmove(s->streamed + j + 1, s->streamed + j, (size_t)(s->n_streamed - j) * sizeof(int));
    s->streamed[j] = idx;
    if (s->n_streamed > 0 && j <= s->next) {
        s->next++; /* the reader keeps its place in the cycle */
    }
    s->n_streamed++;
}

static strata_err stream_acquire(void *user, int part, st_part_view *view, strata_error *err)
{
    st_streamer *s = user;
    memset(view, 0, sizeof(*view));
    const int idx = st_store_part_index(s->store, part);
    if (idx < 0) {
        return st_error(err, STRATA_ERR_INTERNAL, "no weight part %d", part);
    }
    if (s->resident[idx].loaded) {
        *view = s->resident[idx].view;
        s->acquired_at[idx] = st_now_ms();
        return STRATA_OK;
    }
    const double t0 = st_now_ms();
    pthread_mutex_lock(&s->mu);
    slot *got = NULL;
    strata_err rc = STRATA_OK;
    bool restarted = false;
    while (got == NULL && rc == STRATA_OK) {
        if (s->held[idx]) {
            unhold(s, idx); /* also when the hold came while we waited */
        }
        slot *found = NULL;
        bool any_free = false;
        for (int k = 0; k < s->n_slots; k++) {
            slot *sl = &s->slots[k];
            any_free |= sl->state != SLOT_IN_USE;
            if (sl->state != SLOT_FREE && sl->state != SLOT_IN_USE && !sl->stale && sl->idx == idx) {
                found = sl;
            }
        }
        if (found != NULL && found->state == SLOT_READY) {
            found->state = SLOT_IN_USE;
            got = found;
        } else if (found != NULL && found->state == SLOT_ERROR) {
            rc = found->rc;
            if (err != NULL) {
                *err = found->err;
            }
            found->state = SLOT_FREE;
            restart_at(s, idx); /* the next acquire retries from this part */
        } else if (found != NULL) {
            pthread_cond_wait(&s->cv, &s->mu);
        } else if (!any_free) {
            rc = st_error(err, STRATA_ERR_LIMIT, "streamer: %d parts held at once, more than its %d buffers",
                          s->n_slots + 1, s->n_slots);
        } else if (!restarted || !part_in_ring(s, idx)) {
            restart_at(s, idx);
            restarted = true;
            pthread_cond_wait(&s->cv, &s->mu);
        } else {
            pthread_cond_wait(&s->cv, &s->mu);
        }
    }
    const double now = st_now_ms();
    s->stats[idx].stall_ms += now - t0;
    s->acquired_at[idx] = now;
    pthread_mutex_unlock(&s->mu);
    if (got != NULL) {
        *view = got->d.view;
    }
    return rc;
}

static void stream_release(void *user, int part)
{
    st_streamer *s = user;
    const int idx = st_store_part_index(s->store, part);
    if (idx < 0) {
        return;
    }
    const double now = st_now_ms();
    pthread_mutex_lock(&s->mu);
    if (s->resident[idx].loaded) {
        s->stats[idx].compute_ms += now - s->acquired_at[idx];
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->stats[idx].compute_ms += now - s->acquired_at[idx];
    for (int k = 0; k < s->n_slots; k++) {
        if (s->slots[k].state == SLOT_IN_USE && s->slots[k].idx == idx) {
            s->slots[k].state = SLOT_FREE;
            break;
        }
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* The consumer keeps `part` (e.g. in VRAM): drop it from the read cycle and
 * from the ring, so the reader never reads it again. */
static void stream_hold(void *user, int part)
{
    st_streamer *s = user;
    const int idx = st_store_part_index(s->store, part);
    if (idx < 0) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    if (!s->held[idx] && !s->resident[idx].loaded) {
        s->held[idx] = true;
        for (int j = 0; j < s->n_streamed; j++) {
            if (s->streamed[j] != idx) {
                continue;
            }
            memmove(s->streamed + j, s->streamed + j + 1, (size_t)(s->n_streamed - j - 1) * sizeof(int));
            s->n_streamed--;
            if (s->next > j) {
                s->next--;
            }
            if (s->next >= s->n_streamed) {
                s->next = 0;
            }
            break;
        }
        for (int k = 0; k < s->n_slots; k++) {
            slot *sl = &s->slots[k];
            if (sl->idx != idx) {
                continue;
            }
            if (sl->state == SLOT_READY || sl->state == SLOT_ERROR) {
                sl->state = SLOT_FREE;
            } else if (sl->state == SLOT_LOADING) {
                sl->stale = true;
            }
        }
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

/* --------------------------------------------------------------- layout -- */

/* The longest resident prefix whose bytes plus the minimum ring fit. */
static void plan_layout(st_streamer *s)
{
    const st_store *st = s->store;
    const uint64_t budget = s->opts.memory_budget;
    const int min_slots = s->opts.prefetch == 0 ? 1 : 2;
    int k = s->n_parts;
    for (; k > 0; k--) {
        uint64_t res = 0, maxrest = 0;
        for (int i = 0; i < s->n_parts; i++) {
            if (i < k) {
                res += st->parts[i].bytes;
            } else {
                maxrest = ST_MAX(maxrest, st->parts[i].bytes);
            }
        }
        uint64_t need = res + (k < s->n_parts ? (uint64_t)min_slots * maxrest : 0);
        if (need <= budget) {
            break;
        }
    }
    s->n_resident = k;
    s->resident_bytes = 0;
    for (int i = 0; i < k; i++) {
        s->resident_bytes += st->parts[i].bytes;
    }
    s->embed_mapped = k == 0;
    s->n_streamed = 0;
    uint64_t maxrest = 0;
    for (int i = ST_MAX(k, 1); i < s->n_parts; i++) {
        s->streamed[s->n_streamed++] = i;
        maxrest = ST_MAX(maxrest, st->parts[i].bytes);
    }
    s->slot_cap = (size_t)maxrest;
    s->n_slots = 0;
    if (s->n_streamed > 0) {
        uint64_t avail = budget > s->resident_bytes ? budget - s->resident_bytes : 0;
        int n = maxrest > 0 ? (int)ST_MIN(avail / maxrest, (uint64_t)s->n_streamed) : 1;
        int cap = s->opts.prefetch < 0 ? s->n_streamed : s->opts.prefetch + 1;
        n = ST_MIN(n, cap);
        n = ST_MAX(n, min_slots);
        s->n_slots = ST_MIN(n, s->n_streamed);
    }
}

strata_err st_streamer_new(st_store *store, const st_hparams *hp, const st_stream_opts *opts, st_streamer **out,
                           strata_error *err)
{
    st_stream_opts defaults;
    *out = NULL;
    if (opts == NULL) {
        st_stream_opts_default(&defaults);
        opts = &defaults;
    }
    if (store->n_layers != hp->n_layers) {
        st_error(err, STRATA_ERR_FORMAT, "store %s has %d layers but its metadata says %d", store->dir,
                 store->n_layers, hp->n_layers);
        st_store_close(store);
        return STRATA_ERR_FORMAT;
    }
    st_streamer *s = st_calloc(1, sizeof(*s));
    if (s == NULL) {
        st_store_close(store);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    s->store = store;
    s->hp = *hp;
    s->opts = *opts;
    s->n_parts = store->n_parts;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->resident = st_calloc((size_t)s->n_parts, sizeof(part_data));
    s->streamed = st_calloc((size_t)s->n_parts, sizeof(int));
    s->held = st_calloc((size_t)s->n_parts, sizeof(bool));
    s->stats = st_calloc((size_t)s->n_parts, sizeof(st_part_stats));
    s->acquired_at = st_calloc((size_t)s->n_parts, sizeof(double));
    s->verified = st_calloc((size_t)s->n_parts, sizeof(bool));
    if (s->resident == NULL || s->streamed == NULL || s->held == NULL || s->stats == NULL || s->acquired_at == NULL ||
        s->verified == NULL) {
        st_streamer_free(s);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    plan_layout(s);
    strata_err rc = STRATA_OK;
    if (s->opts.io_requests > 1) {
        rc = st_io_team_new(ST_MIN(s->opts.io_requests, 64), ST_IO_CHUNK_DEFAULT, &s->io, err);
    }
    if (rc == STRATA_OK && store->in_place) {
        rc = gguf_open(store->dir, true, &s->src, err);
        if (rc == STRATA_OK && s->src->mapped) {
            madvise((void *)s->src->image, s->src->size, MADV_RANDOM);
        }
    }
    for (int i = 0; i < s->n_resident && rc == STRATA_OK; i++) {
        uint64_t bytes = 0;
        double t0 = st_now_ms();
        rc = load_part(s, i, &s->resident[i], &bytes, err);
        s->stats[i].loads = 1;
        s->stats[i].bytes_read = bytes;
        s->stats[i].read_ms = st_now_ms() - t0;
    }
    if (s->n_slots == 0) {
        /* all resident: nothing more to read, no helper threads to keep */
        st_io_team_free(s->io);
        s->io = NULL;
    }
    if (rc == STRATA_OK && s->embed_mapped) {
        rc = map_embed(s, &s->resident[0], err);
    }
    if (rc == STRATA_OK && s->n_slots > 0) {
        s->slots = st_calloc((size_t)s->n_slots, sizeof(slot));
        if (s->slots == NULL) {
            rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
        }
        for (int k = 0; rc == STRATA_OK && k < s->n_slots; k++) {
            s->slots[k].d.buf = st_aligned_alloc(IO_ALIGN, io_round(s->slot_cap));
            s->slots[k].d.cap = io_round(s->slot_cap);
            if (s->slots[k].d.buf == NULL) {
                rc = st_error(err, STRATA_ERR_NOMEM, "out of memory for %d stream buffers of %zu bytes", s->n_slots,
                              s->slot_cap);
            }
        }
        if (rc == STRATA_OK) {
            if (pthread_create(&s->thread, NULL, reader_main, s) != 0) {
                rc = st_error(err, STRATA_ERR_NOMEM, "cannot start the streamer's reader thread");
            } else {
                s->thread_started = true;
            }
        }
    }
    if (rc != STRATA_OK) {
        st_streamer_free(s);
        return rc;
    }
    *out = s;
    return STRATA_OK;
}

void st_streamer_free(st_streamer *s)
{
    if (s == NULL) {
        return;
    }
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    if (s->slots != NULL) {
        for (int k = 0; k < s->n_slots; k++) {
            part_data_free(&s->slots[k].d);
        }
        free(s->slots);
    }
    if (s->resident != NULL) {
        for (int i = 0; i < s->n_parts; i++) {
            part_data_free(&s->resident[i]);
        }
        free(s->resident);
    }
    free(s->streamed);
    free(s->held);
    free(s->stats);
    free(s->acquired_at);
    free(s->verified);
    st_io_team_free(s->io);
    gguf_close(s->src);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    st_store_close(s->store);
    free(s);
}

void st_streamer_source(st_streamer *s, st_part_source *out)
{
    out->user = s;
    out->acquire = stream_acquire;
    out->release = stream_release;
    out->hold = stream_hold;
}

int st_streamer_n_parts(const st_streamer *s)
{
    return s->n_parts;
}

void st_streamer_stats(st_streamer *s, int idx, st_part_stats *out)
{
    pthread_mutex_lock(&s->mu);
    *out = s->stats[idx];
    pthread_mutex_unlock(&s->mu);
}

void st_streamer_reset_stats(st_streamer *s)
{
    pthread_mutex_lock(&s->mu);
    memset(s->stats, 0, (size_t)s->n_parts * sizeof(st_part_stats));
    pthread_mutex_unlock(&s->mu);
}

void st_streamer_layout(const st_streamer *s, int *n_resident, int *n_slots, uint64_t *resident_bytes,
                        uint64_t *slot_bytes)
{
    *n_resident = s->n_resident;
    *n_slots = s->n_slots;
    *resident_bytes = s->resident_bytes;
    *slot_bytes = (uint64_t)s->n_slots * s->slot_cap;
}

st_streamer *st_streamer_of(const st_part_source *src)
{
    return src->acquire == stream_acquire ? src->user : NULL;
}

size_t st_streamer_snapshot(st_streamer *s, strata_stream_stats *out, size_t cap, bool reset)
{
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_parts && (size_t)i < cap && out != NULL; i++) {
        const st_part_stats *ps = &s->stats[i];
        out[i] = (strata_stream_stats){.part = i - 1,
                                       .resident = s->resident[i].loaded,
                                       .loads = ps->loads,
                                       .bytes_read = ps->bytes_read,
                                       .read_ms = ps->read_ms,
                                       .stall_ms = ps->stall_ms,
                                       .compute_ms = ps->compute_ms};
    }
    if (reset) {
        memset(s->stats, 0, (size_t)s->n_parts * sizeof(st_part_stats));
    }
    pthread_mutex_unlock(&s->mu);
    return (size_t)s->n_parts;
}
