/* The CUDA runner: st_forward_batch on the GPU (see backend.h, batch.h).
 *
 * Layer-major like the CPU pass: all sequences' rows are stacked and every
 * weight part (blocks 0..L-1, then the head) is applied to all of them before
 * the next. Activations live on the device; token embeddings are looked up on
 * the host (only the rows a step needs) and uploaded with the RoPE cos/sin
 * rows (st_rope_cache) and the rows' positions and KV slots.
 *
 * Weights: each part is packed into one device buffer (matrices in their GGUF
 * block layout, norms/biases as F32). The first step decides per part, in
 * cycle order, whether it stays resident (within the model's VRAM budget:
 * uploaded once and kept, shared by every runner of the model) or streams:
 * a streamed part is copied from the source's host pointers into one of two
 * pinned staging buffers (CPU threads of the pool) and from there to one of
 * two device slots on a copy stream, so part i+1's transfer overlaps part
 * i's kernels on the compute stream. Events order the two: a slot's copy
 * waits until the kernels that read its previous part are done, a part's
 * kernels wait for its copy.
 *
 * The CUDA runtime's primary context is per device and process; every other
 * piece of state (streams, events, buffers) belongs to a model or a runner. */
#include "backend.h"
#include "cu_kernels.h"

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CU_ALIGN 256
#define MAX_PART_TENSORS ST_LAYER_TENSORS

/* ------------------------------------------------------------- helpers -- */

#define CK(call, what)                                                                                           \
    do {                                                                                                         \
        cudaError_t ck_e_ = (call);                                                                              \
        if (ck_e_ != cudaSuccess) {                                                                              \
            return st_error(err, ck_e_ == cudaErrorMemoryAllocation ? STRATA_ERR_NOMEM : STRATA_ERR_INTERNAL,    \
                            "CUDA %s: %s", what, cudaGetErrorString(ck_e_));                                     \
        }                                                                                                        \
    } while (0)

/* kernel launchers return a cudaError_t code */
#define KL(call, what)                                                                                           \
    do {                                                                                                         \
        int kl_e_ = (call);                                                                                      \
        if (kl_e_ != 0) {                                                                                        \
            return st_error(err, STRATA_ERR_INTERNAL, "CUDA kernel %s: %s", what,                                \
                            cudaGetErrorString((cudaError_t)kl_e_));                                             \
        }                                                                                                        \
    } while (0)

static size_t align_up(size_t n)
{
    return (n + CU_ALIGN - 1) / CU_ALIGN * CU_ALIGN;
}

int st_cuda_probe(char *name, size_t name_cap, uint64_t *total_mem, char *why, size_t why_cap)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorInsufficientDriver) {
        int drv = 0, rt = 0;
        cudaDriverGetVersion(&drv);
        cudaRuntimeGetVersion(&rt);
        if (drv == 0) {
            snprintf(why, why_cap, "no CUDA driver (libcuda.so.1 not found)");
        } else {
            snprintf(why, why_cap, "CUDA driver too old: it supports CUDA %d.%d, this build needs %d.%d", drv / 1000,
                     drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
        }
        return -1;
    }
    if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0)) {
        snprintf(why, why_cap, "no CUDA device (%s)", e == cudaSuccess ? "none found" : cudaGetErrorString(e));
        return -1;
    }
    if (e != cudaSuccess) {
        snprintf(why, why_cap, "CUDA unavailable (%s: %s)", cudaGetErrorName(e), cudaGetErrorString(e));
        return -1;
    }
    struct cudaDeviceProp prop;
    if ((e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess) {
        snprintf(why, why_cap, "CUDA device 0 unusable (%s)", cudaGetErrorString(e));
        return -1;
    }
    snprintf(name, name_cap, "%s", prop.name);
    *total_mem = prop.totalGlobalMem;
    return 0;
}

bool st_cuda_type_ok(int type)
{
    return st_cu_type_supported(type);
}

/* ----------------------------------------------------------- part layout -- */

/* A part's tensors packed into one buffer: blocks use the st_layer_tensors
 * order; the head is [out_norm, output]. */
typedef struct {
    int n;
    const void *src[MAX_PART_TENSORS];
    size_t bytes[MAX_PART_TENSORS];
    size_t off[MAX_PART_TENSORS];
    size_t total;
} part_layout;

static strata_err layout_part(const strata_model *m, int part, const st_part_view *v, part_layout *pl,
                              strata_error *err)
{
    const st_hparams *hp = &m->hp;
    memset(pl, 0, sizeof(*pl));
    if (part == hp->n_layers) {
        pl->n = 2;
        pl->src[0] = v->out_norm;
        pl->bytes[0] = (size_t)hp->n_embd * sizeof(float);
        if (!st_cuda_type_ok(v->output.type)) {
            return st_error(err, STRATA_ERR_UNSUPPORTED, "the GPU kernels lack weight type %s (output.weight)",
                            st_type_name(v->output.type));
        }
        pl->src[1] = v->output.data;
        pl->bytes[1] = (size_t)v->output.n_out * st_row_bytes(v->output.type, v->output.n_in);
    } else {
        st_layer_tensor specs[ST_LAYER_TENSORS];
        st_layer_tensors(hp, specs);
        const uint8_t *l = (const uint8_t *)v->layer;
        pl->n = ST_LAYER_TENSORS;
        for (int j = 0; j < ST_LAYER_TENSORS; j++) {
            if (specs[j].matrix) {
                const st_weight *w = (const st_weight *)(l + specs[j].offset);
                if (w->data == NULL) {
                    continue;
                }
                if (!st_cuda_type_ok(w->type)) {
                    return st_error(err, STRATA_ERR_UNSUPPORTED, "the GPU kernels lack weight type %s (blk.%d.%s)",
                                    st_type_name(w->type), part, specs[j].suffix);
                }
                pl->src[j] = w->data;
                pl->bytes[j] = (size_t)w->n_out * st_row_bytes(w->type, w->n_in);
            } else {
                const float *vec = *(const float *const *)(l + specs[j].offset);
                if (vec == NULL) {
                    continue;
                }
                pl->src[j] = vec;
                pl->bytes[j] = (size_t)specs[j].n_in * sizeof(float);
            }
        }
    }
    size_t off = 0;
    for (int j = 0; j < pl->n; j++) {
        pl->off[j] = off;
        off += align_up(pl->bytes[j]);
    }
    pl->total = off;
    return STRATA_OK;
}

/* ----------------------------------------------------------------- model -- */

enum { PART_UNSEEN = 0, PART_RESIDENT, PART_STREAMED };

typedef struct {
    int state;
    void *dev;          /* resident bytes */
    size_t bytes;
    /* resident parts: what the step needs besides the device bytes (types and
     * shapes; host pointers in them are stale), so later steps need not
     * acquire the part from its source at all */
    st_layer layer;
    st_weight output;
    part_layout pl;
} gpu_part;

struct st_cuda_model {
    int device;
    uint64_t vram_budget;   /* as asked; 0: what fits minus a margin */
    uint64_t budget;        /* resolved at the first step */
    bool planned;
    uint64_t resident_bytes;
    pthread_mutex_t mu;
    int n_parts;            /* blocks + head */
    gpu_part *parts;
};

strata_err st_cuda_model_new(strata_model *m, uint64_t vram_budget, st_cuda_model **out, strata_error *err)
{
    *out = NULL;
    st_cuda_model *g = st_calloc(1, sizeof(*g));
    if (g == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    g->device = 0;
    g->vram_budget = vram_budget;
    g->n_parts = m->hp.n_layers + 1;
    g->parts = st_calloc((size_t)g->n_parts, sizeof(gpu_part));
    if (g->parts == NULL || pthread_mutex_init(&g->mu, NULL) != 0) {
        free(g->parts);
        free(g);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    cudaError_t e = cudaSetDevice(g->device);
    if (e == cudaSuccess) {
        e = cudaFree(NULL); /* create the primary context now: errors show at load */
    }
    if (e != cudaSuccess) {
        st_cuda_model_free(g);
        return st_error(err, STRATA_ERR_UNSUPPORTED, "CUDA device %d: %s", 0, cudaGetErrorString(e));
    }
    *out = g;
    return STRATA_OK;
}

void st_cuda_model_free(st_cuda_model *g)
{
    if (g == NULL) {
        return;
    }
    cudaSetDevice(g->device);
    for (int i = 0; i < g->n_parts; i++) {
        if (g->parts[i].dev != NULL) {
            cudaFree(g->parts[i].dev);
        }
    }
    free(g->parts);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* ------------------------------------------------------------------- KV -- */

strata_err st_cuda_kv_alloc(strata_ctx *ctx, size_t kv_bytes_per_layer, strata_error *err)
{
    const strata_model *m = ctx->model;
    const st_cuda_model *g = m->gpu;
    const int L = m->hp.n_layers;
    const size_t per = align_up(kv_bytes_per_layer);
    const size_t need = (size_t)L * 2 * per;
    CK(cudaSetDevice(g->device), "set device");
    size_t free_b = 0, total_b = 0;
    CK(cudaMemGetInfo(&free_b, &total_b), "memory info");
    const size_t margin = (size_t)256 << 20;
    if (need + margin > free_b) {
        return st_error(err, STRATA_ERR_NOMEM,
                        "the GPU KV cache of a %d-token context needs %zu MiB, %s has %zu MiB free: use a smaller "
                        "context or the CPU backend",
                        ctx->n_ctx, need >> 20, m->device_name, free_b >> 20);
    }
    void *base = NULL;
    cudaError_t e = cudaMallocManaged(&base, need, cudaMemAttachGlobal);
    if (e != cudaSuccess) {
        return st_error(err, STRATA_ERR_NOMEM, "the GPU KV cache of a %d-token context (%zu MiB): %s", ctx->n_ctx,
                        need >> 20, cudaGetErrorString(e));
    }
#if CUDART_VERSION >= 13000
    struct cudaMemLocation loc = {.type = cudaMemLocationTypeDevice, .id = g->device};
    cudaMemAdvise(base, need, cudaMemAdviseSetPreferredLocation, loc);
#else
    cudaMemAdvise(base, need, cudaMemAdviseSetPreferredLocation, g->device);
#endif
    for (int l = 0; l < L; l++) {
        ctx->kv[l].k = (uint8_t *)base + (size_t)(2 * l) * per;
        ctx->kv[l].v = (uint8_t *)base + (size_t)(2 * l + 1) * per;
    }
    ctx->kv_gpu = base;
    return STRATA_OK;
}

void st_cuda_kv_free(strata_ctx *ctx)
{
    if (ctx->kv_gpu != NULL) {
        cudaSetDevice(((const st_cuda_model *)ctx->model->gpu)->device);
        cudaFree(ctx->kv_gpu);
        ctx->kv_gpu = NULL;
    }
}

/* ---------------------------------------------------------------- runner -- */

struct st_cuda_runner {
    const strata_model *m;
    st_cuda_model *g;
    st_pool *pool;
    int max_tokens;
    int n_ctx_max;
    cudaStream_t compute, copy;
    /* device activations */
    float *x, *xn, *q, *k, *v, *gate, *up, *rope;
    int *d_pos, *d_seq;
    void **d_kptr, **d_vptr;    /* (n_layers, max_tokens) cache pointers per layer and sequence slot */
    /* pinned step inputs */
    float *h_x, *h_rope;
    int *h_pos, *h_seq;
    void **h_kptr, **h_vptr;
    /* logits / embeddings of the rows that want them */
    int *out_row_idx;           /* host (max_tokens) */
    int n_out_cap;
    float *d_logits, *h_logits; /* (n_out_cap, n_vocab) */
    float *h_embd;              /* (max_tokens, n_embd) pinned */
    /* streaming */
    size_t slot_cap;
    void *slot_dev[2];
    void *slot_host[2];
    cudaEvent_t copy_done[2], compute_done[2];
    int next_slot;
};

void st_cuda_runner_free(st_cuda_runner *r)
{
    if (r == NULL) {
        return;
    }
    cudaSetDevice(r->g->device);
    if (r->compute != NULL) {
        cudaStreamSynchronize(r->compute);
    }
    if (r->copy != NULL) {
        cudaStreamSynchronize(r->copy);
    }
    void *dev[] = {r->x, r->xn, r->q, r->k, r->v, r->gate, r->up, r->rope, r->d_pos, r->d_seq, r->d_kptr,
                   r->d_vptr, r->d_logits, r->slot_dev[0], r->slot_dev[1]};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++) {
        if (dev[i] != NULL) {
            cudaFree(dev[i]);
        }
    }
    void *host[] = {r->h_x, r->h_rope, r->h_pos, r->h_seq, r->h_kptr, r->h_vptr, r->h_logits, r->h_embd,
                    r->slot_host[0], r->slot_host[1]};
    for (size_t i = 0; i < sizeof(host) / sizeof(host[0]); i++) {
        if (host[i] != NULL) {
            cudaFreeHost(host[i]);
        }
    }
    for (int i = 0; i < 2; i++) {
        if (r->copy_done[i] != NULL) {
            cudaEventDestroy(r->copy_done[i]);
        }
        if (r->compute_done[i] != NULL) {
            cudaEventDestroy(r->compute_done[i]);
        }
    }
    if (r->compute != NULL) {
        cudaStreamDestroy(r->compute);
    }
    if (r->copy != NULL) {
        cudaStreamDestroy(r->copy);
    }
    free(r->out_row_idx);
    free(r);
}

static strata_err runner_alloc(st_cuda_runner *r, strata_error *err)
{
    const st_hparams *hp = &r->m->hp;
    const size_t B = (size_t)r->max_tokens;
    const size_t q_dim = (size_t)hp->n_head * hp->head_dim;
    const size_t kv_dim = (size_t)hp->n_head_kv * hp->head_dim;
    const size_t wide = ST_MAX(ST_MAX((size_t)hp->n_embd, q_dim), (size_t)hp->n_ff);
    const size_t F = sizeof(float);
    const size_t n_ptr = (size_t)hp->n_layers * B;
    CK(cudaStreamCreateWithFlags(&r->compute, cudaStreamNonBlocking), "compute stream");
    CK(cudaStreamCreateWithFlags(&r->copy, cudaStreamNonBlocking), "copy stream");
    for (int i = 0; i < 2; i++) {
        CK(cudaEventCreateWithFlags(&r->copy_done[i], cudaEventDisableTiming), "event");
        CK(cudaEventCreateWithFlags(&r->compute_done[i], cudaEventDisableTiming), "event");
    }
    CK(cudaMalloc((void **)&r->x, B * hp->n_embd * F), "activations");
    CK(cudaMalloc((void **)&r->xn, B * ST_MAX((size_t)hp->n_embd, q_dim) * F), "activations");
    CK(cudaMalloc((void **)&r->q, B * q_dim * F), "activations");
    CK(cudaMalloc((void **)&r->k, B * kv_dim * F), "activations");
    CK(cudaMalloc((void **)&r->v, B * kv_dim * F), "activations");
    CK(cudaMalloc((void **)&r->gate, B * wide * F), "activations");
    CK(cudaMalloc((void **)&r->up, B * wide * F), "activations");
    CK(cudaMalloc((void **)&r->rope, B * hp->n_rot * F), "activations");
    CK(cudaMalloc((void **)&r->d_pos, B * sizeof(int)), "activations");
    CK(cudaMalloc((void **)&r->d_seq, B * sizeof(int)), "activations");
    CK(cudaMalloc((void **)&r->d_kptr, n_ptr * sizeof(void *)), "activations");
    CK(cudaMalloc((void **)&r->d_vptr, n_ptr * sizeof(void *)), "activations");
    CK(cudaHostAlloc((void **)&r->h_x, B * hp->n_embd * F, cudaHostAllocDefault), "pinned memory");
    CK(cudaHostAlloc((void **)&r->h_rope, B * hp->n_rot * F, cudaHostAllocDefault), "pinned memory");
    CK(cudaHostAlloc((void **)&r->h_pos, B * sizeof(int), cudaHostAllocDefault), "pinned memory");
    CK(cudaHostAlloc((void **)&r->h_seq, B * sizeof(int), cudaHostAllocDefault), "pinned memory");
    CK(cudaHostAlloc((void **)&r->h_kptr, n_ptr * sizeof(void *), cudaHostAllocDefault), "pinned memory");
    CK(cudaHostAlloc((void **)&r->h_vptr, n_ptr * sizeof(void *), cudaHostAllocDefault), "pinned memory");
    CK(cudaHostAlloc((void **)&r->h_embd, B * hp->n_embd * F, cudaHostAllocDefault), "pinned memory");
    r->out_row_idx = st_calloc(B, sizeof(int));
    if (r->out_row_idx == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    return STRATA_OK;
}

strata_err st_cuda_runner_new(const strata_model *m, int max_tokens, int n_ctx_max, st_pool *pool,
                              st_cuda_runner **out, strata_error *err)
{
    *out = NULL;
    st_cuda_runner *r = st_calloc(1, sizeof(*r));
    if (r == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    r->m = m;
    r->g = m->gpu;
    r->pool = pool;
    r->max_tokens = max_tokens;
    r->n_ctx_max = n_ctx_max;
    cudaError_t e = cudaSetDevice(r->g->device);
    if (e != cudaSuccess) {
        free(r);
        return st_error(err, STRATA_ERR_INTERNAL, "CUDA set device: %s", cudaGetErrorString(e));
    }
    strata_err rc = runner_alloc(r, err);
    if (rc != STRATA_OK) {
        if (rc == STRATA_ERR_NOMEM && err != NULL) {
            char msg[sizeof(err->msg)];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            st_error(err, rc, "GPU buffers for a %d-token step: %s", max_tokens, msg);
        }
        st_cuda_runner_free(r);
        return rc;
    }
    *out = r;
    return STRATA_OK;
}

/* -------------------------------------------------------- part staging -- */

typedef struct {
    const part_layout *pl;
    uint8_t *dst;
} pack_job;

/* Each thread copies its share of the part's bytes (pageable -> pinned). */
static void pack_task(void *arg, int ith, int nth)
{
    pack_job *job = arg;
    const part_layout *pl = job->pl;
    size_t sum = 0;
    for (int j = 0; j < pl->n; j++) {
        sum += pl->bytes[j];
    }
    int64_t start, end;
    st_split_range((int64_t)sum, ith, nth, &start, &end);
    size_t pos = 0;
    for (int j = 0; j < pl->n && (int64_t)pos < end; j++) {
        const size_t a = pos, b = pos + pl->bytes[j];
        pos = b;
        const size_t lo = ST_MAX(a, (size_t)start), hi = ST_MIN(b, (size_t)end);
        if (lo < hi) {
            memcpy(job->dst + pl->off[j] + (lo - a), (const uint8_t *)pl->src[j] + (lo - a), hi - lo);
        }
    }
}

static strata_err ensure_slots(st_cuda_runner *r, size_t bytes, strata_error *err)
{
    if (bytes <= r->slot_cap) {
        return STRATA_OK;
    }
    CK(cudaStreamSynchronize(r->compute), "synchronize");
    CK(cudaStreamSynchronize(r->copy), "synchronize");
    for (int i = 0; i < 2; i++) {
        if (r->slot_dev[i] != NULL) {
            cudaFree(r->slot_dev[i]);
            r->slot_dev[i] = NULL;
        }
        if (r->slot_host[i] != NULL) {
            cudaFreeHost(r->slot_host[i]);
            r->slot_host[i] = NULL;
        }
    }
    r->slot_cap = 0;
    for (int i = 0; i < 2; i++) {
        CK(cudaMalloc(&r->slot_dev[i], bytes), "streaming slot");
        CK(cudaHostAlloc(&r->slot_host[i], bytes, cudaHostAllocDefault), "pinned staging buffer");
    }
    r->slot_cap = bytes;
    return STRATA_OK;
}

/* Where part `part` is on the device for this step: resident (uploaded on
 * first use, within the budget) or staged into a slot (*slot >= 0: the
 * caller waits for copy_done[slot] and records compute_done[slot]). */
static strata_err place_part(st_cuda_runner *r, int part, const st_part_view *view, const uint8_t **base,
                             part_layout *pl, int *slot, strata_error *err)
{
    st_cuda_model *g = r->g;
    strata_err rc = layout_part(r->m, part, view, pl, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    *slot = -1;
    pthread_mutex_lock(&g->mu);
    gpu_part *gp = &g->parts[part];
    if (!g->planned) {
        if (g->vram_budget > 0) {
            g->budget = g->vram_budget;
        } else {
            size_t free_b = 0, total_b = 0;
            cudaMemGetInfo(&free_b, &total_b);
            /* margin: 1 GiB or 5%, and room for the two streaming slots */
            const size_t margin = ST_MAX((size_t)1 << 30, total_b / 20) + 2 * pl->total;
            g->budget = free_b > margin ? free_b - margin : 0;
        }
        g->planned = true;
    }
    if (gp->state == PART_UNSEEN) {
        gp->bytes = pl->total;
        gp->state = PART_STREAMED;
        if (g->resident_bytes + pl->total <= g->budget && cudaMalloc(&gp->dev, pl->total) == cudaSuccess) {
            cudaError_t e = cudaSuccess;
            for (int j = 0; j < pl->n && e == cudaSuccess; j++) {
                if (pl->bytes[j] > 0) {
                    e = cudaMemcpy((uint8_t *)gp->dev + pl->off[j], pl->src[j], pl->bytes[j], cudaMemcpyHostToDevice);
                }
            }
            if (e != cudaSuccess) {
                cudaFree(gp->dev);
                gp->dev = NULL;
                gp->state = PART_UNSEEN;
                pthread_mutex_unlock(&g->mu);
                return st_error(err, STRATA_ERR_INTERNAL, "CUDA upload of part %d: %s", part, cudaGetErrorString(e));
            }
            gp->state = PART_RESIDENT;
            g->resident_bytes += pl->total;
            gp->pl = *pl;
            gp->output = view->output;
            if (view->layer != NULL) {
                gp->layer = *view->layer;
            }
        } else {
            cudaGetLastError(); /* clear a failed cudaMalloc */
        }
    } else if (gp->bytes != pl->total) {
        pthread_mutex_unlock(&g->mu);
        return st_error(err, STRATA_ERR_INTERNAL, "weight part %d changed size (%zu -> %zu bytes)", part, gp->bytes,
                        pl->total);
    }
    const bool resident = gp->state == PART_RESIDENT;
    *base = gp->dev;
    pthread_mutex_unlock(&g->mu);
    if (resident) {
        return STRATA_OK;
    }
    if ((rc = ensure_slots(r, pl->total, err)) != STRATA_OK) {
        return rc;
    }
    const int s = r->next_slot;
    r->next_slot ^= 1;
    /* the pinned buffer is free once its previous copy is done */
    CK(cudaEventSynchronize(r->copy_done[s]), "wait for staging buffer");
    pack_job job = {.pl = pl, .dst = r->slot_host[s]};
    if (r->pool != NULL) {
        st_pool_run(r->pool, pack_task, &job);
    } else {
        pack_task(&job, 0, 1);
    }
    /* the device slot is free once the kernels of its previous part ran */
    CK(cudaStreamWaitEvent(r->copy, r->compute_done[s], 0), "stream wait");
    CK(cudaMemcpyAsync(r->slot_dev[s], r->slot_host[s], pl->total, cudaMemcpyHostToDevice, r->copy), "copy part");
    CK(cudaEventRecord(r->copy_done[s], r->copy), "event record");
    *base = r->slot_dev[s];
    *slot = s;
    return STRATA_OK;
}

/* -------------------------------------------------------------- compute -- */

static const void *dptr(const uint8_t *base, const part_layout *pl, int j)
{
    return pl->bytes[j] > 0 ? base + pl->off[j] : NULL;
}

static strata_err mm(st_cuda_runner *r, const st_weight *w, const void *dw, const float *x, int n, float *y,
                     strata_error *err)
{
    KL(st_cu_matmul(w->type, dw, w->n_in, w->n_out, x, n, y, r->compute), "matmul");
    return STRATA_OK;
}

/* One block on the compute stream. l: the host view (types, shapes); base
 * + pl: its tensors on the device. */
static strata_err block(st_cuda_runner *r, const st_layer *l, const uint8_t *base, const part_layout *pl, int il,
                        int n_rows, int n_seqs, bool kv_f16, strata_error *err)
{
    const st_hparams *hp = &r->m->hp;
    const int n_embd = hp->n_embd;
    const int hd = hp->head_dim;
    const int q_dim = hp->n_head * hd;
    const int kv_dim = hp->n_head_kv * hd;
    const float eps = hp->rms_eps;
    cudaStream_t s = r->compute;
    /* indices: st_layer_tensors order */
    enum { ATTN_NORM, WQ, WK, WV, WO, BQ, BK, BV, QN, KN, FFN_NORM, WG, WU, WD };
    strata_err rc;

    KL(st_cu_rmsnorm(r->xn, r->x, dptr(base, pl, ATTN_NORM), n_rows, n_embd, eps, s), "rmsnorm");
    if ((rc = mm(r, &l->wq, dptr(base, pl, WQ), r->xn, n_rows, r->q, err)) != STRATA_OK ||
        (rc = mm(r, &l->wk, dptr(base, pl, WK), r->xn, n_rows, r->k, err)) != STRATA_OK ||
        (rc = mm(r, &l->wv, dptr(base, pl, WV), r->xn, n_rows, r->v, err)) != STRATA_OK) {
        return rc;
    }
    if (pl->bytes[BQ] > 0) {
        KL(st_cu_add_bias(r->q, dptr(base, pl, BQ), n_rows, q_dim, s), "bias");
    }
    if (pl->bytes[BK] > 0) {
        KL(st_cu_add_bias(r->k, dptr(base, pl, BK), n_rows, kv_dim, s), "bias");
    }
    if (pl->bytes[BV] > 0) {
        KL(st_cu_add_bias(r->v, dptr(base, pl, BV), n_rows, kv_dim, s), "bias");
    }
    if (pl->bytes[QN] > 0) {
        KL(st_cu_rmsnorm(r->q, r->q, dptr(base, pl, QN), n_rows * hp->n_head, hd, eps, s), "q norm");
    }
    if (pl->bytes[KN] > 0) {
        KL(st_cu_rmsnorm(r->k, r->k, dptr(base, pl, KN), n_rows * hp->n_head_kv, hd, eps, s), "k norm");
    }
    const bool neox = hp->rope_kind == ST_ROPE_NEOX;
    KL(st_cu_rope(r->q, r->rope, n_rows, hp->n_head, hd, hp->n_rot, neox, s), "rope");
    KL(st_cu_rope(r->k, r->rope, n_rows, hp->n_head_kv, hd, hp->n_rot, neox, s), "rope");
    void *const *kc = r->d_kptr + (size_t)il * n_seqs;
    void *const *vc = r->d_vptr + (size_t)il * n_seqs;
    KL(st_cu_kv_store(kc, vc, r->d_seq, r->d_pos, r->k, r->v, n_rows, kv_dim, kv_f16, s), "kv store");
    KL(st_cu_attention(r->xn, r->q, kc, vc, r->d_seq, r->d_pos, n_rows, hp->n_head, hp->n_head_kv, hd, kv_f16, s),
       "attention");
    if ((rc = mm(r, &l->wo, dptr(base, pl, WO), r->xn, n_rows, r->gate, err)) != STRATA_OK) {
        return rc;
    }
    KL(st_cu_add(r->x, r->gate, (size_t)n_rows * n_embd, s), "residual");

    KL(st_cu_rmsnorm(r->xn, r->x, dptr(base, pl, FFN_NORM), n_rows, n_embd, eps, s), "rmsnorm");
    if ((rc = mm(r, &l->w_gate, dptr(base, pl, WG), r->xn, n_rows, r->gate, err)) != STRATA_OK ||
        (rc = mm(r, &l->w_up, dptr(base, pl, WU), r->xn, n_rows, r->up, err)) != STRATA_OK) {
        return rc;
    }
    KL(st_cu_swiglu(r->gate, r->up, (size_t)n_rows * hp->n_ff, s), "swiglu");
    if ((rc = mm(r, &l->w_down, dptr(base, pl, WD), r->gate, n_rows, r->up, err)) != STRATA_OK) {
        return rc;
    }
    KL(st_cu_add(r->x, r->up, (size_t)n_rows * n_embd, s), "residual");
    return STRATA_OK;
}

/* Gather the rows that want output, final norm, output matmul; results are
 * copied back after the step synchronizes. */
static strata_err head(st_cuda_runner *r, const st_weight *out_w, const uint8_t *base, const part_layout *pl,
                       st_batch_seq *seqs, int n_seqs, int *n_out_ret, bool *any_logits, strata_error *err)
{
    const st_hparams *hp = &r->m->hp;
    const int n_embd = hp->n_embd;
    const size_t rowb = (size_t)n_embd * sizeof(float);
    *any_logits = false;
    for (int s = 0; s < n_seqs; s++) {
        *any_logits = *any_logits || seqs[s].logits != NULL;
    }
    const int n_out = st_batch_out_rows(seqs, n_seqs, r->out_row_idx);
    *n_out_ret = n_out;
    if (n_out == 0) {
        return STRATA_OK;
    }
    /* gather into gate, merging runs of consecutive rows */
    for (int i = 0; i < n_out;) {
        int j = i + 1;
        while (j < n_out && r->out_row_idx[j] == r->out_row_idx[j - 1] + 1) {
            j++;
        }
        CK(cudaMemcpyAsync(r->gate + (size_t)i * n_embd, r->x + (size_t)r->out_row_idx[i] * n_embd,
                           (size_t)(j - i) * rowb, cudaMemcpyDeviceToDevice, r->compute),
           "gather rows");
        i = j;
    }
    KL(st_cu_rmsnorm(r->xn, r->gate, dptr(base, pl, 0), n_out, n_embd, hp->rms_eps, r->compute), "rmsnorm");
    if (*any_logits) {
        if (n_out > r->n_out_cap) {
            CK(cudaStreamSynchronize(r->compute), "synchronize");
            if (r->d_logits != NULL) {
                cudaFree(r->d_logits);
                r->d_logits = NULL;
            }
            if (r->h_logits != NULL) {
                cudaFreeHost(r->h_logits);
                r->h_logits = NULL;
            }
            r->n_out_cap = 0;
            const size_t bytes = (size_t)n_out * hp->n_vocab * sizeof(float);
            CK(cudaMalloc((void **)&r->d_logits, bytes), "logits buffer");
            CK(cudaHostAlloc((void **)&r->h_logits, bytes, cudaHostAllocDefault), "pinned logits buffer");
            r->n_out_cap = n_out;
        }
        KL(st_cu_matmul(out_w->type, dptr(base, pl, 1), out_w->n_in, out_w->n_out, r->xn, n_out, r->d_logits,
                        r->compute),
           "output matmul");
        CK(cudaMemcpyAsync(r->h_logits, r->d_logits, (size_t)n_out * hp->n_vocab * sizeof(float),
                           cudaMemcpyDeviceToHost, r->compute),
           "copy logits");
    }
    bool any_embd = false;
    for (int s = 0; s < n_seqs; s++) {
        any_embd = any_embd || seqs[s].embd != NULL;
    }
    if (any_embd) {
        CK(cudaMemcpyAsync(r->h_embd, r->xn, (size_t)n_out * rowb, cudaMemcpyDeviceToHost, r->compute),
           "copy embeddings");
    }
    return STRATA_OK;
}

/* All parts of one step; parts are acquired and released in cycle order
 * (a streamer's reader thread relies on it). */
static strata_err run_parts(st_cuda_runner *r, const st_part_source *src, st_batch_seq *seqs, int n_seqs,
                            int n_rows, bool kv_f16, int *n_out, bool *any_logits, strata_error *err)
{
    const int L = r->m->hp.n_layers;
    for (int p = 0; p <= L; p++) {
        st_part_view view;
        const int id = p == L ? ST_PART_HEAD(L) : p;
        /* resident in VRAM: no need to touch the source (a streamer does not
         * even read it any more, see hold below) */
        pthread_mutex_lock(&r->g->mu);
        const gpu_part *gp = &r->g->parts[p];
        const bool on_gpu = gp->state == PART_RESIDENT;
        st_layer lres;
        st_weight out_res;
        part_layout pres;
        if (on_gpu) {
            lres = gp->layer;
            out_res = gp->output;
            pres = gp->pl;
        }
        const uint8_t *dres = gp->dev;
        pthread_mutex_unlock(&r->g->mu);
        if (on_gpu) {
            strata_err rc = p < L ? block(r, &lres, dres, &pres, p, n_rows, n_seqs, kv_f16, err)
                                  : head(r, &out_res, dres, &pres, seqs, n_seqs, n_out, any_logits, err);
            if (rc != STRATA_OK) {
                return rc;
            }
            continue;
        }
        strata_err rc = src->acquire(src->user, id, &view, err);
        if (rc != STRATA_OK) {
            return rc;
        }
        /* keep types and shapes: the host bytes go away at release */
        st_layer lcopy;
        st_weight out_w = view.output;
        if (p < L) {
            lcopy = *view.layer;
        }
        const uint8_t *base = NULL;
        part_layout pl;
        int slot = -1;
        rc = place_part(r, p, &view, &base, &pl, &slot, err);
        src->release(src->user, id);
        if (rc != STRATA_OK) {
            return rc;
        }
        if (slot < 0 && src->hold != NULL) {
            src->hold(src->user, id); /* now in VRAM for good: stop streaming it */
        }
        if (slot >= 0) {
            CK(cudaStreamWaitEvent(r->compute, r->copy_done[slot], 0), "stream wait");
        }
        rc = p < L ? block(r, &lcopy, base, &pl, p, n_rows, n_seqs, kv_f16, err)
                   : head(r, &out_w, base, &pl, seqs, n_seqs, n_out, any_logits, err);
        if (slot >= 0) {
            CK(cudaEventRecord(r->compute_done[slot], r->compute), "event record");
        }
        if (rc != STRATA_OK) {
            return rc;
        }
    }
    return STRATA_OK;
}

strata_err st_cuda_forward_batch(st_cuda_runner *r, const st_part_source *src, st_batch_seq *seqs, int n_seqs,
                                 strata_error *err)
{
    const strata_model *m = r->m;
    const st_hparams *hp = &m->hp;
    CK(cudaSetDevice(r->g->device), "set device");
    const bool kv_f16 = seqs[0].ctx->kv_type == ST_F16;
    int n_rows = 0;
    for (int s = 0; s < n_seqs; s++) {
        n_rows += seqs[s].n;
    }
    if (n_rows > r->max_tokens) {
        return st_error(err, STRATA_ERR_LIMIT, "batch of %d tokens exceeds the step size of %d", n_rows,
                        r->max_tokens);
    }
    n_rows = 0;
    for (int s = 0; s < n_seqs; s++) {
        const strata_ctx *ctx = seqs[s].ctx;
        if (ctx->kv_gpu == NULL) {
            return st_error(err, STRATA_ERR_INTERNAL, "batch entry %d: the context has no GPU KV cache", s);
        }
        if ((ctx->kv_type == ST_F16) != kv_f16) {
            return st_error(err, STRATA_ERR_ARG, "a GPU step needs one KV type for all its sequences");
        }
        for (int t = 0; t < seqs[s].n; t++, n_rows++) {
            r->h_pos[n_rows] = ctx->n_past + t;
            r->h_seq[n_rows] = s;
            st_rope_cache(hp, m->rope_freqs, r->h_pos[n_rows], r->h_rope + (size_t)n_rows * hp->n_rot);
        }
        for (int l = 0; l < hp->n_layers; l++) {
            r->h_kptr[(size_t)l * n_seqs + s] = ctx->kv[l].k;
            r->h_vptr[(size_t)l * n_seqs + s] = ctx->kv[l].v;
        }
    }
    /* embeddings: the step's rows, dequantized on the host */
    st_part_view view;
    strata_err rc = src->acquire(src->user, ST_PART_EMBED, &view, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    const size_t row_bytes = st_row_bytes(view.tok_embd.type, hp->n_embd);
    int row = 0;
    for (int s = 0; s < n_seqs; s++) {
        for (int t = 0; t < seqs[s].n; t++, row++) {
            const uint8_t *e = (const uint8_t *)view.tok_embd.data + (size_t)seqs[s].toks[t] * row_bytes;
            st_dequant_row(view.tok_embd.type, e, r->h_x + (size_t)row * hp->n_embd, hp->n_embd);
        }
    }
    src->release(src->user, ST_PART_EMBED);
    cudaStream_t cs = r->compute;
    const size_t n_ptr = (size_t)hp->n_layers * n_seqs * sizeof(void *);
    CK(cudaMemcpyAsync(r->x, r->h_x, (size_t)n_rows * hp->n_embd * sizeof(float), cudaMemcpyHostToDevice, cs),
       "upload");
    CK(cudaMemcpyAsync(r->rope, r->h_rope, (size_t)n_rows * hp->n_rot * sizeof(float), cudaMemcpyHostToDevice, cs),
       "upload");
    CK(cudaMemcpyAsync(r->d_pos, r->h_pos, (size_t)n_rows * sizeof(int), cudaMemcpyHostToDevice, cs), "upload");
    CK(cudaMemcpyAsync(r->d_seq, r->h_seq, (size_t)n_rows * sizeof(int), cudaMemcpyHostToDevice, cs), "upload");
    CK(cudaMemcpyAsync(r->d_kptr, r->h_kptr, n_ptr, cudaMemcpyHostToDevice, cs), "upload");
    CK(cudaMemcpyAsync(r->d_vptr, r->h_vptr, n_ptr, cudaMemcpyHostToDevice, cs), "upload");

    int n_out = 0;
    bool any_logits = false;
    rc = run_parts(r, src, seqs, n_seqs, n_rows, kv_f16, &n_out, &any_logits, err);
    /* whatever happened, leave both streams idle (pinned buffers reusable) */
    cudaError_t e1 = cudaStreamSynchronize(r->compute);
    cudaError_t e2 = cudaStreamSynchronize(r->copy);
    if (rc != STRATA_OK) {
        return rc;
    }
    CK(e1, "step");
    CK(e2, "step copies");
    if (n_out > 0) {
        st_batch_hand_back(seqs, n_seqs, r->h_embd, r->h_logits, hp->n_embd, hp->n_vocab);
    }
    return STRATA_OK;
}
