/* mkmodel: write a random-weight GGUF model of a llama, qwen2 or qwen3 shape
 * that llama.cpp loads, for parity tests and benchmarks.
 *
 *   mkmodel --arch llama|qwen2|qwen3 --type F32|F16|BF16|Q8_0|Q4_0|Q4_K|Q5_K|Q6_K|Q4_K_M
 *           --dim D --layers L --heads H --kv-heads K --ff F [--head-dim N] [--ctx N]
 *           [--seed S] [--vocab-from FILE.gguf] [--vocab-size N] [--tied]
 *           [--rope-base X] [--eps X] [--threads N] -o OUT.gguf
 *
 * Tensor names and metadata keys are those of llama.cpp's converters. Weights
 * are deterministic for a seed (each row has its own generator, so the thread
 * count does not change the bytes). A matrix with rows of n inputs gets
 * std gain/sqrt(n): unit-scale activations through every layer, and logits
 * with a std of about 3 so next-token distributions are peaked enough for
 * top-k comparisons to mean something. Norm weights are 1 + N(0, 0.1).
 *
 * Without --vocab-from a byte-level SPM vocabulary is made up (<unk> <s> </s>,
 * 256 byte tokens, then <unused_N>), which llama.cpp accepts too.
 */
#include "gguf_write.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THREADS 64

typedef struct {
    const char *arch;   /* "llama", "qwen2", "qwen3" */
    st_type type;       /* base weight type */
    bool q4_k_m;        /* llama.cpp's Q4_K_M per-tensor mix */
    int dim, layers, heads, kv_heads, ff, head_dim, ctx;
    uint64_t seed;
    const char *vocab_from;
    int vocab_size;     /* 0: that of the vocabulary */
    bool tied;
    double rope_base;   /* 0: arch default */
    double eps;
    int threads;
    const char *out;
} options;

typedef enum { INIT_NORMAL, INIT_NORM_WEIGHT, INIT_BIAS } init_kind;

/* One tensor to generate. */
typedef struct {
    char name[64];
    uint32_t n_dims;
    int64_t ne[2];      /* ne[0] = row length */
    st_type type;
    init_kind init;
    float std;          /* INIT_NORMAL / INIT_BIAS */
    uint64_t seed;      /* per-tensor stream, from the model seed and the name */
    int threads;
} tensor_spec;

/* --------------------------------------------------------------- random -- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Irwin-Hall: the sum of four 16-bit uniforms, centred and scaled to unit
 * variance. Bounded at +-3.46 sigma, which is all random weights need. */
static float normalish(uint64_t *s)
{
    uint64_t r = splitmix64(s);
    uint32_t sum = (uint32_t)(r & 0xffff) + (uint32_t)((r >> 16) & 0xffff) + (uint32_t)((r >> 32) & 0xffff) +
                   (uint32_t)(r >> 48);
    return ((float)sum - 131070.0f) * (1.0f / 37837.23f);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    }
    return h;
}

/* ------------------------------------------------------------ generation -- */

typedef struct {
    const tensor_spec *t;
    uint8_t *dst;
    int64_t row0, row1;
    bool ok;
} fill_job;

static void fill_rows(fill_job *j)
{
    const tensor_spec *t = j->t;
    int64_t n = t->ne[0];
    size_t rb = st_row_bytes(t->type, n);
    float *row = t->type == ST_F32 ? NULL : malloc((size_t)n * sizeof(float));
    if (t->type != ST_F32 && row == NULL) {
        j->ok = false;
        return;
    }
    for (int64_t r = j->row0; r < j->row1; r++) {
        float *x = t->type == ST_F32 ? (float *)(j->dst + (size_t)r * rb) : row;
        uint64_t s = t->seed ^ ((uint64_t)r * 0xD1B54A32D192ED03ull);
        splitmix64(&s); /* decorrelate neighbouring rows */
        for (int64_t i = 0; i < n; i++) {
            float g = normalish(&s);
            x[i] = t->init == INIT_NORM_WEIGHT ? 1.0f + 0.1f * g : t->std * g;
        }
        if (t->type != ST_F32 && !st_quantize_row(t->type, x, j->dst + (size_t)r * rb, n)) {
            j->ok = false;
            break;
        }
    }
    free(row);
}

static void *fill_thread(void *arg)
{
    fill_rows(arg);
    return NULL;
}

static strata_err fill_tensor(void *user, const char *name, void *dst, uint64_t nbytes, strata_error *err)
{
    const tensor_spec *t = user;
    int64_t rows = t->n_dims == 2 ? t->ne[1] : 1;
    if (st_row_bytes(t->type, t->ne[0]) * (uint64_t)rows != nbytes) {
        return st_error(err, STRATA_ERR_INTERNAL, "size mismatch for '%s'", name);
    }
    int nt = (int)ST_MIN((int64_t)t->threads, rows);
    if ((int64_t)rows * t->ne[0] < 65536) {
        nt = 1;
    }
    fill_job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    bool started[MAX_THREADS] = {false};
    for (int i = 0; i < nt; i++) {
        jobs[i] = (fill_job){.t = t, .dst = dst, .row0 = rows * i / nt, .row1 = rows * (i + 1) / nt, .ok = true};
    }
    for (int i = 1; i < nt; i++) {
        started[i] = pthread_create(&tids[i], NULL, fill_thread, &jobs[i]) == 0;
        if (!started[i]) {
            fill_rows(&jobs[i]); /* no thread: do it here */
        }
    }
    fill_rows(&jobs[0]);
    bool ok = true;
    for (int i = 0; i < nt; i++) {
        if (i > 0 && started[i]) {
            pthread_join(tids[i], NULL);
        }
        ok = ok && jobs[i].ok;
    }
    if (!ok) {
        return st_error(err, STRATA_ERR_INTERNAL, "cannot quantize '%s' to %s", name, st_type_name(t->type));
    }
    return STRATA_OK;
}

/* ----------------------------------------------------------- tensor plan -- */

/* llama.cpp's use_more_bits: the layers Q4_K_M gives Q6_K on attn_v/ffn_down. */
static bool use_more_bits(int i_layer, int n_layers)
{
    return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

static bool is_k_quant(st_type t)
{
    return t == ST_Q4_K || t == ST_Q5_K || t == ST_Q6_K;
}

/* The type of a 2-D weight, as llama-quantize would pick it. */
static st_type weight_type(const options *o, const char *name, int layer)
{
    if (!o->q4_k_m) {
        return o->type;
    }
    bool is_output = strcmp(name, "output.weight") == 0 || (o->tied && strcmp(name, "token_embd.weight") == 0);
    if (is_output) {
        return ST_Q6_K;
    }
    if ((strstr(name, ".attn_v.") != NULL || strstr(name, ".ffn_down.") != NULL) && use_more_bits(layer, o->layers)) {
        return ST_Q6_K;
    }
    return ST_Q4_K;
}

/* A row length the type's blocks do not divide: fall back as llama-quantize
 * does, but only to types Strata reads (Q8_0 instead of Q5_0/Q5_1). */
static st_type fallback_type(st_type t, int64_t ne0, const char *name)
{
    if (ne0 % st_type_block_elems(t) == 0) {
        return t;
    }
    st_type f = (is_k_quant(t) && ne0 % QK8_0 == 0) ? ST_Q8_0 : ST_F16;
    fprintf(stderr, "mkmodel: %s: %lld columns do not fit %s blocks; using %s\n", name, (long long)ne0, st_type_name(t),
            st_type_name(f));
    return f;
}

typedef struct {
    tensor_spec *v;  /* (n) */
    int n;
    int cap;
} spec_list;

static tensor_spec *add_spec(spec_list *l, const options *o, const char *name, int layer, int64_t ne0, int64_t ne1,
                             init_kind init, float gain)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        tensor_spec *v = realloc(l->v, (size_t)cap * sizeof(*v));
        if (v == NULL) {
            return NULL;
        }
        l->v = v;
        l->cap = cap;
    }
    tensor_spec *t = &l->v[l->n++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), name, layer);
    t->n_dims = ne1 > 0 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 > 0 ? ne1 : 1;
    t->init = init;
    /* 1-D tensors (norms, biases) stay F32 in every llama.cpp file type */
    t->type = t->n_dims == 1 ? ST_F32 : fallback_type(weight_type(o, t->name, layer), ne0, t->name);
    t->std = init == INIT_NORMAL ? gain / sqrtf((float)ne0) : gain;
    t->seed = o->seed * 0x9E3779B97F4A7C15ull ^ fnv1a(t->name);
    t->threads = o->threads;
    return t;
}

/* The tensors in the order llama.cpp's converters write them. */
static bool plan_tensors(const options *o, int n_vocab, spec_list *l)
{
    int hd = o->head_dim;
    int64_t q_out = (int64_t)o->heads * hd;
    int64_t kv_out = (int64_t)o->kv_heads * hd;
    /* untied: unit embeddings (std 1); tied: they double as the output
     * matrix, so they get its std 3/sqrt(dim) */
    float embd_gain = o->tied ? 3.0f : sqrtf((float)o->dim);
    bool ok = add_spec(l, o, "token_embd.weight", 0, o->dim, n_vocab, INIT_NORMAL, embd_gain) != NULL;
    for (int i = 0; ok && i < o->layers; i++) {
        ok = add_spec(l, o, "blk.%d.attn_norm.weight", i, o->dim, 0, INIT_NORM_WEIGHT, 0) &&
             add_spec(l, o, "blk.%d.attn_q.weight", i, o->dim, q_out, INIT_NORMAL, 1.5f) &&
             add_spec(l, o, "blk.%d.attn_k.weight", i, o->dim, kv_out, INIT_NORMAL, 1.5f) &&
             add_spec(l, o, "blk.%d.attn_v.weight", i, o->dim, kv_out, INIT_NORMAL, 1.0f);
        if (ok && strcmp(o->arch, "qwen2") == 0) {
            ok = add_spec(l, o, "blk.%d.attn_q.bias", i, q_out, 0, INIT_BIAS, 0.3f) &&
                 add_spec(l, o, "blk.%d.attn_k.bias", i, kv_out, 0, INIT_BIAS, 0.3f) &&
                 add_spec(l, o, "blk.%d.attn_v.bias", i, kv_out, 0, INIT_BIAS, 0.3f);
        }
        if (ok && strcmp(o->arch, "qwen3") == 0) {
            ok = add_spec(l, o, "blk.%d.attn_q_norm.weight", i, hd, 0, INIT_NORM_WEIGHT, 0) &&
                 add_spec(l, o, "blk.%d.attn_k_norm.weight", i, hd, 0, INIT_NORM_WEIGHT, 0);
        }
        ok = ok && add_spec(l, o, "blk.%d.attn_output.weight", i, q_out, o->dim, INIT_NORMAL, 1.0f) &&
             add_spec(l, o, "blk.%d.ffn_norm.weight", i, o->dim, 0, INIT_NORM_WEIGHT, 0) &&
             add_spec(l, o, "blk.%d.ffn_gate.weight", i, o->dim, o->ff, INIT_NORMAL, 1.0f) &&
             add_spec(l, o, "blk.%d.ffn_up.weight", i, o->dim, o->ff, INIT_NORMAL, 1.0f) &&
             add_spec(l, o, "blk.%d.ffn_down.weight", i, o->ff, o->dim, INIT_NORMAL, 1.0f);
    }
    ok = ok && add_spec(l, o, "output_norm.weight", 0, o->dim, 0, INIT_NORM_WEIGHT, 0);
    if (ok && !o->tied) {
        ok = add_spec(l, o, "output.weight", 0, o->dim, n_vocab, INIT_NORMAL, 3.0f);
    }
    return ok;
}

/* ------------------------------------------------------------- metadata -- */

static uint32_t file_type(const options *o)
{
    if (o->q4_k_m) {
        return 15;
    }
    switch (o->type) {
    case ST_F32: return 0;
    case ST_F16: return 1;
    case ST_Q4_0: return 2;
    case ST_Q8_0: return 7;
    case ST_Q4_K: return 14; /* Q4_K_S: the closest "mostly Q4_K" */
    case ST_Q5_K: return 16;
    case ST_Q6_K: return 18;
    case ST_BF16: return 32;
    default: return 0;
    }
}

static strata_err add_hparams(gguf_writer *w, const options *o)
{
    char k[96];
    const char *a = o->arch;
#define KEY(suffix) (snprintf(k, sizeof(k), "%s.%s", a, suffix), k)
    char name[96];
    snprintf(name, sizeof(name), "mkmodel %s %s", a, o->q4_k_m ? "Q4_K_M" : st_type_name(o->type));
    gguf_writer_add_str(w, "general.architecture", a);
    gguf_writer_add_str(w, "general.name", name);
    gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)o->layers);
    gguf_writer_add_u32(w, KEY("context_length"), (uint32_t)o->ctx);
    gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)o->dim);
    gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)o->ff);
    gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)o->heads);
    gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)o->kv_heads);
    gguf_writer_add_f32(w, KEY("rope.freq_base"), (float)o->rope_base);
    gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), (float)o->eps);
    if (strcmp(a, "qwen3") == 0) {
        gguf_writer_add_u32(w, KEY("attention.key_length"), (uint32_t)o->head_dim);
        gguf_writer_add_u32(w, KEY("attention.value_length"), (uint32_t)o->head_dim);
    }
    if (strcmp(a, "llama") == 0) {
        gguf_writer_add_u32(w, KEY("rope.dimension_count"), (uint32_t)o->head_dim);
    }
#undef KEY
    gguf_writer_add_u32(w, "general.file_type", file_type(o));
    if (o->q4_k_m || (o->type != ST_F32 && o->type != ST_F16 && o->type != ST_BF16)) {
        gguf_writer_add_u32(w, "general.quantization_version", 2);
    }
    return gguf_writer_add_u32(w, "general.alignment", 32);
}

/* A byte-level SPM vocabulary of n tokens (n >= 259). */
static strata_err add_made_up_vocab(gguf_writer *w, int n)
{
    char **toks = calloc((size_t)n, sizeof(char *));
    float *scores = calloc((size_t)n, sizeof(float));
    int32_t *types = calloc((size_t)n, sizeof(int32_t));
    strata_err rc = STRATA_OK;
    for (int i = 0; toks && scores && types && i < n; i++) {
        toks[i] = malloc(24);
        if (toks[i] == NULL) {
            break;
        }
        if (i < 3) {
            snprintf(toks[i], 24, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
            types[i] = i == 0 ? 2 : 3; /* UNKNOWN, CONTROL */
        } else if (i < 259) {
            snprintf(toks[i], 24, "<0x%02X>", i - 3);
            types[i] = 6; /* BYTE */
        } else {
            snprintf(toks[i], 24, "<unused_%d>", i - 259);
            types[i] = 4; /* USER_DEFINED */
        }
        scores[i] = 0.0f;
    }
    bool all = toks && scores && types;
    for (int i = 0; all && i < n; i++) {
        all = toks[i] != NULL;
    }
    if (!all) {
        rc = STRATA_ERR_NOMEM;
    } else {
        gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
        gguf_writer_add_str_arr(w, "tokenizer.ggml.tokens", (const char *const *)toks, NULL, (uint64_t)n);
        gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_T_FLOAT32, scores, (uint64_t)n);
        gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_T_INT32, types, (uint64_t)n);
        gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0);
        gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
        rc = gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    }
    for (int i = 0; toks && i < n; i++) {
        free(toks[i]);
    }
    free(toks);
    free(scores);
    free(types);
    return rc;
}

/* Copy the tokenizer.* metadata of a GGUF file, padding the token list
 * (and its scores and types) with <unused_N> USER_DEFINED tokens up to
 * vocab_size. *n_vocab gets the final count. */
static strata_err add_vocab_from(gguf_writer *w, const char *path, int vocab_size, int *n_vocab, strata_error *err)
{
    gguf_file *f = NULL;
    strata_err rc = gguf_open(path, true, &f, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    const gguf_kv *toks = gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_T_STRING);
    if (toks == NULL || toks->v.arr.n == 0 || toks->v.arr.n > (1u << 24)) {
        gguf_close(f);
        return st_error(err, STRATA_ERR_FORMAT, "%s has no tokenizer.ggml.tokens", path);
    }
    uint64_t n0 = toks->v.arr.n;
    uint64_t n = vocab_size > 0 ? (uint64_t)vocab_size : n0;
    if (n < n0) {
        gguf_close(f);
        return st_error(err, STRATA_ERR_ARG, "--vocab-size %llu is smaller than the %llu tokens of %s",
                        (unsigned long long)n, (unsigned long long)n0, path);
    }
    for (uint64_t i = 0; i < f->n_kv && rc == STRATA_OK; i++) {
        const gguf_kv *kv = &f->kv[i];
        if (kv->key.len < 10 || memcmp(kv->key.ptr, "tokenizer.", 10) != 0) {
            continue;
        }
        bool is_tokens = gguf_str_eq(kv->key, "tokenizer.ggml.tokens");
        bool is_scores = gguf_str_eq(kv->key, "tokenizer.ggml.scores");
        bool is_types = gguf_str_eq(kv->key, "tokenizer.ggml.token_type");
        if (n == n0 || !(is_tokens || is_scores || is_types)) {
            rc = gguf_writer_copy_kv(w, kv);
            continue;
        }
        if (kv->type != GGUF_T_ARRAY || kv->v.arr.n != n0) {
            rc = st_error(err, STRATA_ERR_FORMAT, "%s: %.*s does not have one entry per token", path,
                          (int)kv->key.len, kv->key.ptr);
            break;
        }
        char key[64];
        snprintf(key, sizeof(key), "%.*s", (int)ST_MIN(kv->key.len, 63), kv->key.ptr);
        if (is_tokens) {
            const char **s = st_malloc_array(n, sizeof(*s));
            uint64_t *len = st_malloc_array(n, sizeof(*len));
            char *pad = st_malloc_array(n - n0, 24);
            if (s == NULL || len == NULL || pad == NULL) {
                rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
            } else {
                for (uint64_t j = 0; j < n; j++) {
                    if (j < n0) {
                        s[j] = kv->v.arr.strs[j].ptr;
                        len[j] = kv->v.arr.strs[j].len;
                    } else {
                        char *p = pad + (j - n0) * 24;
                        snprintf(p, 24, "<unused_%llu>", (unsigned long long)(j - n0));
                        s[j] = p;
                        len[j] = strlen(p);
                    }
                }
                rc = gguf_writer_add_str_arr(w, key, s, len, n);
            }
            free(s);
            free(len);
            free(pad);
        } else {
            gguf_type et = kv->v.arr.type;
            bool f32 = is_scores && et == GGUF_T_FLOAT32;
            bool i32 = is_types && et == GGUF_T_INT32;
            if (!f32 && !i32) {
                rc = st_error(err, STRATA_ERR_FORMAT, "%s: %s has unexpected element type %d", path, key, (int)et);
                break;
            }
            uint32_t *v = st_malloc_array(n, 4);
            if (v == NULL) {
                rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
                break;
            }
            memcpy(v, kv->v.arr.data, n0 * 4);
            for (uint64_t j = n0; j < n; j++) {
                if (f32) {
                    float z = 0.0f;
                    memcpy(&v[j], &z, 4);
                } else {
                    v[j] = 4; /* USER_DEFINED */
                }
            }
            rc = gguf_writer_add_arr(w, key, et, v, n);
            free(v);
        }
    }
    gguf_close(f);
    if (rc == STRATA_OK) {
        *n_vocab = (int)n;
    } else if (err != NULL && err->code == STRATA_OK) {
        st_error(err, rc, "cannot copy the vocabulary of %s", path);
    }
    return rc;
}

/* ------------------------------------------------------------------ cli -- */

static void usage(void)
{
    fprintf(stderr,
            "usage: mkmodel --arch llama|qwen2|qwen3 --type F32|F16|BF16|Q8_0|Q4_0|Q4_K|Q5_K|Q6_K|Q4_K_M\n"
            "               --dim D --layers L --heads H --kv-heads K --ff F [--head-dim N] [--ctx N]\n"
            "               [--seed S] [--vocab-from FILE.gguf] [--vocab-size N] [--tied]\n"
            "               [--rope-base X] [--eps X] [--threads N] -o OUT.gguf\n");
}

static bool parse_type(const char *s, options *o)
{
    static const struct {
        const char *name;
        st_type t;
    } types[] = {{"F32", ST_F32},   {"F16", ST_F16},   {"BF16", ST_BF16}, {"Q8_0", ST_Q8_0}, {"Q4_0", ST_Q4_0},
                 {"Q4_K", ST_Q4_K}, {"Q5_K", ST_Q5_K}, {"Q6_K", ST_Q6_K}, {"Q4_K_M", ST_Q4_K}};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(s, types[i].name) == 0) {
            o->type = types[i].t;
            o->q4_k_m = strcmp(s, "Q4_K_M") == 0;
            return true;
        }
    }
    return false;
}

static bool parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        return false;
    }
    *out = (int)v;
    return true;
}

static bool parse_args(int argc, char **argv, options *o)
{
    *o = (options){.arch = NULL, .type = ST_F32, .ctx = 2048, .seed = 1, .threads = 2, .eps = 1e-6};
    bool have_type = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = true;
        bool takes_value = true;
        if (strcmp(a, "--tied") == 0) {
            o->tied = true;
            takes_value = false;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            return false;
        } else if (v == NULL) {
            fprintf(stderr, "mkmodel: %s needs a value\n", a);
            return false;
        } else if (strcmp(a, "--arch") == 0) {
            o->arch = v;
            ok = strcmp(v, "llama") == 0 || strcmp(v, "qwen2") == 0 || strcmp(v, "qwen3") == 0;
        } else if (strcmp(a, "--type") == 0) {
            ok = have_type = parse_type(v, o);
        } else if (strcmp(a, "--dim") == 0) {
            ok = parse_int(v, 1, 1 << 16, &o->dim);
        } else if (strcmp(a, "--layers") == 0) {
            ok = parse_int(v, 1, 512, &o->layers);
        } else if (strcmp(a, "--heads") == 0) {
            ok = parse_int(v, 1, 1024, &o->heads);
        } else if (strcmp(a, "--kv-heads") == 0) {
            ok = parse_int(v, 1, 1024, &o->kv_heads);
        } else if (strcmp(a, "--ff") == 0) {
            ok = parse_int(v, 1, 1 << 18, &o->ff);
        } else if (strcmp(a, "--head-dim") == 0) {
            ok = parse_int(v, 2, 1024, &o->head_dim);
        } else if (strcmp(a, "--ctx") == 0) {
            ok = parse_int(v, 1, 1 << 24, &o->ctx);
        } else if (strcmp(a, "--vocab-size") == 0) {
            ok = parse_int(v, 1, 1 << 24, &o->vocab_size);
        } else if (strcmp(a, "--threads") == 0) {
            ok = parse_int(v, 1, MAX_THREADS, &o->threads);
        } else if (strcmp(a, "--seed") == 0) {
            char *end;
            errno = 0;
            o->seed = strtoull(v, &end, 0);
            ok = errno == 0 && end != v && *end == '\0';
        } else if (strcmp(a, "--rope-base") == 0 || strcmp(a, "--eps") == 0) {
            char *end;
            double d = strtod(v, &end);
            ok = end != v && *end == '\0' && d > 0 && isfinite(d);
            if (strcmp(a, "--eps") == 0) {
                o->eps = d;
            } else {
                o->rope_base = d;
            }
        } else if (strcmp(a, "--vocab-from") == 0) {
            o->vocab_from = v;
        } else if (strcmp(a, "-o") == 0 || strcmp(a, "--out") == 0) {
            o->out = v;
        } else {
            fprintf(stderr, "mkmodel: unknown option %s\n", a);
            return false;
        }
        if (!ok) {
            fprintf(stderr, "mkmodel: bad value for %s: %s\n", a, v);
            return false;
        }
        if (takes_value) {
            i++;
        }
    }
    if (o->arch == NULL || !have_type || o->dim == 0 || o->layers == 0 || o->heads == 0 || o->ff == 0 ||
        o->out == NULL) {
        fprintf(stderr, "mkmodel: --arch, --type, --dim, --layers, --heads, --ff and -o are required\n");
        return false;
    }
    if (o->kv_heads == 0) {
        o->kv_heads = o->heads;
    }
    if (o->heads % o->kv_heads != 0) {
        fprintf(stderr, "mkmodel: --heads %d is not a multiple of --kv-heads %d\n", o->heads, o->kv_heads);
        return false;
    }
    if (o->head_dim == 0) {
        if (o->dim % o->heads != 0) {
            fprintf(stderr, "mkmodel: --dim %d is not a multiple of --heads %d\n", o->dim, o->heads);
            return false;
        }
        o->head_dim = o->dim / o->heads;
    } else if (strcmp(o->arch, "qwen3") != 0 && o->head_dim * o->heads != o->dim) {
        fprintf(stderr, "mkmodel: --head-dim other than dim/heads needs --arch qwen3\n");
        return false;
    }
    if (o->head_dim % 2 != 0) {
        fprintf(stderr, "mkmodel: head dimension %d is odd (RoPE rotates pairs)\n", o->head_dim);
        return false;
    }
    if (o->rope_base == 0) {
        o->rope_base = strcmp(o->arch, "llama") == 0 ? 10000.0 : 1000000.0;
    }
    return true;
}

int main(int argc, char **argv)
{
    options o;
    if (!parse_args(argc, argv, &o)) {
        usage();
        return 2;
    }
    double t0 = st_now_ms();
    gguf_writer *w = gguf_writer_new();
    if (w == NULL) {
        fprintf(stderr, "mkmodel: out of memory\n");
        return 1;
    }
    strata_error err = {0};
    add_hparams(w, &o);
    int n_vocab = 0;
    strata_err rc;
    if (o.vocab_from != NULL) {
        rc = add_vocab_from(w, o.vocab_from, o.vocab_size, &n_vocab, &err);
    } else {
        n_vocab = o.vocab_size > 0 ? o.vocab_size : 512;
        rc = n_vocab < 259 ? st_error(&err, STRATA_ERR_ARG, "a made-up byte vocabulary needs --vocab-size >= 259")
                           : add_made_up_vocab(w, n_vocab);
    }
    spec_list specs = {0};
    if (rc == STRATA_OK && !plan_tensors(&o, n_vocab, &specs)) {
        rc = st_error(&err, STRATA_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; rc == STRATA_OK && i < specs.n; i++) {
        tensor_spec *t = &specs.v[i];
        rc = gguf_writer_add_tensor_fill(w, t->name, t->type, t->n_dims, t->ne, fill_tensor, t);
    }
    if (rc == STRATA_OK || err.code == STRATA_OK) {
        /* the writer reports its own sticky error (if any add failed) here */
        rc = gguf_writer_write(w, o.out, &err);
    }
    gguf_writer_free(w);
    free(specs.v);
    if (rc != STRATA_OK) {
        fprintf(stderr, "mkmodel: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "mkmodel: wrote %s (%s, %s, %d layers, vocab %d) in %.1f s\n", o.out, o.arch,
            o.q4_k_m ? "Q4_K_M" : st_type_name(o.type), o.layers, n_vocab, (st_now_ms() - t0) / 1000.0);
    return 0;
}
