/* Model loading: GGUF metadata -> hyper-parameters, tensors -> weight views.
 * Every missing or mis-shaped tensor is an error that names it. */
#include "model.h"

#include "chat.h"
#include "hf_import.h"
#include "../cuda/backend.h"
#include "store.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

typedef struct {
    strata_model *m;
    const char *arch;       /* metadata prefix */
    strata_error *err;
    float **owned;          /* dequantized copies of small non-F32 vectors */
    size_t n_owned;
    size_t cap_owned;
    bool meta_only;         /* st_model_load_meta: no weight tensors */
} loader;

static bool get_int(loader *ld, const char *suffix, int64_t *out, bool required)
{
    char key[128];
    snprintf(key, sizeof(key), "%s.%s", ld->arch, suffix);
    if (gguf_get_i64(ld->m->gguf, key, out)) {
        return true;
    }
    if (required) {
        st_error(ld->err, STRATA_ERR_FORMAT, "model metadata is missing '%s'", key);
    }
    return false;
}

static bool get_float(loader *ld, const char *suffix, float *out)
{
    char key[128];
    double v;
    snprintf(key, sizeof(key), "%s.%s", ld->arch, suffix);
    if (gguf_get_f64(ld->m->gguf, key, &v)) {
        *out = (float)v;
        return true;
    }
    return false;
}

static strata_err check_positive(loader *ld, const char *what, int64_t v, int64_t max)
{
    if (v <= 0 || v > max) {
        return st_error(ld->err, STRATA_ERR_FORMAT, "model metadata %s.%s = %lld is out of range (1..%lld)", ld->arch,
                        what, (long long)v, (long long)max);
    }
    return STRATA_OK;
}

static strata_err read_hparams(loader *ld)
{
    st_hparams *hp = &ld->m->hp;
    int64_t v;
    strata_err rc;
    if (!get_int(ld, "block_count", &v, true)) {
        return STRATA_ERR_FORMAT;
    }
    if ((rc = check_positive(ld, "block_count", v, 1024)) != STRATA_OK) {
        return rc;
    }
    hp->n_layers = (int)v;
    if (!get_int(ld, "embedding_length", &v, true)) {
        return STRATA_ERR_FORMAT;
    }
    if ((rc = check_positive(ld, "embedding_length", v, 1 << 17)) != STRATA_OK) {
        return rc;
    }
    hp->n_embd = (int)v;
    if (!get_int(ld, "feed_forward_length", &v, true)) {
        return STRATA_ERR_FORMAT;
    }
    if ((rc = check_positive(ld, "feed_forward_length", v, 1 << 20)) != STRATA_OK) {
        return rc;
    }
    hp->n_ff = (int)v;
    if (!get_int(ld, "attention.head_count", &v, true)) {
        return STRATA_ERR_FORMAT;
    }
    if ((rc = check_positive(ld, "attention.head_count", v, 1024)) != STRATA_OK) {
        return rc;
    }
    hp->n_head = (int)v;
    hp->n_head_kv = hp->n_head;
    if (get_int(ld, "attention.head_count_kv", &v, false)) {
        if ((rc = check_positive(ld, "attention.head_count_kv", v, hp->n_head)) != STRATA_OK) {
            return rc;
        }
        hp->n_head_kv = (int)v;
    }
    if (hp->n_head % hp->n_head_kv != 0) {
        return st_error(ld->err, STRATA_ERR_FORMAT, "head_count %d is not a multiple of head_count_kv %d", hp->n_head,
                        hp->n_head_kv);
    }
    hp->head_dim = hp->n_embd / hp->n_head;
    if (get_int(ld, "attention.key_length", &v, false)) {
        if ((rc = check_positive(ld, "attention.key_length", v, 4096)) != STRATA_OK) {
            return rc;
        }
        hp->head_dim = (int)v;
    }
    int64_t vlen;
    if (get_int(ld, "attention.value_length", &vlen, false) && vlen != hp->head_dim) {
        return st_error(ld->err, STRATA_ERR_UNSUPPORTED, "value_length %lld != key_length %d is not supported",
                        (long long)vlen, hp->head_dim);
    }
    if (hp->head_dim % 2 != 0) {
        return st_error(ld->err, STRATA_ERR_FORMAT, "head dimension %d must be even", hp->head_dim);
    }
    hp->n_ctx_train = 4096;
    if (get_int(ld, "context_length", &v, false) && v > 0 && v <= (1 << 24)) {
        hp->n_ctx_train = (int)v;
    }
    hp->rms_eps = 1e-5f;
    get_float(ld, "attention.layer_norm_rms_epsilon", &hp->rms_eps);
    if (!(hp->rms_eps > 0.0f && hp->rms_eps < 1.0f)) {
        return st_error(ld->err, STRATA_ERR_FORMAT, "layer_norm_rms_epsilon %g is out of range", hp->rms_eps);
    }

    hp->rope_kind = hp->arch == ST_ARCH_LLAMA ? ST_ROPE_NORM : ST_ROPE_NEOX;
    hp->n_rot = hp->head_dim;
    if (get_int(ld, "rope.dimension_count", &v, false)) {
        if (v <= 0 || v > hp->head_dim || v % 2 != 0) {
            return st_error(ld->err, STRATA_ERR_FORMAT, "rope.dimension_count %lld is invalid for head dim %d",
                            (long long)v, hp->head_dim);
        }
        hp->n_rot = (int)v;
    }
    hp->rope_base = 10000.0f;
    get_float(ld, "rope.freq_base", &hp->rope_base);
    if (!(hp->rope_base > 0.0f)) {
        return st_error(ld->err, STRATA_ERR_FORMAT, "rope.freq_base %g is invalid", hp->rope_base);
    }
    hp->rope_freq_scale = 1.0f;
    hp->rope_ext_factor = 0.0f;
    hp->rope_attn_factor = 1.0f;
    hp->rope_beta_fast = 32.0f;
    hp->rope_beta_slow = 1.0f;
    hp->rope_n_ctx_orig = hp->n_ctx_train;
    char key[128], type[32] = "";
    snprintf(key, sizeof(key), "%s.rope.scaling.type", ld->arch);
    gguf_get_str(ld->m->gguf, key, type, sizeof(type));
    float factor = 0.0f;
    if (!get_float(ld, "rope.scaling.factor", &factor)) {
        get_float(ld, "rope.scale_linear", &factor);
    }
    if (get_int(ld, "rope.scaling.original_context_length", &v, false) && v > 0) {
        hp->rope_n_ctx_orig = (int)v;
    }
    if (type[0] == '\0' || strcmp(type, "none") == 0) {
        if (factor > 0.0f && factor != 1.0f && type[0] == '\0') {
            hp->rope_freq_scale = 1.0f / factor; /* legacy rope.scale_linear */
        }
    } else if (strcmp(type, "linear") == 0) {
        hp->rope_freq_scale = factor > 0.0f ? 1.0f / factor : 1.0f;
    } else if (strcmp(type, "yarn") == 0) {
        hp->rope_freq_scale = factor > 0.0f ? 1.0f / factor : 1.0f;
        hp->rope_ext_factor = 1.0f;
        float af;
        if (get_float(ld, "rope.scaling.attn_factor", &af) && af > 0.0f) {
            hp->rope_attn_factor = af;
        }
        get_float(ld, "rope.scaling.yarn_beta_fast", &hp->rope_beta_fast);
        get_float(ld, "rope.scaling.yarn_beta_slow", &hp->rope_beta_slow);
    } else {
        return st_error(ld->err, STRATA_ERR_UNSUPPORTED, "RoPE scaling type '%s' is not supported", type);
    }
    return STRATA_OK;
}

static strata_err find_tensor(loader *ld, const char *name, bool required, const gguf_tensor **out)
{
    *out = gguf_find_tensor(ld->m->gguf, name);
    if (*out == NULL && required) {
        return st_error(ld->err, STRATA_ERR_FORMAT, "model file is missing tensor '%s'", name);
    }
    return STRATA_OK;
}

static strata_err get_weight(loader *ld, const char *name, int64_t n_in, int64_t n_out, bool required,
                             st_weight *w)
{
    const gguf_tensor *t;
    memset(w, 0, sizeof(*w));
    strata_err rc = find_tensor(ld, name, required, &t);
    if (rc != STRATA_OK || t == NULL) {
        return rc;
    }
    if (t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out) {
        return st_error(ld->err, STRATA_ERR_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld]",
                        name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)n_in,
                        (long long)n_out);
    }
    if (!st_type_supported(t->type)) {
        return st_error(ld->err, STRATA_ERR_UNSUPPORTED, "tensor '%s' has type %s, which Strata cannot compute with yet",
                        name, st_type_name(t->type));
    }
    w->type = t->type;
    w->data = t->data;
    w->n_in = n_in;
    w->n_out = n_out;
    return STRATA_OK;
}

/* A 1-D F32 vector (norm weights, biases); other float types are converted. */
static strata_err get_vector(loader *ld, const char *name, int64_t n, bool required, const float **out)
{
    const gguf_tensor *t;
    *out = NULL;
    strata_err rc = find_tensor(ld, name, required, &t);
    if (rc != STRATA_OK || t == NULL) {
        return rc;
    }
    if (t->n_dims != 1 || t->ne[0] != n) {
        return st_error(ld->err, STRATA_ERR_FORMAT, "tensor '%s' has %lld elements in %u dims, expected a vector of %lld",
                        name, (long long)t->ne[0], t->n_dims, (long long)n);
    }
    if (t->type == ST_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = (const float *)t->data;
        return STRATA_OK;
    }
    if (!st_type_supported(t->type)) {
        return st_error(ld->err, STRATA_ERR_UNSUPPORTED, "tensor '%s' has unsupported type %s", name,
                        st_type_name(t->type));
    }
    if (ld->n_owned == ld->cap_owned) {
        size_t cap = ld->cap_owned ? ld->cap_owned * 2 : 64;
        float **p = realloc(ld->owned, cap * sizeof(float *));
        if (p == NULL) {
            return st_error(ld->err, STRATA_ERR_NOMEM, "out of memory");
        }
        ld->owned = p;
        ld->cap_owned = cap;
    }
    float *v = st_malloc_array((size_t)n, sizeof(float));
    if (v == NULL) {
        return st_error(ld->err, STRATA_ERR_NOMEM, "out of memory");
    }
    st_dequant_row(t->type, t->data, v, n);
    ld->owned[ld->n_owned++] = v;
    *out = v;
    return STRATA_OK;
}

void st_layer_tensors(const st_hparams *hp, st_layer_tensor out[ST_LAYER_TENSORS])
{
    const int64_t q_dim = (int64_t)hp->n_head * hp->head_dim;
    const int64_t kv_dim = (int64_t)hp->n_head_kv * hp->head_dim;
    const bool biases = hp->arch == ST_ARCH_QWEN2; /* llama fine-tunes may carry them too */
    const bool qk_norm = hp->arch == ST_ARCH_QWEN3;
    const st_layer_tensor specs[ST_LAYER_TENSORS] = {
        {"attn_norm.weight", false, offsetof(st_layer, attn_norm), hp->n_embd, 1, true},
        {"attn_q.weight", true, offsetof(st_layer, wq), hp->n_embd, q_dim, true},
        {"attn_k.weight", true, offsetof(st_layer, wk), hp->n_embd, kv_dim, true},
        {"attn_v.weight", true, offsetof(st_layer, wv), hp->n_embd, kv_dim, true},
        {"attn_output.weight", true, offsetof(st_layer, wo), q_dim, hp->n_embd, true},
        {"attn_q.bias", false, offsetof(st_layer, bq), q_dim, 1, biases},
        {"attn_k.bias", false, offsetof(st_layer, bk), kv_dim, 1, biases},
        {"attn_v.bias", false, offsetof(st_layer, bv), kv_dim, 1, biases},
        {"attn_q_norm.weight", false, offsetof(st_layer, q_norm), hp->head_dim, 1, qk_norm},
        {"attn_k_norm.weight", false, offsetof(st_layer, k_norm), hp->head_dim, 1, qk_norm},
        {"ffn_norm.weight", false, offsetof(st_layer, ffn_norm), hp->n_embd, 1, true},
        {"ffn_gate.weight", true, offsetof(st_layer, w_gate), hp->n_embd, hp->n_ff, true},
        {"ffn_up.weight", true, offsetof(st_layer, w_up), hp->n_embd, hp->n_ff, true},
        {"ffn_down.weight", true, offsetof(st_layer, w_down), hp->n_ff, hp->n_embd, true},
    };
    memcpy(out, specs, sizeof(specs));
}

static strata_err load_tensors(loader *ld)
{
    strata_model *m = ld->m;
    const st_hparams *hp = &m->hp;
    strata_err rc;
    char name[96];

    if (ld->meta_only) {
        /* split store meta file: weights come from a streamer */
        return get_vector(ld, "rope_freqs.weight", hp->n_rot / 2, false, &m->rope_freqs);
    }
    if ((rc = get_weight(ld, "token_embd.weight", hp->n_embd, hp->n_vocab, true, &m->tok_embd)) != STRATA_OK) {
        return rc;
    }
    if ((rc = get_vector(ld, "output_norm.weight", hp->n_embd, true, &m->out_norm)) != STRATA_OK) {
        return rc;
    }
    if ((rc = get_weight(ld, "output.weight", hp->n_embd, hp->n_vocab, false, &m->output)) != STRATA_OK) {
        return rc;
    }
    if (m->output.data == NULL) {
        m->output = m->tok_embd; /* tied embeddings */
    }
    if ((rc = get_vector(ld, "rope_freqs.weight", hp->n_rot / 2, false, &m->rope_freqs)) != STRATA_OK) {
        return rc;
    }
    m->layers = st_calloc((size_t)hp->n_layers, sizeof(st_layer));
    if (m->layers == NULL) {
        return st_error(ld->err, STRATA_ERR_NOMEM, "out of memory");
    }
    st_layer_tensor specs[ST_LAYER_TENSORS];
    st_layer_tensors(hp, specs);
    for (int i = 0; i < hp->n_layers; i++) {
        uint8_t *l = (uint8_t *)&m->layers[i];
        for (int j = 0; j < ST_LAYER_TENSORS; j++) {
            const st_layer_tensor *t = &specs[j];
            snprintf(name, sizeof(name), "blk.%d.%s", i, t->suffix);
            rc = t->matrix ? get_weight(ld, name, t->n_in, t->n_out, t->required, (st_weight *)(l + t->offset))
                           : get_vector(ld, name, t->n_in, t->required, (const float **)(l + t->offset));
            if (rc != STRATA_OK) {
                return rc;
            }
        }
        if (snprintf(name, sizeof(name), "blk.%d.ffn_gate_inp.weight", i) > 0 && gguf_find_tensor(m->gguf, name)) {
            return st_error(ld->err, STRATA_ERR_UNSUPPORTED, "mixture-of-experts models are not supported yet (%s)", name);
        }
    }
    return STRATA_OK;
}

/* Summaries for info: parameter count and the type holding most bytes. */
static void summarize(strata_model *m)
{
    uint64_t bytes_by_type[ST_TYPE_COUNT] = {0};
    for (uint64_t i = 0; i < m->gguf->n_tensors; i++) {
        const gguf_tensor *t = &m->gguf->tensors[i];
        uint64_t n = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            n *= (uint64_t)t->ne[d];
        }
        m->n_params += n;
        if ((unsigned)t->type < ST_TYPE_COUNT) {
            bytes_by_type[t->type] += t->nbytes;
        }
    }
    int best = 0;
    for (int t = 0; t < ST_TYPE_COUNT; t++) {
        if (bytes_by_type[t] > bytes_by_type[best]) {
            best = t;
        }
    }
    snprintf(m->weight_type, sizeof(m->weight_type), "%s", st_type_name((st_type)best));
}

void strata_model_params_default(strata_model_params *p)
{
    p->n_threads = 0;
    p->use_mmap = true;
    p->use_mlock = false;
    p->backend = STRATA_BACKEND_AUTO;
    p->vram_budget = 0;
}

static strata_err load_model(const char *path, const strata_model_params *params, bool meta_only,
                             strata_model **out, strata_error *err)
{
    strata_model_params defaults;
    if (out == NULL || path == NULL) {
        return st_error(err, STRATA_ERR_ARG, "model path and output must not be NULL");
    }
    *out = NULL;
    if (params == NULL) {
        strata_model_params_default(&defaults);
        params = &defaults;
    }
    /* a Hugging Face folder: convert it once to GGUF (hf_import.h), load that */
    char hf_gguf[4096];
    struct stat path_st;
    if (stat(path, &path_st) == 0 && S_ISDIR(path_st.st_mode)) {
        strata_err hrc = st_hf_resolve(path, hf_gguf, sizeof(hf_gguf), err);
        if (hrc != STRATA_OK) {
            return hrc;
        }
        path = hf_gguf;
    }
    strata_model *m = st_calloc(1, sizeof(*m));
    if (m == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    loader ld = {.m = m, .err = err, .meta_only = meta_only};
    strata_err rc = gguf_open(path, params->use_mmap, &m->gguf, err);
    if (rc != STRATA_OK) {
        free(m);
        return rc;
    }
    char arch[64] = "";
    if (!gguf_get_str(m->gguf, "general.architecture", arch, sizeof(arch))) {
        rc = st_error(err, STRATA_ERR_FORMAT, "%s: metadata 'general.architecture' is missing", path);
        goto fail;
    }
    if (strcmp(arch, "llama") == 0 || strcmp(arch, "mistral") == 0) {
        m->hp.arch = ST_ARCH_LLAMA;
    } else if (strcmp(arch, "qwen2") == 0) {
        m->hp.arch = ST_ARCH_QWEN2;
    } else if (strcmp(arch, "qwen3") == 0) {
        m->hp.arch = ST_ARCH_QWEN3;
    } else {
        rc = st_error(err, STRATA_ERR_UNSUPPORTED,
                      "%s: architecture '%s' is not supported (supported: llama, mistral, qwen2, qwen3)", path, arch);
        goto fail;
    }
    ld.arch = arch;
    gguf_get_str(m->gguf, "general.name", m->name, sizeof(m->name));
    if ((rc = read_hparams(&ld)) != STRATA_OK) {
        goto fail;
    }
    if ((rc = st_tokenizer_load(m->gguf, &m->tok, err)) != STRATA_OK) {
        goto fail;
    }
    m->hp.n_vocab = st_tokenizer_n_vocab(m->tok);
    if ((rc = load_tensors(&ld)) != STRATA_OK) {
        goto fail;
    }
    summarize(m);
    st_part_source_resident(m, &m->source);
    snprintf(m->chat_template, sizeof(m->chat_template), "%s", st_chat_detect(st_tokenizer_chat_template(m->tok)));
    m->n_threads = params->n_threads > 0 ? params->n_threads : 0;
    if (params->use_mlock && m->gguf->mapped) {
        mlock(m->gguf->image, m->gguf->size); /* best effort: RLIMIT_MEMLOCK may refuse */
    }
    /* keep owned vectors alive with the model */
    m->owned_vecs = ld.owned;
    m->n_owned_vecs = ld.n_owned;
    *out = m;
    return STRATA_OK;
fail:
    for (size_t i = 0; i < ld.n_owned; i++) {
        free(ld.owned[i]);
    }
    free(ld.owned);
    st_tokenizer_free(m->tok);
    free(m->layers);
    gguf_close(m->gguf);
    free(m);
    return rc;
}

strata_err strata_model_load(const char *path, const strata_model_params *params, strata_model **out,
                             strata_error *err)
{
    /* a split store folder (store.h): its parts all resident, read once */
    if (st_store_is_dir(path)) {
        strata_stream_params sp;
        strata_stream_params_default(&sp);
        sp.memory_budget = UINT64_MAX;
        return strata_model_load_streamed(path, params, &sp, out, err);
    }
    strata_err rc = load_model(path, params, false, out, err);
    return rc == STRATA_OK ? st_model_init_backend(out, params, err) : rc;
}

strata_err st_model_init_backend(strata_model **m, const strata_model_params *params, strata_error *err)
{
    strata_err rc = st_backend_init(*m, params, err);
    if (rc != STRATA_OK) {
        strata_model_free(*m);
        *m = NULL;
    }
    return rc;
}

/* Declared in store.h (split store): metadata, tokenizer, hparams only. */
strata_err st_model_load_meta(const char *path, const strata_model_params *params, strata_model **out,
                              strata_error *err)
{
    return load_model(path, params, true, out, err);
}

void strata_model_free(strata_model *m)
{
    if (m == NULL) {
        return;
    }
    st_backend_free(m);
    if (m->source_free != NULL) {
        m->source_free(m->source.user);
    }
    for (size_t i = 0; i < m->n_owned_vecs; i++) {
        free(m->owned_vecs[i]);
    }
    free(m->owned_vecs);
    st_tokenizer_free(m->tok);
    free(m->layers);
    gguf_close(m->gguf);
    free(m);
}

const st_tokenizer *st_model_tokenizer(const strata_model *m)
{
    return m->tok;
}

void strata_model_get_info(const strata_model *m, strata_model_info *info)
{
    static const char *const arch_names[] = {"llama", "qwen2", "qwen3"};
    memset(info, 0, sizeof(*info));
    snprintf(info->arch, sizeof(info->arch), "%s", arch_names[m->hp.arch]);
    snprintf(info->name, sizeof(info->name), "%s", m->name);
    info->n_layers = m->hp.n_layers;
    info->n_embd = m->hp.n_embd;
    info->n_heads = m->hp.n_head;
    info->n_kv_heads = m->hp.n_head_kv;
    info->head_dim = m->hp.head_dim;
    info->n_ff = m->hp.n_ff;
    info->n_vocab = m->hp.n_vocab;
    info->n_ctx_train = m->hp.n_ctx_train;
    info->n_params = m->n_params;
    info->file_bytes = m->gguf->size;
    snprintf(info->weight_type, sizeof(info->weight_type), "%s", m->weight_type);
    snprintf(info->tokenizer, sizeof(info->tokenizer), "%s", st_tokenizer_kind(m->tok));
    snprintf(info->chat_template, sizeof(info->chat_template), "%s", m->chat_template);
    info->bos = st_tokenizer_bos(m->tok);
    info->eos = st_tokenizer_eos(m->tok);
    info->eot = st_tokenizer_eot(m->tok);
    info->add_bos = st_tokenizer_add_bos_default(m->tok);
    snprintf(info->backend, sizeof(info->backend), "%s", m->backend == STRATA_BACKEND_CUDA ? "cuda" : "cpu");
    snprintf(info->device, sizeof(info->device), "%s", m->device_name);
}
