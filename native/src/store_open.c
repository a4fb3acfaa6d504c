/* Split store reader: manifest parsing, opening and verifying a store, and
 * a GGUF streamed in place (see store.h; the writer is store.c). */
#include "store_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------- manifest -- */

static bool parse_hex64(const char *s, uint64_t *out)
{
    if (s == NULL || strlen(s) != 16) {
        return false;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 16);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

/* Parses a manifest; fills what it can. Returns STRATA_FORMAT/IO with a
 * message for the reader; the writer just ignores a bad one. */
strata_err st_store_load_manifest(const char *dir, json_t **out, strata_error *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, ST_STORE_MANIFEST);
    *out = NULL;
    if (access(path, F_OK) != 0) {
        return st_error(err, STRATA_ERR_IO, "%s: no %s (not a Strata split store, or its split never started)", dir,
                        ST_STORE_MANIFEST);
    }
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (root == NULL) {
        return st_error(err, STRATA_ERR_FORMAT, "%s: line %d column %d: %s", path, jerr.line, jerr.column, jerr.text);
    }
    const char *fmt = json_string_value(json_object_get(root, "format"));
    if (!json_is_object(root) || fmt == NULL || strcmp(fmt, ST_STORE_FORMAT) != 0 ||
        json_integer_value(json_object_get(root, "version")) != ST_STORE_VERSION) {
        json_decref(root);
        return st_error(err, STRATA_ERR_FORMAT, "%s: not a version %d %s manifest", path, ST_STORE_VERSION,
                        ST_STORE_FORMAT);
    }
    *out = root;
    return STRATA_OK;
}

/* Looks up a part record by name in a parsed manifest. */
bool st_store_manifest_part(json_t *root, const char *name, uint64_t *bytes, uint64_t *checksum)
{
    json_t *parts = json_object_get(root, "parts");
    size_t i;
    json_t *o;
    json_array_foreach(parts, i, o)
    {
        const char *n = json_string_value(json_object_get(o, "name"));
        if (n != NULL && strcmp(n, name) == 0) {
            json_t *b = json_object_get(o, "bytes");
            if (!json_is_integer(b) || json_integer_value(b) < 0 ||
                !parse_hex64(json_string_value(json_object_get(o, "checksum")), checksum)) {
                return false;
            }
            *bytes = (uint64_t)json_integer_value(b);
            return true;
        }
    }
    return false;
}

/* --------------------------------------------------------------- reader -- */

static strata_err open_part(const st_store *s, json_t *root, const char *name, st_store_part *out,
                            const char *mpath, strata_error *err)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", name);
    if (!st_store_manifest_part(root, name, &out->bytes, &out->checksum)) {
        return st_error(err, STRATA_ERR_FORMAT, "%s: part '%s' is missing or malformed", mpath, name);
    }
    snprintf(out->path, sizeof(out->path), "%s/%.31s.gguf", s->dir, name);
    out->has_checksum = true;
    struct stat st;
    if (stat(out->path, &st) != 0) {
        return st_error(err, STRATA_ERR_IO, "store part file %s is missing: %s", out->path, strerror(errno));
    }
    if ((uint64_t)st.st_size != out->bytes) {
        return st_error(err, STRATA_ERR_FORMAT, "store part file %s has %lld bytes, the manifest says %llu",
                        out->path, (long long)st.st_size, (unsigned long long)out->bytes);
    }
    return STRATA_OK;
}

bool st_store_is_dir(const char *path)
{
    char f[4200];
    struct stat st;
    if (path == NULL || stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return false;
    }
    snprintf(f, sizeof(f), "%s/config.json", path);
    if (access(f, F_OK) == 0) {
        return false;
    }
    snprintf(f, sizeof(f), "%s/%s", path, ST_STORE_MANIFEST);
    return access(f, F_OK) == 0;
}

strata_err st_store_open(const char *store_dir, st_store **out, strata_error *err)
{
    if (store_dir == NULL || out == NULL) {
        return st_error(err, STRATA_ERR_ARG, "store path and output must not be NULL");
    }
    *out = NULL;
    if (strlen(store_dir) >= sizeof(((st_store *)0)->dir)) {
        return st_error(err, STRATA_ERR_ARG, "store path is too long (%zu bytes)", strlen(store_dir));
    }
    json_t *root;
    strata_err rc = st_store_load_manifest(store_dir, &root, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    char mpath[4200];
    snprintf(mpath, sizeof(mpath), "%s/%s", store_dir, ST_STORE_MANIFEST);
    st_store *s = st_calloc(1, sizeof(*s));
    if (s == NULL) {
        json_decref(root);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    snprintf(s->dir, sizeof(s->dir), "%s", store_dir);
    json_t *nl = json_object_get(root, "n_layers");
    if (!json_is_true(json_object_get(root, "complete"))) {
        rc = st_error(err, STRATA_ERR_FORMAT,
                      "store %s is incomplete (its split was interrupted): split the model again to finish it",
                      store_dir);
        goto fail;
    }
    if (!st_compression_parse(json_string_value(json_object_get(root, "compression")), &s->compression) ||
        !json_is_integer(nl) || json_integer_value(nl) <= 0 || json_integer_value(nl) > 1024) {
        rc = st_error(err, STRATA_ERR_FORMAT, "%s: bad compression or n_layers", mpath);
        goto fail;
    }
    s->n_layers = (int)json_integer_value(nl);
    s->n_parts = s->n_layers + 2;
    s->parts = st_calloc((size_t)s->n_parts, sizeof(st_store_part));
    if (s->parts == NULL) {
        rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = open_part(s, root, "meta", &s->meta, mpath, err)) != STRATA_OK) {
        goto fail;
    }
    for (int i = 0; i < s->n_parts; i++) {
        char name[32];
        if (i == 0) {
            snprintf(name, sizeof(name), "embed");
        } else if (i == s->n_parts - 1) {
            snprintf(name, sizeof(name), "head");
        } else {
            snprintf(name, sizeof(name), "blk.%d", i - 1);
        }
        if ((rc = open_part(s, root, name, &s->parts[i], mpath, err)) != STRATA_OK) {
            goto fail;
        }
    }
    uint64_t sum;
    if ((rc = st_checksum_file(s->meta.path, &sum, NULL, err)) != STRATA_OK) {
        goto fail;
    }
    if (sum != s->meta.checksum) {
        rc = st_error(err, STRATA_ERR_FORMAT, "store part %s is corrupt: checksum mismatch", s->meta.path);
        goto fail;
    }
    json_decref(root);
    *out = s;
    return STRATA_OK;
fail:
    json_decref(root);
    st_store_close(s);
    return rc;
}

void st_store_close(st_store *s)
{
    if (s == NULL) {
        return;
    }
    free(s->parts);
    free(s);
}

int st_store_part_index(const st_store *s, int part)
{
    if (part < ST_PART_EMBED || part > ST_PART_HEAD(s->n_layers)) {
        return -1;
    }
    return part + 1;
}

strata_err st_store_verify(const st_store *s, strata_error *err)
{
    for (int i = 0; i < s->n_parts; i++) {
        uint64_t sum, size;
        strata_err rc = st_checksum_file(s->parts[i].path, &sum, &size, err);
        if (rc != STRATA_OK) {
            return rc;
        }
        if (sum != s->parts[i].checksum || size != s->parts[i].bytes) {
            return st_error(err, STRATA_ERR_FORMAT, "store part %s is corrupt: checksum mismatch", s->parts[i].path);
        }
    }
    return STRATA_OK;
}

/* ------------------------------------------------------------- in place -- */

strata_err st_store_open_gguf(const char *path, st_store **out, strata_error *err)
{
    *out = NULL;
    if (strlen(path) >= sizeof(((st_store *)0)->dir)) {
        return st_error(err, STRATA_ERR_ARG, "model path is too long");
    }
    split_plan sp;
    strata_err rc = st_store_make_plan(path, ST_COMPRESS_NONE, &sp, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    st_store *s = st_calloc(1, sizeof(*s));
    if (s == NULL) {
        st_store_plan_free(&sp);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    snprintf(s->dir, sizeof(s->dir), "%s", path);
    s->in_place = true;
    s->n_layers = sp.n_layers;
    s->n_parts = sp.n_layers + 2;
    s->parts = st_calloc((size_t)s->n_parts, sizeof(st_store_part));
    if (s->parts == NULL) {
        rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (sp.tied) {
        rc = st_error(err, STRATA_ERR_UNSUPPORTED,
                      "%s ties its output to the embeddings: it cannot stream in place (split it instead)", path);
        goto done;
    }
    snprintf(s->meta.name, sizeof(s->meta.name), "meta");
    snprintf(s->meta.path, sizeof(s->meta.path), "%s", path);
    for (int i = 0; i < s->n_parts; i++) {
        const part_plan *pl = &sp.plans[i + 1];
        st_store_part *p = &s->parts[i];
        snprintf(p->name, sizeof(p->name), "%s", pl->name);
        snprintf(p->path, sizeof(p->path), "%s", path);
        if (pl->n == 0) {
            rc = st_error(err, STRATA_ERR_FORMAT, "%s: part %s has no tensors", path, pl->name);
            goto done;
        }
        uint64_t lo = UINT64_MAX, hi = 0;
        for (size_t k = 0; k < pl->n; k++) {
            const gguf_tensor *t = pl->tensors[k];
            if (st_store_target_type(t, ST_COMPRESS_NONE) != t->type) {
                rc = st_error(err, STRATA_ERR_UNSUPPORTED,
                              "%s: tensor '%.*s' is a %s vector (F32 needed to stream in place; split instead)", path,
                              (int)t->name.len, t->name.ptr, st_type_name(t->type));
                goto done;
            }
            lo = ST_MIN(lo, sp.g->data_offset + t->offset);
            hi = ST_MAX(hi, sp.g->data_offset + t->offset + t->nbytes);
        }
        /* no tensor of another part inside the range */
        for (uint64_t k = 0; k < sp.g->n_tensors; k++) {
            const gguf_tensor *t = &sp.g->tensors[k];
            uint64_t a = sp.g->data_offset + t->offset;
            bool mine = false;
            for (size_t j = 0; j < pl->n && !mine; j++) {
                mine = pl->tensors[j] == t;
            }
            if (!mine && a < hi && a + t->nbytes > lo) {
                rc = st_error(err, STRATA_ERR_UNSUPPORTED,
                              "%s: the tensors of %s are not contiguous ('%.*s' lies between them): split it instead",
                              path, pl->name, (int)t->name.len, t->name.ptr);
                goto done;
            }
        }
        p->offset = lo;
        p->bytes = hi - lo;
        p->has_checksum = false;
    }
done:
    st_store_plan_free(&sp);
    if (rc != STRATA_OK) {
        st_store_close(s);
        return rc;
    }
    *out = s;
    return STRATA_OK;
}
