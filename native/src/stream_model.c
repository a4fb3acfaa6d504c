/* Streamed models: opening a split store or a GGUF in place as a strata_model
 * whose weights come from a streamer (streamer.h), and the public calls
 * strata_model_load_streamed / strata_model_stream_stats. */
#include "streamer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- model -- */

static strata_err open_with_store(st_store *store, const strata_model_params *mp, const st_stream_opts *opts,
                                  strata_model **model, st_streamer **streamer, strata_error *err);

strata_err st_model_open_streamed(const char *store_dir, const strata_model_params *mp, const st_stream_opts *opts,
                                  strata_model **model, st_streamer **streamer, strata_error *err)
{
    *model = NULL;
    *streamer = NULL;
    st_store *store;
    strata_err rc = st_store_open(store_dir, &store, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    return open_with_store(store, mp, opts, model, streamer, err);
}

strata_err st_model_open_in_place(const char *gguf_path, const strata_model_params *mp, const st_stream_opts *opts,
                                  strata_model **model, st_streamer **streamer, strata_error *err)
{
    *model = NULL;
    *streamer = NULL;
    st_store *store;
    strata_err rc = st_store_open_gguf(gguf_path, &store, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    return open_with_store(store, mp, opts, model, streamer, err);
}

/* Takes ownership of store. */
static strata_err open_with_store(st_store *store, const strata_model_params *mp, const st_stream_opts *opts,
                                  strata_model **model, st_streamer **streamer, strata_error *err)
{
    strata_err rc;
    strata_model *m;
    if ((rc = st_model_load_meta(store->meta.path, mp, &m, err)) != STRATA_OK) {
        st_store_close(store);
        return rc;
    }
    uint64_t n_params;
    if (!store->in_place && gguf_get_u64(m->gguf, "strata.n_params", &n_params)) {
        m->n_params = n_params;
    }
    if (!store->in_place) {
        gguf_get_str(m->gguf, "strata.weight_type", m->weight_type, sizeof(m->weight_type));
    }
    st_streamer *s;
    if ((rc = st_streamer_new(store, &m->hp, opts, &s, err)) != STRATA_OK) {
        strata_model_free(m);
        return rc;
    }
    st_streamer_source(s, &m->source);
    *model = m;
    *streamer = s;
    return STRATA_OK;
}

void st_model_close_streamed(strata_model *model, st_streamer *streamer)
{
    strata_model_free(model);
    st_streamer_free(streamer);
}

/* ------------------------------------------------------------ public API -- */

static void free_streamer_cb(void *user)
{
    st_streamer_free(user);
}

void strata_stream_params_default(strata_stream_params *p)
{
    memset(p, 0, sizeof(*p));
    p->prefetch = -1;
    p->verify = true;
}

strata_err strata_model_load_streamed(const char *path, const strata_model_params *params,
                                      const strata_stream_params *sp, strata_model **out, strata_error *err)
{
    strata_stream_params defaults;
    if (path == NULL || out == NULL) {
        return st_error(err, STRATA_ERR_ARG, "model path and output must not be NULL");
    }
    *out = NULL;
    if (sp == NULL) {
        strata_stream_params_default(&defaults);
        sp = &defaults;
    }
    st_compression c;
    if (!st_compression_parse(sp->compression, &c)) {
        return st_error(err, STRATA_ERR_ARG, "compression '%s' is not one of none, 8bit, 4bit", sp->compression);
    }
    if (sp->prefetch < -1) {
        return st_error(err, STRATA_ERR_ARG, "prefetch must be -1 (auto) or >= 0, not %d", sp->prefetch);
    }
    st_stream_opts o;
    st_stream_opts_default(&o);
    o.memory_budget = sp->memory_budget;
    o.prefetch = sp->prefetch;
    o.verify = sp->verify;
    o.direct_io = sp->direct_io;
    strata_model *m;
    st_streamer *s;
    strata_err rc;
    char dir[4000];
    char manifest[4100];
    struct stat st;
    if (sp->in_place) {
        if ((rc = st_model_open_in_place(path, params, &o, &m, &s, err)) != STRATA_OK) {
            return rc;
        }
        m->source_free = free_streamer_cb;
        *out = m;
        return st_model_init_backend(out, params, err);
    }
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", path);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode) && access(manifest, F_OK) == 0) {
        if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir)) {
            return st_error(err, STRATA_ERR_ARG, "store path is too long");
        }
    } else {
        int n;
        const char *suffix = c == ST_COMPRESS_NONE ? "" : c == ST_COMPRESS_8BIT ? "-8bit" : "-4bit";
        const char *env = getenv("STRATA_STORE_DIR");
        if (sp->store_path != NULL && sp->store_path[0] != '\0') {
            n = snprintf(dir, sizeof(dir), "%s", sp->store_path);
        } else if (env != NULL && env[0] != '\0') {
            const char *base = strrchr(path, '/');
            n = snprintf(dir, sizeof(dir), "%s/%s.strata-store%s", env, base ? base + 1 : path, suffix);
        } else {
            n = snprintf(dir, sizeof(dir), "%s.strata-store%s", path, suffix);
        }
        if (n < 0 || n >= (int)sizeof(dir)) {
            return st_error(err, STRATA_ERR_ARG, "store path is too long");
        }
        st_split_opts so;
        st_split_opts_default(&so);
        so.compression = c;
        so.delete_original = sp->delete_original;
        if ((rc = st_store_split(path, dir, &so, err)) != STRATA_OK) {
            return rc;
        }
    }
    rc = st_model_open_streamed(dir, params, &o, &m, &s, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    m->source_free = free_streamer_cb;
    *out = m;
    return st_model_init_backend(out, params, err);
}

size_t strata_model_stream_stats(strata_model *model, strata_stream_stats *out, size_t cap, bool reset)
{
    st_streamer *s = model != NULL ? st_streamer_of(&model->source) : NULL;
    return s != NULL ? st_streamer_snapshot(s, out, cap, reset) : 0;
}
