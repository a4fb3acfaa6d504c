/* Backend selection at model load (see backend.h). Compiled into every
 * build; the CUDA calls exist only with STRATA_CUDA=1. */
#include "backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool log_enabled(void)
{
    const char *v = getenv("STRATA_LOG");
    return !(v != NULL && strcmp(v, "0") == 0);
}

/* The requested backend: STRATA_BACKEND overrides params. */
static strata_err requested(const strata_model_params *p, int *out, const char **from, strata_error *err)
{
    const char *env = getenv("STRATA_BACKEND");
    *out = p != NULL ? p->backend : STRATA_BACKEND_AUTO;
    *from = *out == STRATA_BACKEND_AUTO ? "auto" : "requested";
    if (env != NULL && env[0] != '\0') {
        if (strcmp(env, "auto") == 0) {
            *out = STRATA_BACKEND_AUTO;
        } else if (strcmp(env, "cpu") == 0) {
            *out = STRATA_BACKEND_CPU;
        } else if (strcmp(env, "cuda") == 0) {
            *out = STRATA_BACKEND_CUDA;
        } else {
            return st_error(err, STRATA_ERR_ARG, "STRATA_BACKEND='%s' is not one of auto, cpu, cuda", env);
        }
        *from = "STRATA_BACKEND";
    }
    if (*out != STRATA_BACKEND_AUTO && *out != STRATA_BACKEND_CPU && *out != STRATA_BACKEND_CUDA) {
        return st_error(err, STRATA_ERR_ARG, "backend %d is not STRATA_BACKEND_AUTO, _CPU or _CUDA", *out);
    }
    return STRATA_OK;
}

#if STRATA_CUDA
/* NULL when the GPU kernels handle the model (every weight the GPU reads,
 * the head size), else what they lack (written into buf). Token embeddings are looked up
 * on the host and need no GPU support. */
static const char *unsupported_weight(const strata_model *m, char *buf, size_t cap)
{
    const st_hparams *hp = &m->hp;
    if (hp->head_dim > 256) {
        snprintf(buf, cap, "head dimension %d (attention kernel: at most 256)", hp->head_dim);
        return buf;
    }
    if (m->layers == NULL) {
        /* streamed: the parts are read later; judge by the dominant type
         * (the runner still checks every tensor as it uploads it) */
        for (int t = 0; t < ST_TYPE_COUNT; t++) {
            if (strcmp(st_type_name((st_type)t), m->weight_type) == 0) {
                if (!st_cuda_type_ok(t)) {
                    snprintf(buf, cap, "weight type %s", m->weight_type);
                    return buf;
                }
                return NULL;
            }
        }
        return NULL;
    }
    st_layer_tensor specs[ST_LAYER_TENSORS];
    st_layer_tensors(hp, specs);
    for (int i = 0; i < hp->n_layers; i++) {
        const uint8_t *l = (const uint8_t *)&m->layers[i];
        for (int j = 0; j < ST_LAYER_TENSORS; j++) {
            if (!specs[j].matrix) {
                continue;
            }
            const st_weight *w = (const st_weight *)(l + specs[j].offset);
            if (w->data != NULL && !st_cuda_type_ok(w->type)) {
                snprintf(buf, cap, "weight type %s (blk.%d.%s)", st_type_name(w->type), i, specs[j].suffix);
                return buf;
            }
        }
    }
    if (m->output.data != NULL && !st_cuda_type_ok(m->output.type)) {
        snprintf(buf, cap, "weight type %s (output.weight)", st_type_name(m->output.type));
        return buf;
    }
    return NULL;
}
#endif

strata_err st_backend_init(strata_model *m, const strata_model_params *p, strata_error *err)
{
    int want;
    const char *from;
    m->backend = STRATA_BACKEND_CPU;
    m->gpu = NULL;
    m->device_name[0] = '\0';
    strata_err rc = requested(p, &want, &from, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    char why[640] = "";
    if (want == STRATA_BACKEND_CPU) {
        snprintf(why, sizeof(why), "%s", from);
    } else {
#if STRATA_CUDA
        char name[128], reason[256], what[160];
        uint64_t total = 0;
        const char *bad;
        if (st_cuda_probe(name, sizeof(name), &total, reason, sizeof(reason)) != 0) {
            if (want == STRATA_BACKEND_CUDA) {
                return st_error(err, STRATA_ERR_UNSUPPORTED, "CUDA backend unavailable: %s", reason);
            }
            snprintf(why, sizeof(why), "%s: %s", from, reason);
        } else if ((bad = unsupported_weight(m, what, sizeof(what))) != NULL) {
            if (want == STRATA_BACKEND_CUDA) {
                return st_error(err, STRATA_ERR_UNSUPPORTED, "CUDA backend: the GPU kernels lack %s", bad);
            }
            snprintf(why, sizeof(why), "%s: the GPU kernels lack %s", from, bad);
        } else {
            st_cuda_model *g = NULL;
            strata_error gerr = {0};
            if (st_cuda_model_new(m, p != NULL ? p->vram_budget : 0, &g, &gerr) != STRATA_OK) {
                if (want == STRATA_BACKEND_CUDA) {
                    return st_error(err, gerr.code, "%s", gerr.msg);
                }
                /* auto: the device is there but cannot be set up (busy in
                 * exclusive mode, out of memory, ...): run on the CPU */
                snprintf(why, sizeof(why), "%s: %s", from, gerr.msg);
            } else {
                m->gpu = g;
                m->backend = STRATA_BACKEND_CUDA;
                snprintf(m->device_name, sizeof(m->device_name), "%s", name);
                if (log_enabled()) {
                    fprintf(stderr, "strata: backend cuda on %s (%.1f GiB) (%s)\n", name,
                            (double)total / (1 << 30), from);
                }
                return STRATA_OK;
            }
        }
#else
        if (want == STRATA_BACKEND_CUDA) {
            return st_error(err, STRATA_ERR_UNSUPPORTED,
                            "CUDA backend unavailable: this build has no CUDA support (built without nvcc or with "
                            "STRATA_CUDA=0)");
        }
        snprintf(why, sizeof(why), "%s: this build has no CUDA support", from);
#endif
    }
    if (log_enabled()) {
        fprintf(stderr, "strata: backend cpu (%s)\n", why);
    }
    return STRATA_OK;
}

void st_backend_free(strata_model *m)
{
#if STRATA_CUDA
    if (m->gpu != NULL) {
        st_cuda_model_free(m->gpu);
    }
#endif
    m->gpu = NULL;
}

#if !STRATA_CUDA
/* Stubs: never reached, m->gpu is always NULL without CUDA. */
strata_err st_cuda_kv_alloc(strata_ctx *ctx, size_t kv_bytes_per_layer, strata_error *err)
{
    return st_error(err, STRATA_ERR_INTERNAL, "no CUDA support in this build");
}

void st_cuda_kv_free(strata_ctx *ctx)
{
}

strata_err st_cuda_runner_new(const strata_model *m, int max_tokens, int n_ctx_max, st_pool *pool,
                              st_cuda_runner **out, strata_error *err)
{
    *out = NULL;
    return st_error(err, STRATA_ERR_INTERNAL, "no CUDA support in this build");
}

void st_cuda_runner_free(st_cuda_runner *r)
{
}

strata_err st_cuda_forward_batch(st_cuda_runner *r, const st_part_source *src, st_batch_seq *seqs, int n_seqs,
                                 strata_error *err)
{
    return st_error(err, STRATA_ERR_INTERNAL, "no CUDA support in this build");
}
#endif
