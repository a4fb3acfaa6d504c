/* A CPU stand-in for the CUDA runtime and the kernels of cu_kernels.h, so
 * the GPU runner (runner.c) can be tested on machines without a GPU
 * (build rule: $(BUILD)/tests/cuda_mock_parity_test in native/Makefile).
 *
 * "Device" memory is host memory. Streams are queues: launches and async
 * copies are recorded and run lazily, only when the host synchronizes (a
 * stream, an event) or a stream waits on an event, and in stream order, with
 * cudaStreamWaitEvent dependencies honored. Reusing a pinned buffer or a
 * device slot before the work that reads it has run therefore gives wrong
 * results here, as it would on a GPU. Env STRATA_MOCK_EAGER=1 runs async
 * copies as soon as they are queued instead (their waits first), while
 * kernels stay lazy: overwriting a device buffer that queued kernels still
 * read then gives wrong results. STRATA_MOCK_SYNC=1 runs everything at once.
 *
 * Kernels compute in F32 like the GPU ones (weights dequantized with the
 * engine's st_dequant_row, activations not quantized). */
#include "common.h"
#include "cu_kernels.h"
#include "quant.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------- op queues -- */

typedef struct mock_event mock_event;

typedef struct {
    void (*fn)(void *arg);
    void *arg;              /* malloc'd, freed after the run */
    mock_event *wait;       /* run this event's stream up to it first */
    mock_event *record;     /* marker: nothing to run */
} mock_op;

typedef struct {
    mock_op *q;
    size_t n, head, cap;
} mock_stream;

struct mock_event {
    mock_stream *s;         /* NULL: never recorded (complete) */
    size_t idx;             /* complete once s->head >= idx */
};

static void run_stream(mock_stream *s, size_t upto);

static void run_event(mock_event *e)
{
    if (e != NULL && e->s != NULL) {
        run_stream(e->s, e->idx);
    }
}

static void run_stream(mock_stream *s, size_t upto)
{
    while (s->head < upto && s->head < s->n) {
        mock_op op = s->q[s->head++];
        if (op.wait != NULL) {
            run_event(op.wait);
        }
        if (op.fn != NULL) {
            op.fn(op.arg);
        }
        free(op.arg);
    }
}

static bool sync_mode(void)
{
    const char *v = getenv("STRATA_MOCK_SYNC");
    return v != NULL && strcmp(v, "1") == 0;
}

static bool eager_mode(void)
{
    const char *v = getenv("STRATA_MOCK_EAGER");
    return v != NULL && strcmp(v, "1") == 0;
}

static void copy_fn(void *p);

static void push(void *stream, void (*fn)(void *), void *arg, mock_event *wait)
{
    mock_stream *s = stream;
    if (s == NULL || sync_mode()) {
        if (wait != NULL) {
            run_event(wait);
        }
        if (fn != NULL) {
            fn(arg);
        }
        free(arg);
        return;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->q = realloc(s->q, s->cap * sizeof(mock_op));
    }
    s->q[s->n++] = (mock_op){.fn = fn, .arg = arg, .wait = wait};
    if (fn == copy_fn && eager_mode()) {
        run_stream(s, s->n);
    }
}

#define ARG(type) type *a = malloc(sizeof(type))

/* -------------------------------------------------------------- runtime -- */

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t e)
{
    return e == cudaSuccess ? "no error" : "mock error";
}

const char *cudaGetErrorName(cudaError_t e)
{
    return e == cudaSuccess ? "cudaSuccess" : "cudaErrorMock";
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device)
{
    memset(prop, 0, sizeof(*prop));
    snprintf(prop->name, sizeof(prop->name), "mock CUDA device (CPU)");
    prop->totalGlobalMem = (size_t)8 << 30;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t cudaFree(void *p)
{
    free(p);
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p)
{
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = malloc(n ? n : 1);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int flags)
{
    return cudaMalloc(p, n);
}

cudaError_t cudaMallocManaged(void **p, size_t n, unsigned int flags)
{
    return cudaMalloc(p, n);
}

cudaError_t cudaMemAdvise(const void *p, size_t n, enum cudaMemoryAdvise advice, struct cudaMemLocation loc)
{
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b)
{
    *free_b = (size_t)6 << 30;
    *total_b = (size_t)8 << 30;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    *s = calloc(1, sizeof(mock_stream));
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    mock_stream *ms = (mock_stream *)s;
    run_stream(ms, ms->n);
    free(ms->q);
    free(ms);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    mock_stream *ms = (mock_stream *)s;
    run_stream(ms, ms->n);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    *e = calloc(1, sizeof(mock_event));
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    free(e);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    mock_event *me = (mock_event *)e;
    mock_stream *ms = (mock_stream *)s;
    if (ms == NULL || sync_mode()) {
        me->s = NULL;
        return cudaSuccess;
    }
    push(ms, NULL, NULL, NULL);
    me->s = ms;
    me->idx = ms->n;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    run_event((mock_event *)e);
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags)
{
    /* snapshot: a later record of the same event must not move this wait
     * (the op owns it as its arg) */
    mock_event *snap = NULL;
    mock_event *me = (mock_event *)e;
    if (me->s != NULL) {
        snap = malloc(sizeof(*snap));
        *snap = *me;
    }
    push(s, NULL, snap, snap);
    return cudaSuccess;
}

typedef struct {
    void *dst;
    const void *src;
    size_t n;
} copy_arg;

static void copy_fn(void *p)
{
    copy_arg *a = p;
    memcpy(a->dst, a->src, a->n);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind, cudaStream_t s)
{
    ARG(copy_arg);
    *a = (copy_arg){dst, src, n};
    push(s, copy_fn, a, NULL);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    memcpy(dst, src, n);
    return cudaSuccess;
}

/* -------------------------------------------------------------- kernels -- */

/* Env STRATA_MOCK_NO_TYPE=<name>: pretend the GPU lacks that weight type. */
bool st_cu_type_supported(int type)
{
    const char *no = getenv("STRATA_MOCK_NO_TYPE");
    if (no != NULL && strcmp(no, st_type_name((st_type)type)) == 0) {
        return false;
    }
    return st_type_supported((st_type)type);
}

typedef struct {
    int type;
    const void *w;
    int64_t n_in, n_out;
    const float *x;
    int n_tok;
    float *y;
} mm_arg;

static void mm_fn(void *p)
{
    mm_arg *a = p;
    float *row = malloc((size_t)a->n_in * sizeof(float));
    const size_t rb = st_row_bytes((st_type)a->type, a->n_in);
    for (int64_t o = 0; o < a->n_out; o++) {
        st_dequant_row((st_type)a->type, (const uint8_t *)a->w + (size_t)o * rb, row, a->n_in);
        for (int t = 0; t < a->n_tok; t++) {
            const float *x = a->x + (size_t)t * a->n_in;
            float s = 0;
            for (int64_t i = 0; i < a->n_in; i++) {
                s += row[i] * x[i];
            }
            a->y[(size_t)t * a->n_out + o] = s;
        }
    }
    free(row);
}

int st_cu_matmul(int type, const void *w, int64_t n_in, int64_t n_out, const float *x, int n_tok, float *y,
                 void *stream)
{
    ARG(mm_arg);
    *a = (mm_arg){type, w, n_in, n_out, x, n_tok, y};
    push(stream, mm_fn, a, NULL);
    return 0;
}

typedef struct {
    float *out;
    const float *x, *w;
    int n_rows, n;
    float eps;
} norm_arg;

static void norm_fn(void *p)
{
    norm_arg *a = p;
    for (int r = 0; r < a->n_rows; r++) {
        const float *x = a->x + (size_t)r * a->n;
        float *o = a->out + (size_t)r * a->n;
        double sum = 0;
        for (int i = 0; i < a->n; i++) {
            sum += (double)(x[i] * x[i]);
        }
        const float scale = 1.0f / sqrtf((float)(sum / a->n) + a->eps);
        for (int i = 0; i < a->n; i++) {
            o[i] = (x[i] * scale) * a->w[i];
        }
    }
}

int st_cu_rmsnorm(float *out, const float *x, const float *w, int n_rows, int n, float eps, void *stream)
{
    ARG(norm_arg);
    *a = (norm_arg){out, x, w, n_rows, n, eps};
    push(stream, norm_fn, a, NULL);
    return 0;
}

typedef struct {
    float *x;
    const float *cache;
    int n_rows, n_heads, head_dim, n_rot;
    bool neox;
} rope_arg;

static void rope_fn(void *p)
{
    rope_arg *a = p;
    for (int t = 0; t < a->n_rows; t++) {
        const float *c = a->cache + (size_t)t * a->n_rot;
        for (int h = 0; h < a->n_heads; h++) {
            float *x = a->x + ((size_t)t * a->n_heads + h) * a->head_dim;
            for (int i0 = 0; i0 < a->n_rot; i0 += 2) {
                const int i = a->neox ? i0 / 2 : i0, j = a->neox ? i0 / 2 + a->n_rot / 2 : i0 + 1;
                const float x0 = x[i], x1 = x[j];
                x[i] = x0 * c[i0] - x1 * c[i0 + 1];
                x[j] = x0 * c[i0 + 1] + x1 * c[i0];
            }
        }
    }
}

int st_cu_rope(float *x, const float *cache, int n_rows, int n_heads, int head_dim, int n_rot, bool neox,
               void *stream)
{
    ARG(rope_arg);
    *a = (rope_arg){x, cache, n_rows, n_heads, head_dim, n_rot, neox};
    push(stream, rope_fn, a, NULL);
    return 0;
}

typedef struct {
    float *y;
    const float *b;
    int n_rows, n;
    size_t count;
    int op; /* 0 bias, 1 add, 2 swiglu */
} ew_arg;

static void ew_fn(void *p)
{
    ew_arg *a = p;
    if (a->op == 0) {
        for (int t = 0; t < a->n_rows; t++) {
            for (int i = 0; i < a->n; i++) {
                a->y[(size_t)t * a->n + i] += a->b[i];
            }
        }
    } else if (a->op == 1) {
        for (size_t i = 0; i < a->count; i++) {
            a->y[i] += a->b[i];
        }
    } else {
        for (size_t i = 0; i < a->count; i++) {
            const float g = a->y[i];
            a->y[i] = g / (1.0f + expf(-g)) * a->b[i];
        }
    }
}

int st_cu_add_bias(float *y, const float *b, int n_rows, int n, void *stream)
{
    ARG(ew_arg);
    *a = (ew_arg){.y = y, .b = b, .n_rows = n_rows, .n = n, .op = 0};
    push(stream, ew_fn, a, NULL);
    return 0;
}

int st_cu_add(float *x, const float *y, size_t n, void *stream)
{
    ARG(ew_arg);
    *a = (ew_arg){.y = x, .b = y, .count = n, .op = 1};
    push(stream, ew_fn, a, NULL);
    return 0;
}

int st_cu_swiglu(float *gate, const float *up, size_t n, void *stream)
{
    ARG(ew_arg);
    *a = (ew_arg){.y = gate, .b = up, .count = n, .op = 2};
    push(stream, ew_fn, a, NULL);
    return 0;
}

typedef struct {
    void *const *kc, *const *vc;
    const int *seq, *pos;
    const float *k, *v;
    float *out;
    const float *q;
    int n_rows, kv_dim, n_head, n_head_kv, head_dim;
    bool f16;
} kv_arg;

static void kv_store_fn(void *p)
{
    kv_arg *a = p;
    const size_t esz = a->f16 ? 2 : 4;
    for (int t = 0; t < a->n_rows; t++) {
        uint8_t *kd = (uint8_t *)a->kc[a->seq[t]] + (size_t)a->pos[t] * a->kv_dim * esz;
        uint8_t *vd = (uint8_t *)a->vc[a->seq[t]] + (size_t)a->pos[t] * a->kv_dim * esz;
        const float *k = a->k + (size_t)t * a->kv_dim, *v = a->v + (size_t)t * a->kv_dim;
        if (a->f16) {
            st_fp32_to_fp16_row(k, (st_half *)kd, a->kv_dim);
            st_fp32_to_fp16_row(v, (st_half *)vd, a->kv_dim);
        } else {
            memcpy(kd, k, (size_t)a->kv_dim * 4);
            memcpy(vd, v, (size_t)a->kv_dim * 4);
        }
    }
}

int st_cu_kv_store(void *const *k_caches, void *const *v_caches, const int *seq, const int *pos, const float *k,
                   const float *v, int n_rows, int kv_dim, bool kv_f16, void *stream)
{
    ARG(kv_arg);
    *a = (kv_arg){.kc = k_caches, .vc = v_caches, .seq = seq, .pos = pos, .k = k, .v = v, .n_rows = n_rows,
                  .kv_dim = kv_dim, .f16 = kv_f16};
    push(stream, kv_store_fn, a, NULL);
    return 0;
}

static float kv_at(const void *base, size_t idx, bool f16)
{
    return f16 ? st_fp16_to_fp32(((const uint16_t *)base)[idx]) : ((const float *)base)[idx];
}

static void att_fn(void *p)
{
    kv_arg *a = p;
    const int hd = a->head_dim, kv_dim = a->n_head_kv * hd, group = a->n_head / a->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    for (int t = 0; t < a->n_rows; t++) {
        const int n_keys = a->pos[t] + 1;
        const void *K = a->kc[a->seq[t]], *V = a->vc[a->seq[t]];
        float *sc = malloc((size_t)n_keys * sizeof(float));
        for (int h = 0; h < a->n_head; h++) {
            const int g = h / group;
            const float *q = a->q + ((size_t)t * a->n_head + h) * hd;
            float *o = a->out + ((size_t)t * a->n_head + h) * hd;
            float mx = -INFINITY;
            for (int j = 0; j < n_keys; j++) {
                float s = 0;
                for (int i = 0; i < hd; i++) {
                    s += q[i] * kv_at(K, (size_t)j * kv_dim + (size_t)g * hd + i, a->f16);
                }
                sc[j] = s * scale;
                mx = sc[j] > mx ? sc[j] : mx;
            }
            double sum = 0;
            for (int j = 0; j < n_keys; j++) {
                sc[j] = expf(sc[j] - mx);
                sum += sc[j];
            }
            for (int i = 0; i < hd; i++) {
                o[i] = 0;
            }
            for (int j = 0; j < n_keys; j++) {
                const float w = (float)(sc[j] / sum);
                for (int i = 0; i < hd; i++) {
                    o[i] += w * kv_at(V, (size_t)j * kv_dim + (size_t)g * hd + i, a->f16);
                }
            }
        }
        free(sc);
    }
}

int st_cu_attention(float *out, const float *q, void *const *k_caches, void *const *v_caches, const int *seq,
                    const int *pos, int n_rows, int n_head, int n_head_kv, int head_dim, bool kv_f16, void *stream)
{
    ARG(kv_arg);
    *a = (kv_arg){.kc = k_caches, .vc = v_caches, .seq = seq, .pos = pos, .out = out, .q = q, .n_rows = n_rows,
                  .n_head = n_head, .n_head_kv = n_head_kv, .head_dim = head_dim, .f16 = kv_f16};
    push(stream, att_fn, a, NULL);
    return 0;
}

int st_cu_embed(int type, const void *table, int64_t n_embd, const int *ids, int n_rows, float *out, void *stream)
{
    mock_stream *s = stream;
    if (s != NULL) {
        run_stream(s, s->n);
    }
    const size_t rb = st_row_bytes((st_type)type, n_embd);
    for (int t = 0; t < n_rows; t++) {
        st_dequant_row((st_type)type, (const uint8_t *)table + (size_t)ids[t] * rb, out + (size_t)t * n_embd, n_embd);
    }
    return 0;
}

int st_cu_argmax(const float *logits, int n_rows, int n_vocab, int *out_idx, float *out_max, void *stream)
{
    mock_stream *s = stream;
    if (s != NULL) {
        run_stream(s, s->n);
    }
    for (int t = 0; t < n_rows; t++) {
        const float *l = logits + (size_t)t * n_vocab;
        int b = 0;
        for (int i = 1; i < n_vocab; i++) {
            b = l[i] > l[b] ? i : b;
        }
        out_idx[t] = b;
        out_max[t] = l[b];
    }
    return 0;
}
