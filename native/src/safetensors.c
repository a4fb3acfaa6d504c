/* safetensors reader: see safetensors.h. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    size_t size;
    int type;
} k_dtypes[] = {
    {"F32", 4, ST_F32},  {"F16", 2, ST_F16}, {"BF16", 2, ST_BF16}, {"F64", 8, -1}, {"I64", 8, -1},
    {"I32", 4, -1},      {"I16", 2, -1},     {"I8", 1, -1},        {"U8", 1, -1},  {"U16", 2, -1},
    {"U32", 4, -1},      {"U64", 8, -1},     {"BOOL", 1, -1},      {"F8_E4M3", 1, -1}, {"F8_E5M2", 1, -1},
};

static int cmp_begin(const void *a, const void *b)
{
    const st_safetensor *x = *(const st_safetensor *const *)a;
    const st_safetensor *y = *(const st_safetensor *const *)b;
    if (x->begin != y->begin) {
        return x->begin < y->begin ? -1 : 1;
    }
    return x->end < y->end ? -1 : (x->end > y->end ? 1 : 0);
}

static strata_err parse_entry(const char *name, json_t *v, uint64_t data_size, st_safetensor *t, strata_error *err)
{
    if (!json_is_object(v)) {
        return st_error(err, STRATA_ERR_FORMAT, "safetensors: entry '%s' is not an object", name);
    }
    json_t *dtype = json_object_get(v, "dtype");
    json_t *shape = json_object_get(v, "shape");
    json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offs) || json_array_size(offs) != 2) {
        return st_error(err, STRATA_ERR_FORMAT,
                        "safetensors: tensor '%s' needs a string dtype, a shape array and two data_offsets", name);
    }
    const char *ds = json_string_value(dtype);
    size_t k = 0, n_dt = sizeof(k_dtypes) / sizeof(k_dtypes[0]);
    while (k < n_dt && strcmp(k_dtypes[k].name, ds) != 0) {
        k++;
    }
    if (k == n_dt) {
        return st_error(err, STRATA_ERR_FORMAT, "safetensors: tensor '%s' has unknown dtype '%.16s'", name, ds);
    }
    snprintf(t->dtype, sizeof(t->dtype), "%s", k_dtypes[k].name);
    t->type = k_dtypes[k].type;
    t->elem_size = k_dtypes[k].size;
    size_t nd = json_array_size(shape);
    if (nd > ST_SAFE_MAX_DIMS) {
        return st_error(err, STRATA_ERR_FORMAT, "safetensors: tensor '%s' has %zu dimensions (max %d)", name, nd,
                        ST_SAFE_MAX_DIMS);
    }
    t->n_dims = (int)nd;
    uint64_t n = 1;
    bool overflow = false;
    for (size_t d = 0; d < nd; d++) {
        json_t *e = json_array_get(shape, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0) {
            return st_error(err, STRATA_ERR_FORMAT, "safetensors: tensor '%s' shape[%zu] is not a size", name, d);
        }
        uint64_t s = (uint64_t)json_integer_value(e);
        t->shape[d] = (int64_t)s;
        if (s != 0 && n > UINT64_MAX / s) {
            overflow = true;
        }
        n *= s;
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 || json_integer_value(e) < 0) {
        return st_error(err, STRATA_ERR_FORMAT, "safetensors: tensor '%s' data_offsets are not sizes", name);
    }
    t->begin = (uint64_t)json_integer_value(b);
    t->end = (uint64_t)json_integer_value(e);
    if (t->begin > t->end || t->end > data_size) {
        return st_error(err, STRATA_ERR_FORMAT,
                        "safetensors: tensor '%s' data_offsets [%llu, %llu] are outside the %llu data bytes", name,
                        (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)data_size);
    }
    if (overflow || n > UINT64_MAX / t->elem_size || n * t->elem_size != t->end - t->begin) {
        return st_error(err, STRATA_ERR_FORMAT,
                        "safetensors: tensor '%s' has %llu bytes but its shape and dtype %s need %s%llu", name,
                        (unsigned long long)(t->end - t->begin), t->dtype, overflow ? "more than " : "",
                        overflow ? (unsigned long long)UINT64_MAX : (unsigned long long)(n * t->elem_size));
    }
    t->n_elems = n;
    return STRATA_OK;
}

strata_err st_safetensors_parse(const uint8_t *image, uint64_t size, st_safetensors **out, strata_error *err)
{
    *out = NULL;
    if (size < 8) {
        return st_error(err, STRATA_ERR_FORMAT, "safetensors: file of %llu bytes has no header length",
                        (unsigned long long)size);
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) {
        hlen = (hlen << 8) | image[i];
    }
    if (hlen > ST_SAFE_MAX_HEADER) {
        return st_error(err, STRATA_ERR_FORMAT, "safetensors: header length %llu exceeds the %u byte limit",
                        (unsigned long long)hlen, ST_SAFE_MAX_HEADER);
    }
    if (hlen > size - 8) {
        return st_error(err, STRATA_ERR_FORMAT, "safetensors: header length %llu runs past the end of the %llu byte file",
                        (unsigned long long)hlen, (unsigned long long)size);
    }
    if (hlen < 2) {
        return st_error(err, STRATA_ERR_FORMAT, "safetensors: header of %llu bytes is too short",
                        (unsigned long long)hlen);
    }
    json_error_t jerr;
    json_t *root = json_loadb((const char *)image + 8, (size_t)hlen, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        return st_error(err, STRATA_ERR_FORMAT, "safetensors: header is not valid JSON (line %d: %s)", jerr.line,
                        jerr.text);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return st_error(err, STRATA_ERR_FORMAT, "safetensors: header is not a JSON object");
    }
    st_safetensors *s = st_calloc(1, sizeof(*s));
    size_t cap = json_object_size(root);
    st_safetensor **sorted = NULL;
    strata_err rc = STRATA_OK;
    if (s == NULL || (s->tensors = st_calloc(cap, sizeof(st_safetensor))) == NULL) {
        rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
        goto done;
    }
    s->image = image;
    s->size = size;
    s->data_start = 8 + hlen;
    uint64_t data_size = size - s->data_start;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(val)) {
                rc = st_error(err, STRATA_ERR_FORMAT, "safetensors: __metadata__ is not an object");
                goto done;
            }
            continue;
        }
        st_safetensor *t = &s->tensors[s->n_tensors];
        if ((rc = parse_entry(key, val, data_size, t, err)) != STRATA_OK) {
            goto done;
        }
        if ((t->name = strdup(key)) == NULL) {
            rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
            goto done;
        }
        t->data = image + s->data_start + t->begin;
        s->n_tensors++;
    }
    /* no two tensors may share bytes */
    sorted = st_malloc_array(s->n_tensors, sizeof(*sorted));
    if (sorted == NULL) {
        rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < s->n_tensors; i++) {
        sorted[i] = &s->tensors[i];
    }
    qsort(sorted, s->n_tensors, sizeof(*sorted), cmp_begin);
    for (size_t i = 1; i < s->n_tensors; i++) {
        if (sorted[i]->begin < sorted[i - 1]->end) {
            rc = st_error(err, STRATA_ERR_FORMAT, "safetensors: tensors '%s' and '%s' overlap", sorted[i - 1]->name,
                          sorted[i]->name);
            goto done;
        }
    }
done:
    free(sorted);
    json_decref(root);
    if (rc != STRATA_OK) {
        st_safetensors_close(s);
        return rc;
    }
    *out = s;
    return STRATA_OK;
}

strata_err st_safetensors_open(const char *path, st_safetensors **out, strata_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return st_error(err, STRATA_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return st_error(err, STRATA_ERR_IO, "%s is not a readable regular file", path);
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        close(fd);
        return st_error(err, STRATA_ERR_FORMAT, "%s: safetensors file of %llu bytes has no header length", path,
                        (unsigned long long)size);
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        return st_error(err, STRATA_ERR_IO, "cannot map %s: %s", path, strerror(errno));
    }
    strata_err rc = st_safetensors_parse(p, size, out, err);
    if (rc != STRATA_OK) {
        munmap(p, (size_t)size);
        if (err != NULL) {
            /* prefix the path: "<path>: <message>" */
            char tmp[sizeof(err->msg)];
            memcpy(tmp, err->msg, sizeof(tmp));
            size_t pl = strnlen(path, sizeof(err->msg) / 2);
            memcpy(err->msg, path, pl);
            memcpy(err->msg + pl, ": ", 2);
            size_t room = sizeof(err->msg) - pl - 3;
            size_t ml = strnlen(tmp, room);
            memcpy(err->msg + pl + 2, tmp, ml);
            err->msg[pl + 2 + ml] = '\0';
        }
        return rc;
    }
    (*out)->mapped = true;
    return STRATA_OK;
}

void st_safetensors_close(st_safetensors *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->n_tensors; i++) {
        free(s->tensors[i].name);
    }
    free(s->tensors);
    if (s->mapped) {
        munmap((void *)s->image, (size_t)s->size);
    }
    free(s);
}

const st_safetensor *st_safetensors_find(const st_safetensors *s, const char *name)
{
    for (size_t i = 0; i < s->n_tensors; i++) {
        if (strcmp(s->tensors[i].name, name) == 0) {
            return &s->tensors[i];
        }
    }
    return NULL;
}

void st_safetensor_to_f32(const st_safetensor *t, uint64_t first, uint64_t n, float *dst)
{
    const uint8_t *p = t->data + first * t->elem_size;
    for (uint64_t i = 0; i < n; i++) {
        uint16_t h;
        switch (t->type) {
        case ST_F32:
            memcpy(&dst[i], p + i * 4, 4);
            break;
        case ST_F16:
            memcpy(&h, p + i * 2, 2);
            dst[i] = st_fp16_to_fp32(h);
            break;
        case ST_BF16:
            memcpy(&h, p + i * 2, 2);
            dst[i] = st_bf16_to_fp32(h);
            break;
        default:
            dst[i] = 0.0f;
            break;
        }
    }
}
