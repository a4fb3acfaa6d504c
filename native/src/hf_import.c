/* Hugging Face checkpoint -> GGUF: see hf_import.h. The tokenizer half is in
 * the second part of this file. */
#include "hf_import.h"

#include "safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define MAX_SHARDS 1024
#define MAX_SOURCES (MAX_SHARDS + 4)

typedef enum { ARCH_LLAMA, ARCH_QWEN2, ARCH_QWEN3 } hf_arch;

/* One output tensor and where its bytes come from. */
typedef struct {
    char name[64];                /* GGUF name */
    const st_safetensor *src;     /* NULL for generated (rope_freqs) */
    const float *gen;             /* generated values (rope_freqs) */
    int permute_heads;            /* > 0: llama Q/K row permutation with this many heads */
    st_type type;                 /* output type */
    uint32_t n_dims;
    int64_t ne[2];                /* ne[0] = row length */
    int order;                    /* sort key: file layout grouped by layer */
} plan_tensor;

typedef struct {
    const char *dir;
    hf_arch arch;
    json_t *config;
    st_safetensors *shards[MAX_SHARDS];
    int n_shards;
    char *sources[MAX_SOURCES];   /* file names relative to dir */
    int n_sources;
    plan_tensor *plan;            /* (n_plan) */
    int n_plan;
    float *rope_freqs;            /* (n_rot / 2) llama3 factors or NULL */
    int64_t n_head, n_head_kv;
    strata_error *err;
} importer;

void st_hf_import_opts_default(st_hf_import_opts *o)
{
    o->out_type = -1;
    o->free_bytes = 0;
}

/* ------------------------------------------------------------- helpers -- */

static json_t *load_json(const char *dir, const char *file, bool required, strata_error *err, strata_err *rc)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    *rc = STRATA_OK;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (required) {
            *rc = st_error(err, STRATA_ERR_IO, "%s: %s", path, strerror(errno));
        }
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_ALLOW_NUL, &jerr);
    if (j == NULL) {
        *rc = st_error(err, STRATA_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path, jerr.line, jerr.text);
    }
    return j;
}

static bool jint(const json_t *o, const char *key, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    return false;
}

static bool jnum(const json_t *o, const char *key, double *out)
{
    json_t *v = json_object_get(o, key);
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return true;
    }
    return false;
}

static const char *jstr(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static strata_err add_source(importer *im, const char *file)
{
    for (int i = 0; i < im->n_sources; i++) {
        if (strcmp(im->sources[i], file) == 0) {
            return STRATA_OK;
        }
    }
    if (im->n_sources == MAX_SOURCES || (im->sources[im->n_sources] = strdup(file)) == NULL) {
        return st_error(im->err, STRATA_ERR_LIMIT, "too many source files");
    }
    im->n_sources++;
    return STRATA_OK;
}

/* ------------------------------------------------------------- shards -- */

static strata_err open_shard(importer *im, const char *file)
{
    if (strchr(file, '/') != NULL || strcmp(file, "..") == 0) {
        return st_error(im->err, STRATA_ERR_FORMAT, "shard name '%s' must be a plain file name", file);
    }
    if (im->n_shards == MAX_SHARDS) {
        return st_error(im->err, STRATA_ERR_LIMIT, "more than %d safetensors shards", MAX_SHARDS);
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", im->dir, file);
    strata_err rc = st_safetensors_open(path, &im->shards[im->n_shards], im->err);
    if (rc != STRATA_OK) {
        return rc;
    }
    im->n_shards++;
    return add_source(im, file);
}

static strata_err open_shards(importer *im)
{
    strata_err rc;
    json_t *index = load_json(im->dir, "model.safetensors.index.json", false, im->err, &rc);
    if (rc != STRATA_OK) {
        return rc;
    }
    if (index == NULL) {
        return open_shard(im, "model.safetensors");
    }
    rc = add_source(im, "model.safetensors.index.json");
    json_t *map = json_object_get(index, "weight_map");
    if (rc == STRATA_OK && !json_is_object(map)) {
        rc = st_error(im->err, STRATA_ERR_FORMAT, "%s/model.safetensors.index.json has no weight_map object", im->dir);
    }
    const char *key;
    json_t *v;
    if (rc == STRATA_OK) {
        json_object_foreach(map, key, v)
        {
            if (!json_is_string(v)) {
                rc = st_error(im->err, STRATA_ERR_FORMAT, "weight_map entry '%s' is not a file name", key);
                break;
            }
            bool seen = false;
            for (int i = 0; i < im->n_sources; i++) {
                seen = seen || strcmp(im->sources[i], json_string_value(v)) == 0;
            }
            if (!seen && (rc = open_shard(im, json_string_value(v))) != STRATA_OK) {
                break;
            }
        }
    }
    /* every mapped tensor must be in the shard the index names */
    if (rc == STRATA_OK) {
        json_object_foreach(map, key, v)
        {
            bool found = false;
            for (int i = 0; i < im->n_shards && !found; i++) {
                found = st_safetensors_find(im->shards[i], key) != NULL;
            }
            if (!found) {
                rc = st_error(im->err, STRATA_ERR_FORMAT, "tensor '%s' of the index is in no shard", key);
                break;
            }
        }
    }
    json_decref(index);
    return rc;
}

/* ----------------------------------------------------------- metadata -- */

static strata_err read_arch(importer *im)
{
    json_t *archs = json_object_get(im->config, "architectures");
    const char *a = json_string_value(json_array_get(archs, 0));
    const char *mt = jstr(im->config, "model_type");
    if ((a && (strcmp(a, "LlamaForCausalLM") == 0 || strcmp(a, "MistralForCausalLM") == 0)) ||
        (!a && mt && (strcmp(mt, "llama") == 0 || strcmp(mt, "mistral") == 0))) {
        im->arch = ARCH_LLAMA;
    } else if ((a && strcmp(a, "Qwen2ForCausalLM") == 0) || (!a && mt && strcmp(mt, "qwen2") == 0)) {
        im->arch = ARCH_QWEN2;
    } else if ((a && strcmp(a, "Qwen3ForCausalLM") == 0) || (!a && mt && strcmp(mt, "qwen3") == 0)) {
        im->arch = ARCH_QWEN3;
    } else {
        return st_error(im->err, STRATA_ERR_UNSUPPORTED,
                        "%s/config.json: architecture '%s' is not supported (LlamaForCausalLM, MistralForCausalLM, "
                        "Qwen2ForCausalLM, Qwen3ForCausalLM)",
                        im->dir, a ? a : (mt ? mt : "?"));
    }
    return STRATA_OK;
}

static const char *arch_name(hf_arch a)
{
    return a == ARCH_LLAMA ? "llama" : a == ARCH_QWEN2 ? "qwen2" : "qwen3";
}

/* llama.cpp's generate_extra_tensors for rope_type llama3 (float32 math as torch). */
static float *llama3_rope_freqs(const json_t *rs, double base, int64_t dim)
{
    float *f = st_malloc_array((size_t)(dim / 2), sizeof(float));
    if (f == NULL) {
        return NULL;
    }
    double factor = 8.0, lo = 1.0, hi = 4.0, old_ctx = 8192.0;
    jnum(rs, "factor", &factor);
    jnum(rs, "low_freq_factor", &lo);
    jnum(rs, "high_freq_factor", &hi);
    jnum(rs, "original_max_position_embeddings", &old_ctx);
    double lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
    for (int64_t i = 0; i < dim / 2; i++) {
        float freq = 1.0f / powf((float)base, (float)(2 * i) / (float)dim);
        float wavelen = (float)(2.0 * M_PI) / freq;
        if (wavelen < hi_wavelen) {
            f[i] = 1.0f;
        } else if (wavelen > lo_wavelen) {
            f[i] = (float)factor;
        } else {
            double smooth = (old_ctx / wavelen - lo) / (hi - lo);
            f[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
        }
    }
    return f;
}

static strata_err add_hparams(importer *im, gguf_writer *w, int64_t *vocab_size)
{
    const json_t *c = im->config;
    const char *a = arch_name(im->arch);
    char k[128];
#define KEY(suffix) (snprintf(k, sizeof(k), "%s.%s", a, suffix), k)
    int64_t n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim = 0, n_ctx, vocab;
    if (!jint(c, "num_hidden_layers", &n_layer) || !jint(c, "hidden_size", &n_embd) ||
        !jint(c, "intermediate_size", &n_ff) || !jint(c, "num_attention_heads", &n_head) ||
        !jint(c, "vocab_size", &vocab)) {
        return st_error(im->err, STRATA_ERR_FORMAT,
                        "%s/config.json needs num_hidden_layers, hidden_size, intermediate_size, "
                        "num_attention_heads and vocab_size",
                        im->dir);
    }
    if (n_layer <= 0 || n_layer > 1024 || n_embd <= 0 || n_head <= 0 || n_ff <= 0 || vocab <= 0 ||
        vocab > (1 << 24)) {
        return st_error(im->err, STRATA_ERR_FORMAT, "%s/config.json has out-of-range sizes", im->dir);
    }
    if (!jint(c, "num_key_value_heads", &n_head_kv)) {
        n_head_kv = n_head;
    }
    if (n_head_kv <= 0 || n_head % n_head_kv != 0) {
        return st_error(im->err, STRATA_ERR_FORMAT, "num_attention_heads %lld is not a multiple of "
                        "num_key_value_heads %lld", (long long)n_head, (long long)n_head_kv);
    }
    bool has_head_dim = jint(c, "head_dim", &head_dim) && head_dim > 0;
    if (!has_head_dim) {
        head_dim = n_embd / n_head;
    }
    im->n_head = n_head;
    im->n_head_kv = n_head_kv;
    *vocab_size = vocab;
    gguf_writer_add_str(w, "general.architecture", a);
    const char *name = jstr(c, "_name_or_path");
    if (name == NULL || name[0] == '\0') {
        name = strrchr(im->dir, '/') ? strrchr(im->dir, '/') + 1 : im->dir;
    }
    gguf_writer_add_str(w, "general.name", name);
    gguf_writer_add_u32(w, KEY("block_count"), (uint32_t)n_layer);
    if (jint(c, "max_position_embeddings", &n_ctx) && n_ctx > 0) {
        gguf_writer_add_u32(w, KEY("context_length"), (uint32_t)n_ctx);
    }
    gguf_writer_add_u32(w, KEY("embedding_length"), (uint32_t)n_embd);
    gguf_writer_add_u32(w, KEY("feed_forward_length"), (uint32_t)n_ff);
    gguf_writer_add_u32(w, KEY("attention.head_count"), (uint32_t)n_head);
    gguf_writer_add_u32(w, KEY("attention.head_count_kv"), (uint32_t)n_head_kv);
    if (has_head_dim) {
        gguf_writer_add_u32(w, KEY("attention.key_length"), (uint32_t)head_dim);
        gguf_writer_add_u32(w, KEY("attention.value_length"), (uint32_t)head_dim);
    }
    if (im->arch == ARCH_LLAMA) {
        gguf_writer_add_u32(w, KEY("vocab_size"), (uint32_t)vocab);
        gguf_writer_add_u32(w, KEY("rope.dimension_count"), (uint32_t)head_dim);
    }
    double theta = 10000.0, eps;
    json_t *rs = json_object_get(c, "rope_scaling");
    if (!json_is_object(rs)) {
        rs = json_object_get(c, "rope_parameters");
    }
    if (jnum(c, "rope_theta", &theta) || (json_is_object(rs) && jnum(rs, "rope_theta", &theta))) {
        gguf_writer_add_f32(w, KEY("rope.freq_base"), (float)theta);
    }
    if (jnum(c, "rms_norm_eps", &eps)) {
        gguf_writer_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), (float)eps);
    }
    if (json_is_object(rs)) {
        const char *type = jstr(rs, "rope_type") ? jstr(rs, "rope_type") : jstr(rs, "type");
        double factor = 0.0, v;
        bool has_factor = jnum(rs, "factor", &factor);
        int64_t orig;
        if (type == NULL || strcmp(type, "default") == 0) {
            /* no scaling */
        } else if (strcmp(type, "linear") == 0 && has_factor) {
            gguf_writer_add_str(w, KEY("rope.scaling.type"), "linear");
            gguf_writer_add_f32(w, KEY("rope.scaling.factor"), (float)factor);
        } else if (strcmp(type, "yarn") == 0 && has_factor) {
            gguf_writer_add_str(w, KEY("rope.scaling.type"), "yarn");
            gguf_writer_add_f32(w, KEY("rope.scaling.factor"), (float)factor);
            if (!jint(rs, "original_max_position_embeddings", &orig) &&
                !jint(c, "original_max_position_embeddings", &orig)) {
                return st_error(im->err, STRATA_ERR_FORMAT,
                                "yarn rope_scaling needs original_max_position_embeddings");
            }
            gguf_writer_add_u32(w, KEY("rope.scaling.original_context_length"), (uint32_t)orig);
            if (jnum(rs, "extrapolation_factor", &v)) {
                gguf_writer_add_f32(w, KEY("rope.scaling.yarn_ext_factor"), (float)v);
            }
            if (jnum(rs, "attention_factor", &v) || jnum(rs, "attn_factor", &v)) {
                gguf_writer_add_f32(w, KEY("rope.scaling.attn_factor"), (float)v);
            }
            if (jnum(rs, "beta_fast", &v)) {
                gguf_writer_add_f32(w, KEY("rope.scaling.yarn_beta_fast"), (float)v);
            }
            if (jnum(rs, "beta_slow", &v)) {
                gguf_writer_add_f32(w, KEY("rope.scaling.yarn_beta_slow"), (float)v);
            }
        } else if (strcmp(type, "llama3") == 0) {
            if ((im->rope_freqs = llama3_rope_freqs(rs, theta, head_dim)) == NULL) {
                return st_error(im->err, STRATA_ERR_NOMEM, "out of memory");
            }
        } else {
            return st_error(im->err, STRATA_ERR_UNSUPPORTED, "rope_scaling type '%s' is not supported", type);
        }
    }
#undef KEY
    return STRATA_OK;
}

/* -------------------------------------------------------- tensor plan -- */

static const struct {
    const char *hf;   /* after "model.layers.N." */
    const char *gguf; /* after "blk.N." */
    int order;
} k_layer_names[] = {
    {"input_layernorm.weight", "attn_norm.weight", 0},
    {"self_attn.q_proj.weight", "attn_q.weight", 1},
    {"self_attn.k_proj.weight", "attn_k.weight", 2},
    {"self_attn.v_proj.weight", "attn_v.weight", 3},
    {"self_attn.q_proj.bias", "attn_q.bias", 4},
    {"self_attn.k_proj.bias", "attn_k.bias", 5},
    {"self_attn.v_proj.bias", "attn_v.bias", 6},
    {"self_attn.q_norm.weight", "attn_q_norm.weight", 7},
    {"self_attn.k_norm.weight", "attn_k_norm.weight", 8},
    {"self_attn.o_proj.weight", "attn_output.weight", 9},
    {"post_attention_layernorm.weight", "ffn_norm.weight", 10},
    {"mlp.gate_proj.weight", "ffn_gate.weight", 11},
    {"mlp.up_proj.weight", "ffn_up.weight", 12},
    {"mlp.down_proj.weight", "ffn_down.weight", 13},
};

static st_type pick_type(int out_type, const st_safetensor *t, int64_t ne0)
{
    if (t->n_dims < 2) {
        return ST_F32;
    }
    st_type want = out_type < 0 ? (st_type)t->type : (st_type)out_type;
    if (ne0 % st_type_block_elems(want) == 0) {
        return want;
    }
    /* rows the blocks do not divide: as llama-quantize, the next type that fits */
    if (want == ST_Q4_K && ne0 % QK8_0 == 0) {
        return ST_Q8_0;
    }
    return ST_F16;
}

static int cmp_plan(const void *a, const void *b)
{
    const plan_tensor *x = a, *y = b;
    return (x->order > y->order) - (x->order < y->order);
}

static strata_err plan_tensors(importer *im, int out_type)
{
    size_t total = 1;
    for (int s = 0; s < im->n_shards; s++) {
        total += im->shards[s]->n_tensors;
    }
    im->plan = st_calloc(total, sizeof(plan_tensor));
    if (im->plan == NULL) {
        return st_error(im->err, STRATA_ERR_NOMEM, "out of memory");
    }
    int64_t n_layers = 0;
    jint(im->config, "num_hidden_layers", &n_layers);
    for (int s = 0; s < im->n_shards; s++) {
        for (size_t i = 0; i < im->shards[s]->n_tensors; i++) {
            const st_safetensor *t = &im->shards[s]->tensors[i];
            plan_tensor *p = &im->plan[im->n_plan];
            int layer = -1, consumed = 0;
            const char *n = t->name;
            if (strncmp(n, "model.", 6) == 0 && sscanf(n, "model.layers.%d.%n", &layer, &consumed) == 1 &&
                consumed > 0) {
                const char *rest = n + consumed;
                size_t k = 0, nk = sizeof(k_layer_names) / sizeof(k_layer_names[0]);
                while (k < nk && strcmp(k_layer_names[k].hf, rest) != 0) {
                    k++;
                }
                if (strcmp(rest, "self_attn.rotary_emb.inv_freq") == 0) {
                    continue;
                }
                if (k == nk || layer < 0 || layer >= n_layers) {
                    return st_error(im->err, STRATA_ERR_UNSUPPORTED, "tensor '%s' is not one Strata knows", n);
                }
                snprintf(p->name, sizeof(p->name), "blk.%d.%s", layer, k_layer_names[k].gguf);
                p->order = 10 + layer * 100 + k_layer_names[k].order;
                if (im->arch == ARCH_LLAMA && strstr(rest, "q_proj") != NULL) {
                    p->permute_heads = (int)im->n_head;
                } else if (im->arch == ARCH_LLAMA && strstr(rest, "k_proj") != NULL) {
                    p->permute_heads = (int)im->n_head_kv;
                }
            } else if (strcmp(n, "model.embed_tokens.weight") == 0) {
                snprintf(p->name, sizeof(p->name), "token_embd.weight");
                p->order = 0;
            } else if (strcmp(n, "model.norm.weight") == 0) {
                snprintf(p->name, sizeof(p->name), "output_norm.weight");
                p->order = 10 + (int)n_layers * 100;
            } else if (strcmp(n, "lm_head.weight") == 0) {
                snprintf(p->name, sizeof(p->name), "output.weight");
                p->order = 11 + (int)n_layers * 100;
            } else {
                return st_error(im->err, STRATA_ERR_UNSUPPORTED, "tensor '%s' is not one Strata knows", n);
            }
            if (t->type < 0) {
                return st_error(im->err, STRATA_ERR_UNSUPPORTED, "tensor '%s' has dtype %s (need BF16, F16 or F32)",
                                n, t->dtype);
            }
            if (t->n_dims < 1 || t->n_dims > 2 || t->n_elems == 0) {
                return st_error(im->err, STRATA_ERR_FORMAT, "tensor '%s' has %d dimensions", n, t->n_dims);
            }
            for (int j = 0; j < im->n_plan; j++) {
                if (strcmp(im->plan[j].name, p->name) == 0) {
                    return st_error(im->err, STRATA_ERR_FORMAT, "tensor '%s' appears twice", n);
                }
            }
            p->src = t;
            p->n_dims = (uint32_t)t->n_dims;
            p->ne[0] = t->n_dims == 2 ? t->shape[1] : t->shape[0];
            p->ne[1] = t->n_dims == 2 ? t->shape[0] : 1;
            int64_t rows = p->n_dims == 2 ? p->ne[1] : p->ne[0]; /* a bias permutes as a column */
            if (p->permute_heads > 0 && rows % (2 * p->permute_heads) != 0) {
                return st_error(im->err, STRATA_ERR_FORMAT, "tensor '%s': %lld rows do not split into %d heads", n,
                                (long long)rows, p->permute_heads);
            }
            p->type = pick_type(out_type, t, p->ne[0]);
            im->n_plan++;
        }
    }
    if (im->rope_freqs != NULL) {
        plan_tensor *p = &im->plan[im->n_plan++];
        int64_t head_dim = 0;
        if (!jint(im->config, "head_dim", &head_dim) || head_dim <= 0) {
            int64_t n_embd = 0;
            jint(im->config, "hidden_size", &n_embd);
            head_dim = n_embd / im->n_head;
        }
        snprintf(p->name, sizeof(p->name), "rope_freqs.weight");
        p->gen = im->rope_freqs;
        p->type = ST_F32;
        p->n_dims = 1;
        p->ne[0] = head_dim / 2;
        p->ne[1] = 1;
        p->order = 1;
    }
    qsort(im->plan, (size_t)im->n_plan, sizeof(plan_tensor), cmp_plan);
    return STRATA_OK;
}

/* general.file_type: llama.cpp's id for the type holding most weight bytes. */
static void add_file_type(const importer *im, gguf_writer *w)
{
    static const struct {
        st_type type;
        uint32_t ftype;
    } ftypes[] = {{ST_F32, 0}, {ST_F16, 1}, {ST_Q8_0, 7}, {ST_Q4_K, 14}, {ST_BF16, 32}};
    uint64_t bytes[sizeof(ftypes) / sizeof(ftypes[0])] = {0};
    size_t best = 0;
    for (int i = 0; i < im->n_plan; i++) {
        const plan_tensor *p = &im->plan[i];
        for (size_t k = 0; k < sizeof(ftypes) / sizeof(ftypes[0]); k++) {
            if (ftypes[k].type == p->type && p->n_dims == 2) {
                bytes[k] += st_row_bytes(p->type, p->ne[0]) * (uint64_t)p->ne[1];
                best = bytes[k] > bytes[best] ? k : best;
            }
        }
    }
    gguf_writer_add_u32(w, "general.file_type", ftypes[best].ftype);
    if (ftypes[best].type == ST_Q8_0 || ftypes[best].type == ST_Q4_K) {
        gguf_writer_add_u32(w, "general.quantization_version", 2);
    }
}

/* Reads source rows, undoes HF's rotary layout for llama Q/K (llama.cpp's
 * LlamaModel.permute: row h*hd + 2j + half comes from h*hd + half*hd/2 + j),
 * converts to the output type. */
static strata_err fill_tensor(void *user, const char *name, void *dst, uint64_t nbytes, strata_error *err)
{
    const plan_tensor *p = user;
    if (p->gen != NULL) {
        memcpy(dst, p->gen, (size_t)nbytes);
        return STRATA_OK;
    }
    const st_safetensor *t = p->src;
    int64_t n = p->ne[0], rows = p->ne[1];
    size_t rb = st_row_bytes(p->type, n);
    bool is_bias_1d = p->n_dims == 1 && p->permute_heads > 0;
    float *row = st_malloc_array((size_t)(is_bias_1d ? n : n), sizeof(float));
    if (row == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    if (is_bias_1d) {
        /* a 1-D vector permuted as a column of rows */
        int64_t hd = n / p->permute_heads;
        float *src = st_malloc_array((size_t)n, sizeof(float));
        if (src == NULL) {
            free(row);
            return st_error(err, STRATA_ERR_NOMEM, "out of memory");
        }
        st_safetensor_to_f32(t, 0, (uint64_t)n, src);
        for (int64_t r = 0; r < n; r++) {
            int64_t h = r / hd, j = (r % hd) / 2, half = r % 2;
            row[r] = src[h * hd + half * (hd / 2) + j];
        }
        free(src);
        memcpy(dst, row, (size_t)nbytes);
        free(row);
        return STRATA_OK;
    }
    for (int64_t r = 0; r < rows; r++) {
        int64_t sr = r;
        if (p->permute_heads > 0) {
            int64_t hd = rows / p->permute_heads;
            int64_t h = r / hd, j = (r % hd) / 2, half = r % 2;
            sr = h * hd + half * (hd / 2) + j;
        }
        uint8_t *out = (uint8_t *)dst + (size_t)r * rb;
        if ((int)p->type == t->type) {
            memcpy(out, t->data + (size_t)sr * (size_t)n * t->elem_size, rb);
            continue;
        }
        st_safetensor_to_f32(t, (uint64_t)sr * (uint64_t)n, (uint64_t)n, row);
        if (!st_quantize_row(p->type, row, out, n)) {
            free(row);
            return st_error(err, STRATA_ERR_INTERNAL, "cannot convert '%s' to %s", name, st_type_name(p->type));
        }
    }
    free(row);
    return STRATA_OK;
}

/* ------------------------------------------------------------ sources -- */

/* strata.source.*: names, sizes and mtimes (ns) of the files the GGUF came from. */
static strata_err add_source_record(importer *im, gguf_writer *w)
{
    uint64_t sizes[MAX_SOURCES];
    int64_t mtimes[MAX_SOURCES];
    for (int i = 0; i < im->n_sources; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", im->dir, im->sources[i]);
        if (stat(path, &st) != 0) {
            return st_error(im->err, STRATA_ERR_IO, "%s: %s", path, strerror(errno));
        }
        sizes[i] = (uint64_t)st.st_size;
        mtimes[i] = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    }
    gguf_writer_add_str_arr(w, "strata.source.files", (const char *const *)im->sources, NULL,
                            (uint64_t)im->n_sources);
    gguf_writer_add_arr(w, "strata.source.sizes", GGUF_T_UINT64, sizes, (uint64_t)im->n_sources);
    return gguf_writer_add_arr(w, "strata.source.mtimes", GGUF_T_INT64, mtimes, (uint64_t)im->n_sources);
}

bool st_hf_import_up_to_date(const char *dir, const char *gguf_path)
{
    gguf_file *f = NULL;
    if (gguf_open(gguf_path, true, &f, NULL) != STRATA_OK) {
        return false;
    }
    const gguf_kv *files = gguf_get_arr(f, "strata.source.files", GGUF_T_STRING);
    const gguf_kv *sizes = gguf_get_arr(f, "strata.source.sizes", GGUF_T_UINT64);
    const gguf_kv *mtimes = gguf_get_arr(f, "strata.source.mtimes", GGUF_T_INT64);
    bool ok = files && sizes && mtimes && files->v.arr.n > 0 && sizes->v.arr.n == files->v.arr.n &&
              mtimes->v.arr.n == files->v.arr.n;
    for (uint64_t i = 0; ok && i < files->v.arr.n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%.*s", dir, (int)ST_MIN(files->v.arr.strs[i].len, 1024),
                 files->v.arr.strs[i].ptr);
        uint64_t size;
        int64_t mtime;
        memcpy(&size, sizes->v.arr.data + i * 8, 8);
        memcpy(&mtime, mtimes->v.arr.data + i * 8, 8);
        ok = stat(path, &st) == 0 && (uint64_t)st.st_size == size &&
             (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == mtime;
    }
    /* a source file added since (tokenizer_config.json, an index) also makes it stale */
    static const char *const maybe[] = {"tokenizer_config.json", "model.safetensors.index.json"};
    for (size_t m = 0; ok && m < sizeof(maybe) / sizeof(maybe[0]); m++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, maybe[m]);
        bool listed = false;
        for (uint64_t i = 0; i < files->v.arr.n; i++) {
            listed = listed || gguf_str_eq(files->v.arr.strs[i], maybe[m]);
        }
        ok = listed || stat(path, &st) != 0;
    }
    gguf_close(f);
    return ok;
}

static strata_err check_free_space(const char *out_gguf, uint64_t need, uint64_t override, strata_error *err)
{
    uint64_t avail = override;
    if (avail == 0) {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", out_gguf);
        char *slash = strrchr(dir, '/');
        if (slash == NULL) {
            snprintf(dir, sizeof(dir), ".");
        } else if (slash == dir) {
            dir[1] = '\0';
        } else {
            *slash = '\0';
        }
        struct statvfs vfs;
        if (statvfs(dir, &vfs) != 0) {
            return st_error(err, STRATA_ERR_IO, "cannot check free space in %s: %s", dir, strerror(errno));
        }
        avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    }
    if (avail < need) {
        return st_error(err, STRATA_ERR_IO,
                        "not enough free disk space for %s: need %.1f MiB, %.1f MiB available", out_gguf,
                        (double)need / 1048576.0, (double)avail / 1048576.0);
    }
    return STRATA_OK;
}

/* ------------------------------------------------------------- import -- */

strata_err st_hf_import(const char *dir, const char *out_gguf, const st_hf_import_opts *opts, strata_error *err)
{
    st_hf_import_opts defaults;
    if (opts == NULL) {
        st_hf_import_opts_default(&defaults);
        opts = &defaults;
    }
    if (dir == NULL || out_gguf == NULL) {
        return st_error(err, STRATA_ERR_ARG, "folder and output path must not be NULL");
    }
    int ot = opts->out_type;
    if (ot != -1 && ot != ST_F32 && ot != ST_F16 && ot != ST_BF16 && ot != ST_Q8_0 && ot != ST_Q4_K) {
        return st_error(err, STRATA_ERR_ARG, "output type %d is not one of keep, F32, F16, BF16, Q8_0, Q4_K", ot);
    }
    importer im = {.dir = dir, .err = err};
    gguf_writer *w = NULL;
    strata_err rc;
    im.config = load_json(dir, "config.json", true, err, &rc);
    if (im.config == NULL) {
        goto done;
    }
    if ((rc = add_source(&im, "config.json")) != STRATA_OK || (rc = add_source(&im, "tokenizer.json")) != STRATA_OK) {
        goto done;
    }
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    if (stat(path, &st) == 0 && (rc = add_source(&im, "tokenizer_config.json")) != STRATA_OK) {
        goto done;
    }
    if ((rc = read_arch(&im)) != STRATA_OK || (rc = open_shards(&im)) != STRATA_OK) {
        goto done;
    }
    w = gguf_writer_new();
    if (w == NULL) {
        rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
        goto done;
    }
    int64_t vocab_size = 0;
    if ((rc = add_hparams(&im, w, &vocab_size)) != STRATA_OK ||
        (rc = st_hf_add_tokenizer(dir, w, vocab_size, err)) != STRATA_OK ||
        (rc = plan_tensors(&im, ot)) != STRATA_OK || (rc = add_source_record(&im, w)) != STRATA_OK) {
        goto done;
    }
    add_file_type(&im, w);
    uint64_t need = 1u << 20; /* metadata and alignment */
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    if (stat(path, &st) == 0) {
        need += (uint64_t)st.st_size;
    }
    for (int i = 0; i < im.n_plan; i++) {
        const plan_tensor *p = &im.plan[i];
        need += st_row_bytes(p->type, p->ne[0]) * (uint64_t)p->ne[1] + 32;
        rc = gguf_writer_add_tensor_fill(w, p->name, p->type, p->n_dims, p->ne, fill_tensor, &im.plan[i]);
    }
    if ((rc = check_free_space(out_gguf, need, opts->free_bytes, err)) != STRATA_OK) {
        goto done;
    }
    rc = gguf_writer_write(w, out_gguf, err);
done:
    gguf_writer_free(w);
    for (int i = 0; i < im.n_shards; i++) {
        st_safetensors_close(im.shards[i]);
    }
    for (int i = 0; i < im.n_sources; i++) {
        free(im.sources[i]);
    }
    free(im.plan);
    free(im.rope_freqs);
    json_decref(im.config);
    return rc;
}

/* ------------------------------------------------------------ resolve -- */

strata_err st_hf_resolve(const char *dir, char *gguf_path, size_t cap, strata_error *err)
{
    const char *store = getenv("STRATA_STORE_DIR");
    if (store != NULL && store[0] != '\0') {
        /* one file per source folder: its name plus a hash of its path */
        char real[4096];
        const char *key = realpath(dir, real) != NULL ? real : dir;
        uint64_t h = 0xcbf29ce484222325ull;
        for (const char *s = key; *s; s++) {
            h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
        }
        size_t len = strlen(dir);
        while (len > 1 && dir[len - 1] == '/') {
            len--;
        }
        const char *base = dir + len;
        while (base > dir && base[-1] != '/') {
            base--;
        }
        snprintf(gguf_path, cap, "%s/%.*s-%016llx.gguf", store, (int)(dir + len - base), base, (unsigned long long)h);
    } else {
        snprintf(gguf_path, cap, "%s/strata-model.gguf", dir);
    }
    if (!st_hf_import_up_to_date(dir, gguf_path) && (store == NULL || store[0] == '\0') && access(dir, W_OK) != 0) {
        return st_error(err, STRATA_ERR_IO,
                        "%s is not writable, so its GGUF conversion cannot be kept there: set STRATA_STORE_DIR to a "
                        "writable folder",
                        dir);
    }
    if (st_hf_import_up_to_date(dir, gguf_path)) {
        return STRATA_OK;
    }
    st_hf_import_opts o;
    st_hf_import_opts_default(&o);
    return st_hf_import(dir, gguf_path, &o, err);
}
