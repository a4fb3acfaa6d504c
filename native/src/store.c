/* Split store writer (see store.h; the reader is store_open.c). */
#include "store_int.h"

#include "gguf_write.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define LOCK_FILE ".split.lock"
#define LOCK_WAIT_DEFAULT_MS (30 * 60 * 1000)

/* ------------------------------------------------------------ checksum -- */

/* Words first, then the tail; a chunked pass (chunks of a multiple of 8
 * bytes) gives the same value as one call. */
static uint64_t checksum_words(uint64_t h, const uint8_t *p, size_t n)
{
    const uint64_t prime = 0x100000001b3ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * prime;
        h ^= h >> 29;
    }
    for (; i < n; i++) {
        h = (h ^ p[i]) * prime;
    }
    return h;
}

#define CHECKSUM_SEED 0xcbf29ce484222325ULL

uint64_t st_checksum(const void *data, size_t n)
{
    return checksum_words(CHECKSUM_SEED, data, n) ^ (uint64_t)n;
}

void st_checksum_begin(st_checksum_state *c)
{
    c->h = CHECKSUM_SEED;
    c->n = 0;
}

void st_checksum_update(st_checksum_state *c, const void *data, size_t n)
{
    c->h = checksum_words(c->h, data, n);
    c->n += n;
}

uint64_t st_checksum_end(const st_checksum_state *c)
{
    return c->h ^ c->n;
}

strata_err st_checksum_file(const char *path, uint64_t *sum, uint64_t *size, strata_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return st_error(err, STRATA_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    const size_t chunk = 1 << 20;
    uint8_t *buf = malloc(chunk);
    if (buf == NULL) {
        close(fd);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory reading %s", path);
    }
    uint64_t h = CHECKSUM_SEED, total = 0;
    for (;;) {
        size_t got = 0;
        while (got < chunk) {
            ssize_t r = read(fd, buf + got, chunk - got);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r < 0) {
                int e = errno;
                free(buf);
                close(fd);
                return st_error(err, STRATA_ERR_IO, "cannot read %s: %s", path, strerror(e));
            }
            if (r == 0) {
                break;
            }
            got += (size_t)r;
        }
        h = checksum_words(h, buf, got);
        total += got;
        if (got < chunk) {
            break;
        }
    }
    /* a checksum pass is not a reason to keep the file cached */
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    free(buf);
    close(fd);
    *sum = h ^ total;
    if (size != NULL) {
        *size = total;
    }
    return STRATA_OK;
}

/* ---------------------------------------------------------- compression -- */

bool st_compression_parse(const char *s, st_compression *out)
{
    if (s == NULL || strcmp(s, "none") == 0 || s[0] == '\0') {
        *out = ST_COMPRESS_NONE;
    } else if (strcmp(s, "8bit") == 0) {
        *out = ST_COMPRESS_8BIT;
    } else if (strcmp(s, "4bit") == 0) {
        *out = ST_COMPRESS_4BIT;
    } else {
        return false;
    }
    return true;
}

const char *st_compression_name(st_compression c)
{
    switch (c) {
    case ST_COMPRESS_8BIT:
        return "8bit";
    case ST_COMPRESS_4BIT:
        return "4bit";
    default:
        return "none";
    }
}

void st_split_opts_default(st_split_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->compression = ST_COMPRESS_NONE;
    o->avail_bytes = -1;
    o->fail_after_parts = -1;
    o->lock_wait_ms = LOCK_WAIT_DEFAULT_MS;
}

static double bits_per_weight(st_type t)
{
    int64_t e = st_type_block_elems(t);
    return e > 0 ? 8.0 * (double)st_type_block_bytes(t) / (double)e : 0.0;
}

/* Type a source tensor is stored as. */
st_type st_store_target_type(const gguf_tensor *t, st_compression c)
{
    if (t->n_dims == 1 || (t->n_dims == 2 && t->ne[1] == 1)) {
        return ST_F32; /* vectors: F32, as the loader would convert them */
    }
    if (t->n_dims != 2 || c == ST_COMPRESS_NONE) {
        return t->type;
    }
    st_type q = c == ST_COMPRESS_8BIT ? ST_Q8_0 : ST_Q4_0;
    if (t->ne[0] % 32 != 0 || bits_per_weight(t->type) <= bits_per_weight(q) || !st_type_supported(t->type)) {
        return t->type;
    }
    return q;
}

static uint64_t tensor_bytes(const gguf_tensor *t, st_type type)
{
    uint64_t rows = 1;
    for (uint32_t d = 1; d < t->n_dims; d++) {
        rows *= (uint64_t)t->ne[d];
    }
    return rows * st_row_bytes(type, t->ne[0]);
}

typedef struct {
    const gguf_tensor *t;
    st_type dst_type;
} fill_job;

static strata_err fill_tensor(void *user, const char *name, void *dst, uint64_t nbytes, strata_error *err)
{
    const fill_job *j = user;
    const gguf_tensor *t = j->t;
    if (j->dst_type == t->type) {
        memcpy(dst, t->data, nbytes);
        return STRATA_OK;
    }
    if (!st_type_supported(t->type)) {
        return st_error(err, STRATA_ERR_UNSUPPORTED, "cannot convert tensor '%s' of type %s", name,
                        st_type_name(t->type));
    }
    const int64_t n0 = t->ne[0];
    uint64_t rows = 1;
    for (uint32_t d = 1; d < t->n_dims; d++) {
        rows *= (uint64_t)t->ne[d];
    }
    float *tmp = st_malloc_array((size_t)n0, sizeof(float));
    if (tmp == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    const size_t src_row = st_row_bytes(t->type, n0), dst_row = st_row_bytes(j->dst_type, n0);
    for (uint64_t r = 0; r < rows; r++) {
        st_dequant_row(t->type, t->data + r * src_row, tmp, n0);
        if (!st_quantize_row(j->dst_type, tmp, (uint8_t *)dst + r * dst_row, n0)) {
            free(tmp);
            return st_error(err, STRATA_ERR_UNSUPPORTED, "cannot quantize tensor '%s' to %s", name,
                            st_type_name(j->dst_type));
        }
    }
    free(tmp);
    return STRATA_OK;
}

/* --------------------------------------------------------------- layout -- */

static strata_err plan_add(part_plan *p, const gguf_tensor *t, strata_error *err)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        const gguf_tensor **v = realloc(p->tensors, cap * sizeof(*v));
        if (v == NULL) {
            return st_error(err, STRATA_ERR_NOMEM, "out of memory");
        }
        p->tensors = v;
        p->cap = cap;
    }
    p->tensors[p->n++] = t;
    return STRATA_OK;
}

void st_store_plan_free(split_plan *sp)
{
    if (sp->plans != NULL) {
        for (int i = 0; i < sp->n_plans; i++) {
            free(sp->plans[i].tensors);
        }
        free(sp->plans);
    }
    gguf_close(sp->g);
    memset(sp, 0, sizeof(*sp));
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

strata_err st_store_make_plan(const char *src, st_compression c, split_plan *sp, strata_error *err)
{
    memset(sp, 0, sizeof(*sp));
    sp->c = c;
    strata_err rc = gguf_open(src, true, &sp->g, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    char arch[64] = "", key[128];
    int64_t n_layers = 0;
    if (!gguf_get_str(sp->g, "general.architecture", arch, sizeof(arch))) {
        st_store_plan_free(sp);
        return st_error(err, STRATA_ERR_FORMAT, "%s: metadata 'general.architecture' is missing", src);
    }
    snprintf(key, sizeof(key), "%s.block_count", arch);
    if (!gguf_get_i64(sp->g, key, &n_layers) || n_layers <= 0 || n_layers > 1024) {
        st_store_plan_free(sp);
        return st_error(err, STRATA_ERR_FORMAT, "%s: metadata '%s' is missing or out of range", src, key);
    }
    sp->n_layers = (int)n_layers;
    sp->n_plans = sp->n_layers + 3;
    sp->plans = st_calloc((size_t)sp->n_plans, sizeof(part_plan));
    if (sp->plans == NULL) {
        st_store_plan_free(sp);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    snprintf(sp->plans[0].name, sizeof(sp->plans[0].name), "meta");
    snprintf(sp->plans[1].name, sizeof(sp->plans[1].name), "embed");
    for (int i = 0; i < sp->n_layers; i++) {
        snprintf(sp->plans[2 + i].name, sizeof(sp->plans[2 + i].name), "blk.%d", i);
    }
    snprintf(sp->plans[sp->n_plans - 1].name, sizeof(sp->plans[0].name), "head");
    bool has_output = false;
    for (uint64_t i = 0; i < sp->g->n_tensors; i++) {
        const gguf_tensor *t = &sp->g->tensors[i];
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)ST_MIN(t->name.len, 255), t->name.ptr);
        int idx = 0;
        if (strcmp(name, "token_embd.weight") == 0) {
            idx = 1;
            sp->tok_embd = t;
        } else if (strcmp(name, "output_norm.weight") == 0 || strcmp(name, "output.weight") == 0) {
            idx = sp->n_plans - 1;
            has_output |= strcmp(name, "output.weight") == 0;
        } else if (strncmp(name, "blk.", 4) == 0) {
            char *end;
            long b = strtol(name + 4, &end, 10);
            if (end == name + 4 || *end != '.' || b < 0 || b >= sp->n_layers) {
                st_store_plan_free(sp);
                return st_error(err, STRATA_ERR_FORMAT, "%s: tensor '%s' names no block of the %d in the model", src,
                                name, (int)n_layers);
            }
            idx = 2 + (int)b;
        }
        if ((rc = plan_add(&sp->plans[idx], t, err)) != STRATA_OK) {
            st_store_plan_free(sp);
            return rc;
        }
    }
    if (sp->tok_embd == NULL) {
        st_store_plan_free(sp);
        return st_error(err, STRATA_ERR_FORMAT, "%s: model file is missing tensor 'token_embd.weight'", src);
    }
    sp->tied = !has_output;
    /* sizes: tensor data aligned to 32 plus a generous header estimate */
    for (int p = 0; p < sp->n_plans; p++) {
        part_plan *pl = &sp->plans[p];
        uint64_t b = 4096 + (p == 0 ? sp->g->data_offset : 0);
        for (size_t i = 0; i < pl->n; i++) {
            b += align_up(tensor_bytes(pl->tensors[i], st_store_target_type(pl->tensors[i], c)), 32) + 128 +
                 pl->tensors[i]->name.len;
        }
        if (p == sp->n_plans - 1 && sp->tied) {
            b += align_up(tensor_bytes(sp->tok_embd, st_store_target_type(sp->tok_embd, c)), 32) + 160;
        }
        pl->est_bytes = b;
    }
    return STRATA_OK;
}

strata_err st_store_estimate(const char *src, st_compression c, uint64_t *bytes, strata_error *err)
{
    split_plan sp;
    strata_err rc = st_store_make_plan(src, c, &sp, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    uint64_t b = 4096; /* manifest */
    for (int p = 0; p < sp.n_plans; p++) {
        b += sp.plans[p].est_bytes;
    }
    st_store_plan_free(&sp);
    *bytes = b;
    return STRATA_OK;
}

/* Summary keys for meta.gguf: parameter count and the type of most weight
 * bytes after compression. */
static void summarize(const split_plan *sp, uint64_t *n_params, st_type *main_type)
{
    uint64_t by_type[ST_TYPE_COUNT] = {0};
    *n_params = 0;
    for (uint64_t i = 0; i < sp->g->n_tensors; i++) {
        const gguf_tensor *t = &sp->g->tensors[i];
        uint64_t n = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            n *= (uint64_t)t->ne[d];
        }
        *n_params += n;
        st_type tt = st_store_target_type(t, sp->c);
        if ((unsigned)tt < ST_TYPE_COUNT) {
            by_type[tt] += tensor_bytes(t, tt);
        }
    }
    int best = 0;
    for (int t = 0; t < ST_TYPE_COUNT; t++) {
        if (by_type[t] > by_type[best]) {
            best = t;
        }
    }
    *main_type = (st_type)best;
}

static strata_err write_part(const split_plan *sp, int p, const char *path, strata_error *err)
{
    const part_plan *pl = &sp->plans[p];
    gguf_writer *w = gguf_writer_new();
    if (w == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    size_t n_jobs = pl->n + 1;
    fill_job *jobs = st_calloc(n_jobs, sizeof(fill_job));
    if (jobs == NULL) {
        gguf_writer_free(w);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    strata_err rc = STRATA_OK;
    if (p == 0) {
        for (uint64_t i = 0; i < sp->g->n_kv && rc == STRATA_OK; i++) {
            if (!gguf_str_eq(sp->g->kv[i].key, "general.alignment")) {
                rc = gguf_writer_copy_kv(w, &sp->g->kv[i]);
            }
        }
        uint64_t n_params;
        st_type main_type;
        summarize(sp, &n_params, &main_type);
        if (rc == STRATA_OK) {
            rc = gguf_writer_add_u64(w, "strata.n_params", n_params);
        }
        if (rc == STRATA_OK) {
            rc = gguf_writer_add_str(w, "strata.weight_type", st_type_name(main_type));
        }
        if (rc == STRATA_OK) {
            rc = gguf_writer_add_str(w, "strata.compression", st_compression_name(sp->c));
        }
        if (rc == STRATA_OK) {
            rc = gguf_writer_add_u64(w, "strata.source_bytes", sp->g->size);
        }
    } else {
        rc = gguf_writer_add_str(w, "strata.part", pl->name);
    }
    for (size_t i = 0; i < pl->n && rc == STRATA_OK; i++) {
        const gguf_tensor *t = pl->tensors[i];
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)ST_MIN(t->name.len, 255), t->name.ptr);
        jobs[i].t = t;
        jobs[i].dst_type = st_store_target_type(t, sp->c);
        rc = gguf_writer_add_tensor_fill(w, name, jobs[i].dst_type, t->n_dims, t->ne, fill_tensor, &jobs[i]);
    }
    if (rc == STRATA_OK && p == sp->n_plans - 1 && sp->tied) {
        jobs[pl->n].t = sp->tok_embd;
        jobs[pl->n].dst_type = st_store_target_type(sp->tok_embd, sp->c);
        rc = gguf_writer_add_tensor_fill(w, "output.weight", jobs[pl->n].dst_type, sp->tok_embd->n_dims,
                                         sp->tok_embd->ne, fill_tensor, &jobs[pl->n]);
    }
    if (rc != STRATA_OK) {
        /* sticky writer errors come back with a message from write() */
        rc = gguf_writer_write(w, path, err);
        if (rc == STRATA_OK) {
            rc = st_error(err, STRATA_ERR_INTERNAL, "writer accepted a failed add for %s", path);
        }
    } else {
        rc = gguf_writer_write(w, path, err);
    }
    free(jobs);
    gguf_writer_free(w);
    return rc;
}

/* ------------------------------------------------------------- manifest -- */

typedef struct {
    bool present;
    uint64_t bytes;
    uint64_t checksum;
} part_rec;

static strata_err write_file_atomic(const char *path, const char *data, size_t n, strata_error *err)
{
    char tmp[4300];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return st_error(err, STRATA_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = write(fd, data + done, n - done);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return st_error(err, STRATA_ERR_IO, "cannot write %s: %s", tmp, strerror(e));
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return st_error(err, STRATA_ERR_IO, "cannot flush %s: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return st_error(err, STRATA_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    return STRATA_OK;
}

static void hex64(uint64_t v, char out[17])
{
    snprintf(out, 17, "%016" PRIx64, v);
}

static strata_err write_manifest(const char *dir, const split_plan *sp, const char *src, uint64_t src_size,
                                 int64_t src_mtime_ns, const part_rec *recs, bool complete, strata_error *err)
{
    json_t *root = json_object();
    json_t *source = json_object();
    json_t *parts = json_array();
    if (root == NULL || source == NULL || parts == NULL) {
        json_decref(root);
        json_decref(source);
        json_decref(parts);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    json_object_set_new(root, "format", json_string(ST_STORE_FORMAT));
    json_object_set_new(root, "version", json_integer(ST_STORE_VERSION));
    json_object_set_new(source, "path", json_string(src));
    json_object_set_new(source, "size", json_integer((json_int_t)src_size));
    json_object_set_new(source, "mtime_ns", json_integer((json_int_t)src_mtime_ns));
    json_object_set_new(root, "source", source);
    json_object_set_new(root, "compression", json_string(st_compression_name(sp->c)));
    json_object_set_new(root, "n_layers", json_integer(sp->n_layers));
    json_object_set_new(root, "checksum", json_string("fnv1a64w"));
    for (int p = 0; p < sp->n_plans; p++) {
        if (!recs[p].present) {
            continue;
        }
        char file[64], sum[17];
        snprintf(file, sizeof(file), "%s.gguf", sp->plans[p].name);
        hex64(recs[p].checksum, sum);
        json_t *o = json_object();
        json_object_set_new(o, "name", json_string(sp->plans[p].name));
        json_object_set_new(o, "file", json_string(file));
        json_object_set_new(o, "bytes", json_integer((json_int_t)recs[p].bytes));
        json_object_set_new(o, "checksum", json_string(sum));
        json_array_append_new(parts, o);
    }
    json_object_set_new(root, "parts", parts);
    json_object_set_new(root, "complete", json_boolean(complete));
    char *text = json_dumps(root, JSON_INDENT(1));
    json_decref(root);
    if (text == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, ST_STORE_MANIFEST);
    strata_err rc = write_file_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

/* ---------------------------------------------------------------- split -- */

static strata_err ensure_dir(const char *dir, strata_error *err)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return st_error(err, STRATA_ERR_IO, "cannot create store folder %s: %s", dir, strerror(errno));
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return st_error(err, STRATA_ERR_IO, "store path %s is not a folder", dir);
    }
    return STRATA_OK;
}

static bool store_matches(json_t *root, uint64_t size, int64_t mtime_ns, st_compression c)
{
    json_t *source = json_object_get(root, "source");
    const char *comp = json_string_value(json_object_get(root, "compression"));
    return comp != NULL && strcmp(comp, st_compression_name(c)) == 0 &&
           json_integer_value(json_object_get(source, "size")) == (json_int_t)size &&
           json_integer_value(json_object_get(source, "mtime_ns")) == (json_int_t)mtime_ns;
}

/* Takes the store's split lock: flock(LOCK_EX) on <dir>/.split.lock, polled
 * for at most wait_ms (the kernel drops it when its holder exits, so a
 * crashed split never leaves it stuck). *fd is -1 when the folder is read
 * only: nothing can be written then, and a complete store needs no lock. */
static strata_err lock_store(const char *dir, int wait_ms, int *fd, bool *waited, strata_error *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, LOCK_FILE);
    *fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (*fd < 0) {
        if (errno == EROFS || errno == EACCES || errno == EPERM) {
            return STRATA_OK;
        }
        return st_error(err, STRATA_ERR_IO, "cannot create the split lock %s: %s", path, strerror(errno));
    }
    const double t0 = st_now_ms();
    for (;;) {
        if (flock(*fd, LOCK_EX | LOCK_NB) == 0) {
            break;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EWOULDBLOCK) {
            int e = errno;
            close(*fd);
            *fd = -1;
            return st_error(err, STRATA_ERR_IO, "cannot lock %s: %s", path, strerror(e));
        }
        *waited = true;
        const double waited_ms = st_now_ms() - t0;
        if (waited_ms >= (double)wait_ms) {
            char holder[32] = "";
            ssize_t n = pread(*fd, holder, sizeof(holder) - 1, 0);
            holder[n > 0 ? n : 0] = '\0';
            holder[strcspn(holder, "\n")] = '\0';
            close(*fd);
            *fd = -1;
            return st_error(err, STRATA_ERR_LIMIT,
                            "store %s is being split by another process%s%s%s; gave up waiting after %.1f s (retry "
                            "later)",
                            dir, holder[0] ? " (pid " : "", holder, holder[0] ? ")" : "", waited_ms / 1000.0);
        }
        const struct timespec nap = {0, 20 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    /* the holder's pid, for the message of a process that gives up waiting */
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(*fd, 0) != 0 || pwrite(*fd, pid, (size_t)n, 0) != n) {
        /* informational only */
    }
    return STRATA_OK;
}

static strata_err split_locked(const char *src, const char *store_dir, st_split_opts *opts, strata_error *err);

strata_err st_store_split(const char *src, const char *store_dir, st_split_opts *opts, strata_error *err)
{
    st_split_opts defaults;
    if (src == NULL || store_dir == NULL) {
        return st_error(err, STRATA_ERR_ARG, "source and store paths must not be NULL");
    }
    if (opts == NULL) {
        st_split_opts_default(&defaults);
        opts = &defaults;
    }
    opts->n_parts_written = 0;
    opts->n_parts_kept = 0;
    opts->waited = false;
    strata_err rc = ensure_dir(store_dir, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    int fd;
    if ((rc = lock_store(store_dir, ST_MAX(opts->lock_wait_ms, 0), &fd, &opts->waited, err)) != STRATA_OK) {
        return rc;
    }
    rc = split_locked(src, store_dir, opts, err);
    if (fd >= 0) {
        close(fd); /* releases the lock; the file stays (unlinking it would race with a waiter) */
    }
    return rc;
}

/* st_store_split with the lock held. */
static strata_err split_locked(const char *src, const char *store_dir, st_split_opts *opts, strata_error *err)
{
    strata_err rc;
    json_t *old = NULL;
    st_store_load_manifest(store_dir, &old, NULL);
    struct stat sst;
    if (stat(src, &sst) != 0) {
        /* the original may have been deleted after a complete split */
        if (old != NULL && json_is_true(json_object_get(old, "complete"))) {
            json_decref(old);
            return STRATA_OK;
        }
        json_decref(old);
        return st_error(err, STRATA_ERR_IO, "cannot open %s: %s", src, strerror(errno));
    }
    const uint64_t src_size = (uint64_t)sst.st_size;
    const int64_t src_mtime = (int64_t)sst.st_mtim.tv_sec * 1000000000LL + sst.st_mtim.tv_nsec;
    bool same = old != NULL && store_matches(old, src_size, src_mtime, opts->compression);
    if (same && json_is_true(json_object_get(old, "complete"))) {
        st_store *s;
        if (st_store_open(store_dir, &s, NULL) == STRATA_OK) {
            st_store_close(s);
            json_decref(old);
            if (opts->delete_original) {
                unlink(src);
            }
            return STRATA_OK;
        }
    }

    split_plan sp;
    if ((rc = st_store_make_plan(src, opts->compression, &sp, err)) != STRATA_OK) {
        json_decref(old);
        return rc;
    }
    part_rec *recs = st_calloc((size_t)sp.n_plans, sizeof(part_rec));
    if (recs == NULL) {
        json_decref(old);
        st_store_plan_free(&sp);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    /* parts of an interrupted split of the same source that still check out */
    uint64_t need = 4096;
    for (int p = 0; p < sp.n_plans; p++) {
        char path[4200];
        uint64_t bytes, sum, fsum, fsize;
        snprintf(path, sizeof(path), "%s/%s.gguf", store_dir, sp.plans[p].name);
        if (same && st_store_manifest_part(old, sp.plans[p].name, &bytes, &sum) &&
            st_checksum_file(path, &fsum, &fsize, NULL) == STRATA_OK && fsum == sum && fsize == bytes) {
            recs[p] = (part_rec){.present = true, .bytes = bytes, .checksum = sum};
            opts->n_parts_kept++;
        } else {
            need += sp.plans[p].est_bytes;
            struct stat pst;
            if (stat(path, &pst) == 0) {
                need -= ST_MIN(need, (uint64_t)pst.st_size); /* replaced in place */
            }
        }
    }
    json_decref(old);
    /* free space */
    int64_t avail = opts->avail_bytes;
    if (avail < 0) {
        struct statvfs vfs;
        if (statvfs(store_dir, &vfs) != 0) {
            rc = st_error(err, STRATA_ERR_IO, "cannot query free space of %s: %s", store_dir, strerror(errno));
            goto done;
        }
        avail = (int64_t)((uint64_t)vfs.f_bavail * vfs.f_frsize);
    }
    if ((uint64_t)avail < need) {
        rc = st_error(err, STRATA_ERR_IO,
                      "not enough disk space for the split store in %s: it needs %.1f MiB (compression %s) but "
                      "%.1f MiB are free",
                      store_dir, need / 1048576.0, st_compression_name(opts->compression), avail / 1048576.0);
        goto done;
    }
    /* mark incomplete before touching any part */
    if ((rc = write_manifest(store_dir, &sp, src, src_size, src_mtime, recs, false, err)) != STRATA_OK) {
        goto done;
    }
    for (int p = 0; p < sp.n_plans; p++) {
        if (recs[p].present) {
            continue;
        }
        if (opts->fail_after_parts >= 0 && opts->n_parts_written >= opts->fail_after_parts) {
            rc = st_error(err, STRATA_ERR_IO, "split interrupted after %d parts (injected failure)",
                          opts->n_parts_written);
            goto done;
        }
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s.gguf", store_dir, sp.plans[p].name);
        if ((rc = write_part(&sp, p, path, err)) != STRATA_OK) {
            goto done;
        }
        if ((rc = st_checksum_file(path, &recs[p].checksum, &recs[p].bytes, err)) != STRATA_OK) {
            goto done;
        }
        recs[p].present = true;
        opts->n_parts_written++;
        if ((rc = write_manifest(store_dir, &sp, src, src_size, src_mtime, recs, false, err)) != STRATA_OK) {
            goto done;
        }
    }
    if ((rc = write_manifest(store_dir, &sp, src, src_size, src_mtime, recs, true, err)) != STRATA_OK) {
        goto done;
    }
    int dfd = open(store_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    if (opts->delete_original) {
        st_store_plan_free(&sp); /* unmaps the source first */
        if (unlink(src) != 0) {
            rc = st_error(err, STRATA_ERR_IO, "store complete, but deleting %s failed: %s", src, strerror(errno));
        }
    }
done:
    free(recs);
    st_store_plan_free(&sp);
    return rc;
}
