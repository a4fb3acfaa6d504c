/* GGUF reader. The whole file is mapped (or read) once; the parser walks it
 * with a bounds-checked cursor, so every length comes from the file but is
 * never trusted before it is checked against what remains. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define GGUF_DEFAULT_ALIGNMENT 32
/* Sanity caps far above any real model, so hostile counts fail early. */
#define GGUF_MAX_KV 1000000ull
#define GGUF_MAX_TENSORS 1000000ull
#define GGUF_MAX_STRING (1ull << 30)

typedef struct {
    const uint8_t *p;
    uint64_t size;
    uint64_t pos;
    strata_error *err;
} cursor;

static strata_err truncated(cursor *c, const char *what)
{
    return st_error(c->err, STRATA_ERR_FORMAT,
                    "GGUF file truncated or corrupt: %s at byte %llu runs past the end (%llu bytes)",
                    what, (unsigned long long)c->pos, (unsigned long long)c->size);
}

static strata_err read_bytes(cursor *c, void *dst, uint64_t n, const char *what)
{
    if (n > c->size - c->pos) {
        return truncated(c, what);
    }
    memcpy(dst, c->p + c->pos, n);
    c->pos += n;
    return STRATA_OK;
}

static strata_err read_u32(cursor *c, uint32_t *v, const char *what)
{
    return read_bytes(c, v, 4, what);
}

static strata_err read_u64(cursor *c, uint64_t *v, const char *what)
{
    return read_bytes(c, v, 8, what);
}

static strata_err read_str(cursor *c, gguf_str *s, const char *what)
{
    uint64_t len = 0;
    strata_err rc = read_u64(c, &len, what);
    if (rc != STRATA_OK) {
        return rc;
    }
    if (len > GGUF_MAX_STRING || len > c->size - c->pos) {
        return st_error(c->err, STRATA_ERR_FORMAT,
                        "GGUF file corrupt: %s has length %llu at byte %llu, past the end of the file",
                        what, (unsigned long long)len, (unsigned long long)c->pos);
    }
    s->ptr = (const char *)(c->p + c->pos);
    s->len = len;
    c->pos += len;
    return STRATA_OK;
}

uint64_t gguf_type_size(gguf_type t)
{
    switch (t) {
    case GGUF_T_UINT8:
    case GGUF_T_INT8:
    case GGUF_T_BOOL:
        return 1;
    case GGUF_T_UINT16:
    case GGUF_T_INT16:
        return 2;
    case GGUF_T_UINT32:
    case GGUF_T_INT32:
    case GGUF_T_FLOAT32:
        return 4;
    case GGUF_T_UINT64:
    case GGUF_T_INT64:
    case GGUF_T_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

/* Decode one scalar of type t at p into the kv's union. */
static void decode_scalar(gguf_type t, const uint8_t *p, gguf_kv *kv)
{
    switch (t) {
    case GGUF_T_UINT8:
    case GGUF_T_BOOL:
        kv->v.u64 = p[0];
        break;
    case GGUF_T_INT8:
        kv->v.i64 = (int8_t)p[0];
        break;
    case GGUF_T_UINT16: {
        uint16_t x;
        memcpy(&x, p, 2);
        kv->v.u64 = x;
        break;
    }
    case GGUF_T_INT16: {
        int16_t x;
        memcpy(&x, p, 2);
        kv->v.i64 = x;
        break;
    }
    case GGUF_T_UINT32: {
        uint32_t x;
        memcpy(&x, p, 4);
        kv->v.u64 = x;
        break;
    }
    case GGUF_T_INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        kv->v.i64 = x;
        break;
    }
    case GGUF_T_FLOAT32: {
        float x;
        memcpy(&x, p, 4);
        kv->v.f64 = x;
        break;
    }
    case GGUF_T_UINT64:
        memcpy(&kv->v.u64, p, 8);
        break;
    case GGUF_T_INT64:
        memcpy(&kv->v.i64, p, 8);
        break;
    case GGUF_T_FLOAT64:
        memcpy(&kv->v.f64, p, 8);
        break;
    default:
        break;
    }
}

static strata_err parse_kv(cursor *c, gguf_kv *kv)
{
    strata_err rc = read_str(c, &kv->key, "metadata key");
    if (rc != STRATA_OK) {
        return rc;
    }
    uint32_t type = 0;
    rc = read_u32(c, &type, "metadata type");
    if (rc != STRATA_OK) {
        return rc;
    }
    if (type >= GGUF_T_COUNT) {
        return st_error(c->err, STRATA_ERR_FORMAT, "GGUF metadata '%.*s' has unknown type %u",
                        (int)ST_MIN(kv->key.len, 200), kv->key.ptr, type);
    }
    kv->type = (gguf_type)type;
    if (type == GGUF_T_STRING) {
        return read_str(c, &kv->v.str, "metadata string");
    }
    if (type != GGUF_T_ARRAY) {
        uint64_t n = gguf_type_size(kv->type);
        if (n > c->size - c->pos) {
            return truncated(c, "metadata value");
        }
        decode_scalar(kv->type, c->p + c->pos, kv);
        c->pos += n;
        return STRATA_OK;
    }
    uint32_t etype = 0;
    rc = read_u32(c, &etype, "array type");
    if (rc != STRATA_OK) {
        return rc;
    }
    uint64_t n = 0;
    rc = read_u64(c, &n, "array length");
    if (rc != STRATA_OK) {
        return rc;
    }
    if (etype >= GGUF_T_COUNT || etype == GGUF_T_ARRAY) {
        return st_error(c->err, STRATA_ERR_FORMAT, "GGUF metadata '%.*s': unsupported array element type %u",
                        (int)ST_MIN(kv->key.len, 200), kv->key.ptr, etype);
    }
    kv->v.arr.type = (gguf_type)etype;
    kv->v.arr.n = n;
    if (etype == GGUF_T_STRING) {
        /* each string takes at least 8 bytes: reject counts the file can't hold */
        if (n > (c->size - c->pos) / 8) {
            return truncated(c, "string array");
        }
        kv->v.arr.strs = st_malloc_array(n, sizeof(gguf_str));
        if (kv->v.arr.strs == NULL) {
            return st_error(c->err, STRATA_ERR_NOMEM, "out of memory for a %llu-entry string array",
                            (unsigned long long)n);
        }
        for (uint64_t i = 0; i < n; i++) {
            rc = read_str(c, &kv->v.arr.strs[i], "array string");
            if (rc != STRATA_OK) {
                return rc;
            }
        }
        return STRATA_OK;
    }
    uint64_t esz = gguf_type_size((gguf_type)etype);
    if (n > (c->size - c->pos) / esz) {
        return truncated(c, "array data");
    }
    kv->v.arr.data = c->p + c->pos;
    c->pos += n * esz;
    return STRATA_OK;
}

static strata_err parse_tensor_info(cursor *c, gguf_tensor *t)
{
    strata_err rc = read_str(c, &t->name, "tensor name");
    if (rc != STRATA_OK) {
        return rc;
    }
    rc = read_u32(c, &t->n_dims, "tensor dims");
    if (rc != STRATA_OK) {
        return rc;
    }
    int nl = (int)ST_MIN(t->name.len, 200);
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS) {
        return st_error(c->err, STRATA_ERR_FORMAT, "tensor '%.*s' has %u dimensions (1..4 allowed)", nl,
                        t->name.ptr, t->n_dims);
    }
    uint64_t nelem = 1;
    for (int i = 0; i < GGUF_MAX_DIMS; i++) {
        t->ne[i] = 1;
    }
    for (uint32_t i = 0; i < t->n_dims; i++) {
        uint64_t d = 0;
        rc = read_u64(c, &d, "tensor shape");
        if (rc != STRATA_OK) {
            return rc;
        }
        if (d == 0 || d > (1ull << 40) || nelem > (1ull << 50) / d) {
            return st_error(c->err, STRATA_ERR_FORMAT, "tensor '%.*s' has an absurd dimension %llu", nl,
                            t->name.ptr, (unsigned long long)d);
        }
        t->ne[i] = (int64_t)d;
        nelem *= d;
    }
    uint32_t type = 0;
    rc = read_u32(c, &type, "tensor type");
    if (rc != STRATA_OK) {
        return rc;
    }
    rc = read_u64(c, &t->offset, "tensor offset");
    if (rc != STRATA_OK) {
        return rc;
    }
    t->type = (st_type)type;
    int64_t be = type < ST_TYPE_COUNT ? st_type_block_elems(t->type) : 0;
    size_t bb = type < ST_TYPE_COUNT ? st_type_block_bytes(t->type) : 0;
    if (be == 0 || bb == 0) {
        return st_error(c->err, STRATA_ERR_UNSUPPORTED, "tensor '%.*s' has unsupported type %u (%s)", nl,
                        t->name.ptr, type, type < ST_TYPE_COUNT ? st_type_name(t->type) : "unknown");
    }
    if (t->ne[0] % be != 0) {
        return st_error(c->err, STRATA_ERR_FORMAT, "tensor '%.*s': row of %lld elements is not a multiple of the %s block (%lld)",
                        nl, t->name.ptr, (long long)t->ne[0], st_type_name(t->type), (long long)be);
    }
    t->nbytes = nelem / (uint64_t)be * bb;
    return STRATA_OK;
}

static int str_cmp(const void *a, const void *b)
{
    const gguf_str *x = *(const gguf_str *const *)a;
    const gguf_str *y = *(const gguf_str *const *)b;
    int c = memcmp(x->ptr, y->ptr, ST_MIN(x->len, y->len));
    if (c != 0) {
        return c;
    }
    return x->len < y->len ? -1 : (x->len > y->len ? 1 : 0);
}

/* Names must be unique: sort pointers to them and compare neighbours. */
static strata_err check_unique(const gguf_str *first, size_t stride, uint64_t n, const char *what, strata_error *err)
{
    if (n < 2) {
        return STRATA_OK;
    }
    const gguf_str **sorted = st_malloc_array(n, sizeof(*sorted));
    if (sorted == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < n; i++) {
        sorted[i] = (const gguf_str *)((const uint8_t *)first + i * stride);
    }
    qsort(sorted, n, sizeof(*sorted), str_cmp);
    strata_err rc = STRATA_OK;
    for (uint64_t i = 1; i < n; i++) {
        if (str_cmp(&sorted[i - 1], &sorted[i]) == 0) {
            rc = st_error(err, STRATA_ERR_FORMAT, "GGUF file corrupt: duplicate %s '%.*s'", what,
                          (int)ST_MIN(sorted[i]->len, 200), sorted[i]->ptr);
            break;
        }
    }
    free(sorted);
    return rc;
}

static void free_kvs(gguf_file *f)
{
    if (f->kv == NULL) {
        return;
    }
    for (uint64_t i = 0; i < f->n_kv; i++) {
        if (f->kv[i].type == GGUF_T_ARRAY && f->kv[i].v.arr.type == GGUF_T_STRING) {
            free(f->kv[i].v.arr.strs);
        }
    }
    free(f->kv);
    f->kv = NULL;
}

static strata_err parse(gguf_file *f, strata_error *err)
{
    cursor c = {.p = f->image, .size = f->size, .pos = 0, .err = err};
    uint32_t magic = 0;
    strata_err rc = read_u32(&c, &magic, "magic");
    if (rc != STRATA_OK) {
        return st_error(err, STRATA_ERR_FORMAT, "not a GGUF file: only %llu bytes", (unsigned long long)f->size);
    }
    if (magic != GGUF_MAGIC) {
        return st_error(err, STRATA_ERR_FORMAT, "not a GGUF file: bad magic 0x%08x", magic);
    }
    rc = read_u32(&c, &f->version, "version");
    if (rc != STRATA_OK) {
        return rc;
    }
    if (f->version < 2 || f->version > 3) {
        return st_error(err, STRATA_ERR_UNSUPPORTED, "GGUF version %u is not supported (2 and 3 are)", f->version);
    }
    rc = read_u64(&c, &f->n_tensors, "tensor count");
    if (rc == STRATA_OK) {
        rc = read_u64(&c, &f->n_kv, "metadata count");
    }
    if (rc != STRATA_OK) {
        return rc;
    }
    /* a kv takes at least 12 bytes, a tensor info at least 28 */
    if (f->n_kv > GGUF_MAX_KV || f->n_kv > f->size / 12) {
        return st_error(err, STRATA_ERR_FORMAT, "GGUF file corrupt: %llu metadata entries cannot fit in %llu bytes",
                        (unsigned long long)f->n_kv, (unsigned long long)f->size);
    }
    if (f->n_tensors > GGUF_MAX_TENSORS || f->n_tensors > f->size / 28) {
        return st_error(err, STRATA_ERR_FORMAT, "GGUF file corrupt: %llu tensors cannot fit in %llu bytes",
                        (unsigned long long)f->n_tensors, (unsigned long long)f->size);
    }
    f->kv = st_calloc(f->n_kv, sizeof(gguf_kv));
    f->tensors = st_calloc(f->n_tensors, sizeof(gguf_tensor));
    if (f->kv == NULL || f->tensors == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory for GGUF metadata");
    }
    for (uint64_t i = 0; i < f->n_kv; i++) {
        rc = parse_kv(&c, &f->kv[i]);
        if (rc != STRATA_OK) {
            f->n_kv = i + 1; /* free what was allocated, including this entry */
            return rc;
        }
    }
    rc = check_unique(&f->kv[0].key, sizeof(gguf_kv), f->n_kv, "metadata key", err);
    if (rc != STRATA_OK) {
        return rc;
    }
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *al = gguf_find_kv(f, "general.alignment");
    if (al != NULL) {
        if (al->type != GGUF_T_UINT32 || al->v.u64 == 0 || (al->v.u64 & (al->v.u64 - 1)) != 0) {
            return st_error(err, STRATA_ERR_FORMAT, "general.alignment must be a power-of-two uint32");
        }
        f->alignment = al->v.u64;
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        rc = parse_tensor_info(&c, &f->tensors[i]);
        if (rc != STRATA_OK) {
            return rc;
        }
    }
    uint64_t data = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
    if (data > f->size) {
        if (f->n_tensors == 0) {
            data = f->size;
        } else {
            return truncated(&c, "tensor data section");
        }
    }
    f->data_offset = data;
    uint64_t avail = f->size - data;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        int nl = (int)ST_MIN(t->name.len, 200);
        if (t->offset % f->alignment != 0) {
            return st_error(err, STRATA_ERR_FORMAT, "tensor '%.*s' offset %llu is not aligned to %llu", nl, t->name.ptr,
                            (unsigned long long)t->offset, (unsigned long long)f->alignment);
        }
        if (t->offset > avail || t->nbytes > avail - t->offset) {
            return st_error(err, STRATA_ERR_FORMAT,
                            "tensor '%.*s' (%llu bytes at offset %llu) runs past the end of the file: truncated download?",
                            nl, t->name.ptr, (unsigned long long)t->nbytes, (unsigned long long)t->offset);
        }
        t->data = f->image + data + t->offset;
    }
    return check_unique(&f->tensors[0].name, sizeof(gguf_tensor), f->n_tensors, "tensor name", err);
}

strata_err gguf_parse(const uint8_t *image, uint64_t size, gguf_file **out, strata_error *err)
{
    *out = NULL;
    gguf_file *f = st_calloc(1, sizeof(*f));
    if (f == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    f->image = image;
    f->size = size;
    f->fd = -1;
    strata_err rc = parse(f, err);
    if (rc != STRATA_OK) {
        gguf_close(f);
        return rc;
    }
    *out = f;
    return STRATA_OK;
}

strata_err gguf_open(const char *path, bool use_mmap, gguf_file **out, strata_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return st_error(err, STRATA_ERR_IO, "cannot open model file '%s': %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return st_error(err, STRATA_ERR_IO, "'%s' is not a regular file", path);
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 24) {
        close(fd);
        return st_error(err, STRATA_ERR_FORMAT, "'%s' is not a GGUF file: only %llu bytes", path,
                        (unsigned long long)size);
    }
    const uint8_t *image;
    if (use_mmap) {
        void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            return st_error(err, STRATA_ERR_IO, "cannot map '%s': %s", path, strerror(errno));
        }
        image = m;
    } else {
        uint8_t *buf = st_aligned_alloc(64, size);
        if (buf == NULL) {
            close(fd);
            return st_error(err, STRATA_ERR_NOMEM, "out of memory reading '%s' (%llu bytes)", path,
                            (unsigned long long)size);
        }
        uint64_t got = 0;
        while (got < size) {
            ssize_t r = pread(fd, buf + got, ST_MIN(size - got, (uint64_t)1 << 30), (off_t)got);
            if (r <= 0) {
                st_aligned_free(buf);
                close(fd);
                return st_error(err, STRATA_ERR_IO, "read error on '%s': %s", path, r < 0 ? strerror(errno) : "short read");
            }
            got += (uint64_t)r;
        }
        image = buf;
    }
    gguf_file *f = NULL;
    strata_error perr = {0};
    strata_err rc = gguf_parse(image, size, &f, &perr);
    if (rc != STRATA_OK) {
        if (use_mmap) {
            munmap((void *)image, size);
        } else {
            st_aligned_free((void *)image);
        }
        close(fd);
        return st_error(err, rc, "%s: %s", path, perr.msg);
    }
    f->mapped = use_mmap;
    f->fd = fd;
    *out = f;
    return STRATA_OK;
}

void gguf_close(gguf_file *f)
{
    if (f == NULL) {
        return;
    }
    free_kvs(f);
    free(f->tensors);
    if (f->fd >= 0) {
        if (f->mapped) {
            munmap((void *)f->image, f->size);
        } else {
            st_aligned_free((void *)f->image);
        }
        close(f->fd);
    }
    free(f);
}

bool gguf_str_eq(gguf_str s, const char *c)
{
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key)
{
    for (uint64_t i = 0; i < f->n_kv; i++) {
        if (gguf_str_eq(f->kv[i].key, key)) {
            return &f->kv[i];
        }
    }
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        if (gguf_str_eq(f->tensors[i].name, name)) {
            return &f->tensors[i];
        }
    }
    return NULL;
}

static bool is_unsigned(gguf_type t)
{
    return t == GGUF_T_UINT8 || t == GGUF_T_UINT16 || t == GGUF_T_UINT32 || t == GGUF_T_UINT64 || t == GGUF_T_BOOL;
}

static bool is_signed(gguf_type t)
{
    return t == GGUF_T_INT8 || t == GGUF_T_INT16 || t == GGUF_T_INT32 || t == GGUF_T_INT64;
}

bool gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (kv == NULL) {
        return false;
    }
    if (is_unsigned(kv->type)) {
        *out = kv->v.u64;
        return true;
    }
    if (is_signed(kv->type) && kv->v.i64 >= 0) {
        *out = (uint64_t)kv->v.i64;
        return true;
    }
    return false;
}

bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (kv == NULL) {
        return false;
    }
    if (is_signed(kv->type)) {
        *out = kv->v.i64;
        return true;
    }
    if (is_unsigned(kv->type) && kv->v.u64 <= INT64_MAX) {
        *out = (int64_t)kv->v.u64;
        return true;
    }
    return false;
}

bool gguf_get_f64(const gguf_file *f, const char *key, double *out)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (kv == NULL) {
        return false;
    }
    if (kv->type == GGUF_T_FLOAT32 || kv->type == GGUF_T_FLOAT64) {
        *out = kv->v.f64;
        return true;
    }
    if (is_unsigned(kv->type)) {
        *out = (double)kv->v.u64;
        return true;
    }
    if (is_signed(kv->type)) {
        *out = (double)kv->v.i64;
        return true;
    }
    return false;
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (kv == NULL || kv->type != GGUF_T_BOOL) {
        return false;
    }
    *out = kv->v.u64 != 0;
    return true;
}

bool gguf_get_str(const gguf_file *f, const char *key, char *buf, size_t cap)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (kv == NULL || kv->type != GGUF_T_STRING || cap == 0) {
        return false;
    }
    size_t n = (size_t)ST_MIN(kv->v.str.len, (uint64_t)cap - 1);
    memcpy(buf, kv->v.str.ptr, n);
    buf[n] = '\0';
    return true;
}

const gguf_kv *gguf_get_arr(const gguf_file *f, const char *key, gguf_type elem_type)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (kv == NULL || kv->type != GGUF_T_ARRAY || kv->v.arr.type != elem_type) {
        return NULL;
    }
    return kv;
}
