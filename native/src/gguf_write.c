/* GGUF v3 writer. Metadata entries are serialized when they are added (one
 * growable byte buffer per entry); tensors keep their shape plus either a
 * private copy of their bytes or a fill callback. Writing streams the header,
 * the tensor infos and the aligned data section to a sink that is either a
 * temp file (renamed into place at the end) or one malloc'd buffer.
 *
 * GGUF is little-endian; like the reader, this assumes a little-endian host.
 */
#include "gguf_write.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC_BYTES "GGUF"
#define GGUF_WRITE_VERSION 3u
#define GGUF_DEFAULT_ALIGNMENT 32u

/* A growable byte buffer. */
typedef struct {
    uint8_t *p;
    size_t len;
    size_t cap;
} bbuf;

typedef struct {
    char *key;   /* NUL-terminated copy, for duplicate checks */
    bbuf bytes;  /* the whole serialized entry: key, type, value */
} wkv;

typedef struct {
    char *name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];  /* ne[0] = row length */
    st_type type;
    uint64_t nbytes;
    uint64_t offset;            /* in the data section, set at write time */
    uint8_t *data;              /* owned copy, or NULL when fill is used */
    gguf_fill_fn fill;
    void *user;
} wtensor;

struct gguf_writer {
    wkv *kv;              /* (n_kv) */
    uint64_t n_kv;
    uint64_t cap_kv;
    wtensor *tensors;     /* (n_tensors) */
    uint64_t n_tensors;
    uint64_t cap_tensors;
    uint32_t alignment;
    bool alignment_in_kv; /* general.alignment was added by the caller */
    strata_err failed;    /* first error of an add_*; STRATA_OK if none */
    strata_error err;
};

/* ------------------------------------------------------------ buffers -- */

static bool bbuf_reserve(bbuf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len) {
        return false;
    }
    size_t need = b->len + extra;
    if (need <= b->cap) {
        return true;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (p == NULL) {
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static bool bbuf_put(bbuf *b, const void *src, size_t n)
{
    if (!bbuf_reserve(b, n)) {
        return false;
    }
    if (n > 0) {
        memcpy(b->p + b->len, src, n);
    }
    b->len += n;
    return true;
}

static bool bbuf_u32(bbuf *b, uint32_t v)
{
    return bbuf_put(b, &v, 4);
}

static bool bbuf_u64(bbuf *b, uint64_t v)
{
    return bbuf_put(b, &v, 8);
}

static bool bbuf_str(bbuf *b, const char *s, uint64_t len)
{
    return bbuf_u64(b, len) && bbuf_put(b, s, (size_t)len);
}

/* ------------------------------------------------------------- errors -- */

static strata_err fail(gguf_writer *w, strata_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static strata_err fail(gguf_writer *w, strata_err code, const char *fmt, ...)
{
    if (w->failed != STRATA_OK) {
        return code;
    }
    char msg[sizeof(w->err.msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    w->failed = code;
    st_error(&w->err, code, "%s", msg);
    return code;
}

static strata_err nomem(gguf_writer *w)
{
    return fail(w, STRATA_ERR_NOMEM, "GGUF writer: out of memory");
}

/* -------------------------------------------------------------- setup -- */

gguf_writer *gguf_writer_new(void)
{
    gguf_writer *w = st_calloc(1, sizeof(*w));
    if (w == NULL) {
        return NULL;
    }
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w)
{
    if (w == NULL) {
        return;
    }
    for (uint64_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].bytes.p);
    }
    free(w->kv);
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->tensors);
    free(w);
}

uint64_t gguf_writer_n_kv(const gguf_writer *w)
{
    return w->n_kv;
}

uint64_t gguf_writer_n_tensors(const gguf_writer *w)
{
    return w->n_tensors;
}

static bool is_pow2(uint64_t a)
{
    return a != 0 && (a & (a - 1)) == 0;
}

strata_err gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment)
{
    if (w->failed != STRATA_OK) {
        return w->failed;
    }
    if (!is_pow2(alignment)) {
        return fail(w, STRATA_ERR_ARG, "GGUF alignment %u is not a power of two", alignment);
    }
    if (w->alignment_in_kv) {
        return fail(w, STRATA_ERR_ARG, "general.alignment was already added as metadata");
    }
    w->alignment = alignment;
    return STRATA_OK;
}

/* ----------------------------------------------------------- metadata -- */

/* Start a new entry: checks the key, appends key and type. Returns the
 * entry (its bytes to be completed by the caller) or NULL after fail(). */
static wkv *kv_begin(gguf_writer *w, const char *key, gguf_type type)
{
    if (w->failed != STRATA_OK) {
        return NULL;
    }
    if (key == NULL || key[0] == '\0') {
        fail(w, STRATA_ERR_ARG, "GGUF metadata key is empty");
        return NULL;
    }
    if (strcmp(key, "general.alignment") == 0 && type != GGUF_T_UINT32) {
        fail(w, STRATA_ERR_ARG, "general.alignment must be a uint32");
        return NULL;
    }
    for (uint64_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            fail(w, STRATA_ERR_ARG, "duplicate GGUF metadata key '%s'", key);
            return NULL;
        }
    }
    if (w->n_kv == w->cap_kv) {
        uint64_t cap = w->cap_kv ? w->cap_kv * 2 : 16;
        wkv *kv = realloc(w->kv, cap * sizeof(*kv));
        if (kv == NULL) {
            nomem(w);
            return NULL;
        }
        w->kv = kv;
        w->cap_kv = cap;
    }
    wkv *e = &w->kv[w->n_kv];
    memset(e, 0, sizeof(*e));
    e->key = strdup(key);
    if (e->key == NULL || !bbuf_str(&e->bytes, key, strlen(key)) || !bbuf_u32(&e->bytes, (uint32_t)type)) {
        free(e->key);
        free(e->bytes.p);
        nomem(w);
        return NULL;
    }
    return e;
}

/* Keep the entry begun by kv_begin (ok) or drop it. */
static strata_err kv_end(gguf_writer *w, wkv *e, bool ok)
{
    if (!ok) {
        free(e->key);
        free(e->bytes.p);
        return nomem(w);
    }
    w->n_kv++;
    return STRATA_OK;
}

static strata_err add_scalar(gguf_writer *w, const char *key, gguf_type type, const void *v)
{
    wkv *e = kv_begin(w, key, type);
    if (e == NULL) {
        return w->failed;
    }
    return kv_end(w, e, bbuf_put(&e->bytes, v, (size_t)gguf_type_size(type)));
}

strata_err gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v)
{
    return add_scalar(w, key, GGUF_T_UINT8, &v);
}

strata_err gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v)
{
    return add_scalar(w, key, GGUF_T_INT8, &v);
}

strata_err gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v)
{
    return add_scalar(w, key, GGUF_T_UINT16, &v);
}

strata_err gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v)
{
    return add_scalar(w, key, GGUF_T_INT16, &v);
}

strata_err gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v)
{
    bool is_alignment = key != NULL && strcmp(key, "general.alignment") == 0;
    if (is_alignment && w->failed == STRATA_OK && !is_pow2(v)) {
        return fail(w, STRATA_ERR_ARG, "general.alignment %u is not a power of two", v);
    }
    strata_err rc = add_scalar(w, key, GGUF_T_UINT32, &v);
    if (rc == STRATA_OK && is_alignment) {
        w->alignment = v;
        w->alignment_in_kv = true;
    }
    return rc;
}

strata_err gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v)
{
    return add_scalar(w, key, GGUF_T_INT32, &v);
}

strata_err gguf_writer_add_f32(gguf_writer *w, const char *key, float v)
{
    return add_scalar(w, key, GGUF_T_FLOAT32, &v);
}

strata_err gguf_writer_add_bool(gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return add_scalar(w, key, GGUF_T_BOOL, &b);
}

strata_err gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v)
{
    return add_scalar(w, key, GGUF_T_UINT64, &v);
}

strata_err gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v)
{
    return add_scalar(w, key, GGUF_T_INT64, &v);
}

strata_err gguf_writer_add_f64(gguf_writer *w, const char *key, double v)
{
    return add_scalar(w, key, GGUF_T_FLOAT64, &v);
}

strata_err gguf_writer_add_strn(gguf_writer *w, const char *key, const char *s, uint64_t len)
{
    if (s == NULL && len > 0) {
        return fail(w, STRATA_ERR_ARG, "GGUF metadata '%s': NULL string", key ? key : "");
    }
    wkv *e = kv_begin(w, key, GGUF_T_STRING);
    if (e == NULL) {
        return w->failed;
    }
    return kv_end(w, e, bbuf_str(&e->bytes, s, len));
}

strata_err gguf_writer_add_str(gguf_writer *w, const char *key, const char *s)
{
    return gguf_writer_add_strn(w, key, s, s ? strlen(s) : 0);
}

strata_err gguf_writer_add_arr(gguf_writer *w, const char *key, gguf_type elem, const void *data, uint64_t n)
{
    uint64_t esz = elem < GGUF_T_COUNT ? gguf_type_size(elem) : 0;
    if (esz == 0) {
        return fail(w, STRATA_ERR_ARG, "GGUF metadata '%s': arrays of type %d need add_str_arr or are not allowed",
                    key ? key : "", (int)elem);
    }
    if (n > SIZE_MAX / esz || (data == NULL && n > 0)) {
        return fail(w, STRATA_ERR_ARG, "GGUF metadata '%s': bad array (%llu elements)", key ? key : "",
                    (unsigned long long)n);
    }
    wkv *e = kv_begin(w, key, GGUF_T_ARRAY);
    if (e == NULL) {
        return w->failed;
    }
    bool ok = bbuf_u32(&e->bytes, (uint32_t)elem) && bbuf_u64(&e->bytes, n) &&
              bbuf_put(&e->bytes, data, (size_t)(n * esz));
    return kv_end(w, e, ok);
}

strata_err gguf_writer_add_str_arr(gguf_writer *w, const char *key, const char *const *strs, const uint64_t *lens,
                                   uint64_t n)
{
    if (strs == NULL && n > 0) {
        return fail(w, STRATA_ERR_ARG, "GGUF metadata '%s': NULL string array", key ? key : "");
    }
    for (uint64_t i = 0; i < n; i++) {
        if (strs[i] == NULL && (lens == NULL || lens[i] > 0)) {
            return fail(w, STRATA_ERR_ARG, "GGUF metadata '%s': string %llu is NULL", key ? key : "",
                        (unsigned long long)i);
        }
    }
    wkv *e = kv_begin(w, key, GGUF_T_ARRAY);
    if (e == NULL) {
        return w->failed;
    }
    bool ok = bbuf_u32(&e->bytes, (uint32_t)GGUF_T_STRING) && bbuf_u64(&e->bytes, n);
    for (uint64_t i = 0; ok && i < n; i++) {
        uint64_t len = lens ? lens[i] : strlen(strs[i]);
        ok = bbuf_str(&e->bytes, strs[i], len);
    }
    return kv_end(w, e, ok);
}

strata_err gguf_writer_copy_kv(gguf_writer *w, const gguf_kv *kv)
{
    if (w->failed != STRATA_OK) {
        return w->failed;
    }
    /* keys in a parsed file are not NUL-terminated */
    char *key = st_malloc_array(kv->key.len + 1, 1);
    if (key == NULL) {
        return nomem(w);
    }
    memcpy(key, kv->key.ptr, kv->key.len);
    key[kv->key.len] = '\0';
    if (strlen(key) != kv->key.len) {
        free(key);
        return fail(w, STRATA_ERR_ARG, "GGUF metadata key with an embedded NUL cannot be copied");
    }
    strata_err rc;
    switch (kv->type) {
    case GGUF_T_UINT8: rc = gguf_writer_add_u8(w, key, (uint8_t)kv->v.u64); break;
    case GGUF_T_INT8: rc = gguf_writer_add_i8(w, key, (int8_t)kv->v.i64); break;
    case GGUF_T_UINT16: rc = gguf_writer_add_u16(w, key, (uint16_t)kv->v.u64); break;
    case GGUF_T_INT16: rc = gguf_writer_add_i16(w, key, (int16_t)kv->v.i64); break;
    case GGUF_T_UINT32: rc = gguf_writer_add_u32(w, key, (uint32_t)kv->v.u64); break;
    case GGUF_T_INT32: rc = gguf_writer_add_i32(w, key, (int32_t)kv->v.i64); break;
    case GGUF_T_FLOAT32: rc = gguf_writer_add_f32(w, key, (float)kv->v.f64); break;
    case GGUF_T_BOOL: rc = gguf_writer_add_bool(w, key, kv->v.u64 != 0); break;
    case GGUF_T_UINT64: rc = gguf_writer_add_u64(w, key, kv->v.u64); break;
    case GGUF_T_INT64: rc = gguf_writer_add_i64(w, key, kv->v.i64); break;
    case GGUF_T_FLOAT64: rc = gguf_writer_add_f64(w, key, kv->v.f64); break;
    case GGUF_T_STRING: rc = gguf_writer_add_strn(w, key, kv->v.str.ptr, kv->v.str.len); break;
    case GGUF_T_ARRAY:
        if (kv->v.arr.type == GGUF_T_STRING) {
            const char **strs = st_malloc_array(kv->v.arr.n, sizeof(*strs));
            uint64_t *lens = st_malloc_array(kv->v.arr.n, sizeof(*lens));
            if (strs == NULL || lens == NULL) {
                free(strs);
                free(lens);
                rc = nomem(w);
                break;
            }
            for (uint64_t i = 0; i < kv->v.arr.n; i++) {
                strs[i] = kv->v.arr.strs[i].ptr;
                lens[i] = kv->v.arr.strs[i].len;
            }
            rc = gguf_writer_add_str_arr(w, key, strs, lens, kv->v.arr.n);
            free(strs);
            free(lens);
        } else {
            rc = gguf_writer_add_arr(w, key, kv->v.arr.type, kv->v.arr.data, kv->v.arr.n);
        }
        break;
    default:
        rc = fail(w, STRATA_ERR_ARG, "GGUF metadata '%s' has unknown type %d", key, (int)kv->type);
        break;
    }
    free(key);
    return rc;
}

/* ------------------------------------------------------------ tensors -- */

static wtensor *tensor_begin(gguf_writer *w, const char *name, st_type type, uint32_t n_dims, const int64_t *ne)
{
    if (w->failed != STRATA_OK) {
        return NULL;
    }
    if (name == NULL || name[0] == '\0') {
        fail(w, STRATA_ERR_ARG, "GGUF tensor name is empty");
        return NULL;
    }
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS || ne == NULL) {
        fail(w, STRATA_ERR_ARG, "tensor '%s': %u dimensions (1..%d allowed)", name, n_dims, GGUF_MAX_DIMS);
        return NULL;
    }
    int64_t be = (unsigned)type < ST_TYPE_COUNT ? st_type_block_elems(type) : 0;
    size_t bb = (unsigned)type < ST_TYPE_COUNT ? st_type_block_bytes(type) : 0;
    if (be <= 0 || bb == 0) {
        fail(w, STRATA_ERR_ARG, "tensor '%s': unsupported type %d", name, (int)type);
        return NULL;
    }
    uint64_t nelem = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        if (ne[i] <= 0 || ne[i] > ((int64_t)1 << 40) || nelem > ((uint64_t)1 << 50) / (uint64_t)ne[i]) {
            fail(w, STRATA_ERR_ARG, "tensor '%s': bad dimension %lld", name, (long long)ne[i]);
            return NULL;
        }
        nelem *= (uint64_t)ne[i];
    }
    if (ne[0] % be != 0) {
        fail(w, STRATA_ERR_ARG, "tensor '%s': row of %lld elements is not a multiple of the %s block (%lld)", name,
             (long long)ne[0], st_type_name(type), (long long)be);
        return NULL;
    }
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        if (strcmp(w->tensors[i].name, name) == 0) {
            fail(w, STRATA_ERR_ARG, "duplicate GGUF tensor name '%s'", name);
            return NULL;
        }
    }
    if (w->n_tensors == w->cap_tensors) {
        uint64_t cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
        wtensor *t = realloc(w->tensors, cap * sizeof(*t));
        if (t == NULL) {
            nomem(w);
            return NULL;
        }
        w->tensors = t;
        w->cap_tensors = cap;
    }
    wtensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof(*t));
    t->name = strdup(name);
    if (t->name == NULL) {
        nomem(w);
        return NULL;
    }
    t->n_dims = n_dims;
    for (int i = 0; i < GGUF_MAX_DIMS; i++) {
        t->ne[i] = (uint32_t)i < n_dims ? ne[i] : 1;
    }
    t->type = type;
    t->nbytes = nelem / (uint64_t)be * bb;
    return t;
}

strata_err gguf_writer_add_tensor(gguf_writer *w, const char *name, st_type type, uint32_t n_dims, const int64_t *ne,
                                  const void *data)
{
    wtensor *t = tensor_begin(w, name, type, n_dims, ne);
    if (t == NULL) {
        return w->failed;
    }
    if (data == NULL || t->nbytes > SIZE_MAX) {
        free(t->name);
        return fail(w, STRATA_ERR_ARG, "tensor '%s': no data", name);
    }
    t->data = malloc((size_t)t->nbytes);
    if (t->data == NULL) {
        free(t->name);
        return nomem(w);
    }
    memcpy(t->data, data, (size_t)t->nbytes);
    w->n_tensors++;
    return STRATA_OK;
}

strata_err gguf_writer_add_tensor_fill(gguf_writer *w, const char *name, st_type type, uint32_t n_dims,
                                       const int64_t *ne, gguf_fill_fn fill, void *user)
{
    if (fill == NULL) {
        return fail(w, STRATA_ERR_ARG, "tensor '%s': no fill function", name ? name : "");
    }
    wtensor *t = tensor_begin(w, name, type, n_dims, ne);
    if (t == NULL) {
        return w->failed;
    }
    t->fill = fill;
    t->user = user;
    w->n_tensors++;
    return STRATA_OK;
}

/* -------------------------------------------------------------- write -- */

/* Where bytes go: a FILE or a preallocated buffer. */
typedef struct {
    FILE *f;
    uint8_t *buf;
    uint64_t pos;
    uint64_t cap;
} sink;

static bool sink_put(sink *s, const void *p, uint64_t n)
{
    if (s->f != NULL) {
        if (n > 0 && fwrite(p, 1, (size_t)n, s->f) != n) {
            return false;
        }
    } else {
        if (n > s->cap - s->pos) {
            return false;
        }
        if (n > 0) {
            memcpy(s->buf + s->pos, p, (size_t)n);
        }
    }
    s->pos += n;
    return true;
}

static bool sink_pad(sink *s, uint64_t alignment)
{
    static const uint8_t zeros[256];
    uint64_t pad = (alignment - s->pos % alignment) % alignment;
    while (pad > 0) {
        uint64_t n = ST_MIN(pad, (uint64_t)sizeof(zeros));
        if (!sink_put(s, zeros, n)) {
            return false;
        }
        pad -= n;
    }
    return true;
}

static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

/* The header, metadata and tensor infos (everything before the data
 * section), with tensor offsets assigned; *data_size gets the size of the
 * data section. */
static strata_err build_header(gguf_writer *w, bbuf *h, uint64_t *data_size)
{
    uint64_t n_kv = w->n_kv + (w->alignment_in_kv ? 0 : 1);
    bool ok = bbuf_put(h, GGUF_MAGIC_BYTES, 4) && bbuf_u32(h, GGUF_WRITE_VERSION) && bbuf_u64(h, w->n_tensors) &&
              bbuf_u64(h, n_kv);
    for (uint64_t i = 0; ok && i < w->n_kv; i++) {
        ok = bbuf_put(h, w->kv[i].bytes.p, w->kv[i].bytes.len);
    }
    if (ok && !w->alignment_in_kv) {
        const char *k = "general.alignment";
        ok = bbuf_str(h, k, strlen(k)) && bbuf_u32(h, GGUF_T_UINT32) && bbuf_u32(h, w->alignment);
    }
    uint64_t off = 0;
    for (uint64_t i = 0; ok && i < w->n_tensors; i++) {
        wtensor *t = &w->tensors[i];
        t->offset = off;
        ok = bbuf_str(h, t->name, strlen(t->name)) && bbuf_u32(h, t->n_dims);
        for (uint32_t d = 0; ok && d < t->n_dims; d++) {
            ok = bbuf_u64(h, (uint64_t)t->ne[d]);
        }
        ok = ok && bbuf_u32(h, (uint32_t)t->type) && bbuf_u64(h, t->offset);
        off = align_up(off + t->nbytes, w->alignment);
    }
    if (!ok) {
        return st_error(NULL, STRATA_ERR_NOMEM, "out of memory");
    }
    *data_size = off;
    return STRATA_OK;
}

/* Stream header and data to the sink. scratch is used for fill tensors when
 * the sink is a file. */
static strata_err emit(gguf_writer *w, const bbuf *h, sink *s, strata_error *err)
{
    if (!sink_put(s, h->p, h->len) || !sink_pad(s, w->alignment)) {
        return st_error(err, STRATA_ERR_IO, "write error in the GGUF header: %s", strerror(errno));
    }
    uint64_t data_start = s->pos;
    uint8_t *scratch = NULL;
    uint64_t scratch_cap = 0;
    strata_err rc = STRATA_OK;
    for (uint64_t i = 0; i < w->n_tensors && rc == STRATA_OK; i++) {
        wtensor *t = &w->tensors[i];
        if (s->pos - data_start != t->offset) {
            rc = st_error(err, STRATA_ERR_INTERNAL, "tensor '%s' lands at %llu, expected %llu", t->name,
                          (unsigned long long)(s->pos - data_start), (unsigned long long)t->offset);
            break;
        }
        const uint8_t *src = t->data;
        if (t->fill != NULL) {
            uint8_t *dst;
            if (s->f == NULL) {
                if (t->nbytes > s->cap - s->pos) {
                    rc = st_error(err, STRATA_ERR_INTERNAL, "buffer too small for tensor '%s'", t->name);
                    break;
                }
                dst = s->buf + s->pos; /* fill in place */
            } else {
                if (t->nbytes > scratch_cap) {
                    free(scratch);
                    scratch = t->nbytes <= SIZE_MAX ? malloc((size_t)t->nbytes) : NULL;
                    scratch_cap = scratch ? t->nbytes : 0;
                    if (scratch == NULL) {
                        rc = st_error(err, STRATA_ERR_NOMEM, "out of memory for tensor '%s' (%llu bytes)", t->name,
                                      (unsigned long long)t->nbytes);
                        break;
                    }
                }
                dst = scratch;
            }
            strata_error ferr = {0};
            strata_err frc = t->fill(t->user, t->name, dst, t->nbytes, &ferr);
            if (frc != STRATA_OK) {
                rc = st_error(err, frc, "tensor '%s': %s", t->name, ferr.msg);
                break;
            }
            if (s->f == NULL) {
                s->pos += t->nbytes;
                src = NULL;
            } else {
                src = dst;
            }
        }
        if (src != NULL && !sink_put(s, src, t->nbytes)) {
            rc = st_error(err, STRATA_ERR_IO, "write error in tensor '%s': %s", t->name, strerror(errno));
            break;
        }
        if (!sink_pad(s, w->alignment)) {
            rc = st_error(err, STRATA_ERR_IO, "write error after tensor '%s': %s", t->name, strerror(errno));
        }
    }
    free(scratch);
    return rc;
}

strata_err gguf_writer_to_buffer(gguf_writer *w, uint8_t **out, uint64_t *size, strata_error *err)
{
    *out = NULL;
    *size = 0;
    if (w->failed != STRATA_OK) {
        return st_error(err, w->failed, "%s", w->err.msg);
    }
    bbuf h = {0};
    uint64_t data_size = 0;
    if (build_header(w, &h, &data_size) != STRATA_OK) {
        free(h.p);
        return st_error(err, STRATA_ERR_NOMEM, "GGUF writer: out of memory");
    }
    uint64_t total = align_up(h.len, w->alignment) + data_size;
    uint8_t *buf = total <= SIZE_MAX ? malloc((size_t)(total ? total : 1)) : NULL;
    if (buf == NULL) {
        free(h.p);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory for a %llu-byte GGUF image", (unsigned long long)total);
    }
    sink s = {.f = NULL, .buf = buf, .pos = 0, .cap = total};
    strata_err rc = emit(w, &h, &s, err);
    free(h.p);
    if (rc == STRATA_OK && s.pos != total) {
        rc = st_error(err, STRATA_ERR_INTERNAL, "GGUF image is %llu bytes, expected %llu", (unsigned long long)s.pos,
                      (unsigned long long)total);
    }
    if (rc != STRATA_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *size = total;
    return STRATA_OK;
}

strata_err gguf_writer_write(gguf_writer *w, const char *path, strata_error *err)
{
    if (w->failed != STRATA_OK) {
        return st_error(err, w->failed, "%s", w->err.msg);
    }
    if (path == NULL || path[0] == '\0') {
        return st_error(err, STRATA_ERR_ARG, "GGUF writer: empty output path");
    }
    bbuf h = {0};
    uint64_t data_size = 0;
    if (build_header(w, &h, &data_size) != STRATA_OK) {
        free(h.p);
        return st_error(err, STRATA_ERR_NOMEM, "GGUF writer: out of memory");
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (tmp == NULL) {
        free(h.p);
        return st_error(err, STRATA_ERR_NOMEM, "GGUF writer: out of memory");
    }
    /* the temp file sits beside the target so rename() stays on one file system */
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        strata_err rc = st_error(err, STRATA_ERR_IO, "cannot create a temp file beside '%s': %s", path, strerror(errno));
        free(tmp);
        free(h.p);
        return rc;
    }
    FILE *f = fdopen(fd, "wb");
    if (f == NULL) {
        strata_err rc = st_error(err, STRATA_ERR_IO, "cannot open '%s': %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        free(tmp);
        free(h.p);
        return rc;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    sink s = {.f = f, .buf = NULL, .pos = 0, .cap = 0};
    strata_err rc = emit(w, &h, &s, err);
    free(h.p);
    if (rc == STRATA_OK && (fflush(f) != 0 || fsync(fd) != 0)) {
        rc = st_error(err, STRATA_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
    }
    /* mkstemp makes the file 0600; a model file is meant to be shared like any other */
    if (rc == STRATA_OK && fchmod(fd, 0644) != 0) {
        rc = st_error(err, STRATA_ERR_IO, "cannot chmod '%s': %s", tmp, strerror(errno));
    }
    if (fclose(f) != 0 && rc == STRATA_OK) {
        rc = st_error(err, STRATA_ERR_IO, "cannot close '%s': %s", tmp, strerror(errno));
    }
    if (rc == STRATA_OK && rename(tmp, path) != 0) {
        rc = st_error(err, STRATA_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    }
    if (rc != STRATA_OK) {
        unlink(tmp);
    }
    free(tmp);
    return rc;
}
