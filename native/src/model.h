/* A loaded model: hyper-parameters read from GGUF metadata and views of the
 * weight tensors. Supports the llama family (Llama 2/3, TinyLlama, Mistral),
 * qwen2 (q/k/v biases) and qwen3 (per-head q/k RMSNorm). */
#ifndef ST_MODEL_H
#define ST_MODEL_H

#include "gguf.h"
#include "quant.h"
#include "tokenizer.h"

typedef enum {
    ST_ARCH_LLAMA,
    ST_ARCH_QWEN2,
    ST_ARCH_QWEN3,
} st_arch;

typedef enum {
    ST_ROPE_NORM, /* rotate adjacent pairs (x0,x1),(x2,x3)... : llama */
    ST_ROPE_NEOX, /* rotate halves (x_i, x_{i+d/2}) : qwen */
} st_rope_kind;

/* A 2-D weight matrix: n_out rows of n_in elements, row-major, in `type`. */
typedef struct {
    st_type type;
    const void *data;   /* n_out * st_row_bytes(type, n_in) bytes */
    int64_t n_in;
    int64_t n_out;
} st_weight;

typedef struct {
    const float *attn_norm; /* (n_embd) */
    st_weight wq;           /* (n_embd -> n_head * head_dim) */
    st_weight wk;           /* (n_embd -> n_head_kv * head_dim) */
    st_weight wv;           /* (n_embd -> n_head_kv * head_dim) */
    st_weight wo;           /* (n_head * head_dim -> n_embd) */
    const float *bq;        /* (n_head * head_dim) qwen2 only, else NULL */
    const float *bk;        /* (n_head_kv * head_dim) */
    const float *bv;        /* (n_head_kv * head_dim) */
    const float *q_norm;    /* (head_dim) qwen3 only, else NULL */
    const float *k_norm;    /* (head_dim) */
    const float *ffn_norm;  /* (n_embd) */
    st_weight w_gate;       /* (n_embd -> n_ff) */
    st_weight w_up;         /* (n_embd -> n_ff) */
    st_weight w_down;       /* (n_ff -> n_embd) */
} st_layer;

/* One tensor of a block, as the loader and the streamer bind it. */
typedef struct {
    const char *suffix;     /* name after "blk.N." */
    bool matrix;            /* an st_weight field, else a const float * vector */
    size_t offset;          /* of the field in st_layer */
    int64_t n_in;           /* matrix: elements per row; vector: length */
    int64_t n_out;          /* matrix rows */
    bool required;
} st_layer_tensor;

#define ST_LAYER_TENSORS 14

typedef struct st_hparams st_hparams;
/* The tensors of a block for these hyper-parameters (biases required for
 * qwen2, q/k norms for qwen3, optional otherwise). */
void st_layer_tensors(const st_hparams *hp, st_layer_tensor out[ST_LAYER_TENSORS]);

/* A view of one weight part: token embeddings (ST_PART_EMBED), a block, or
 * the output head. See batch.h. */
typedef struct {
    const st_layer *layer;  /* blocks 0..L-1 */
    st_weight tok_embd;     /* ST_PART_EMBED: (n_vocab rows of n_embd) */
    const float *out_norm;  /* ST_PART_HEAD: (n_embd) */
    st_weight output;       /* ST_PART_HEAD: (n_embd -> n_vocab) */
} st_part_view;

#define ST_PART_EMBED (-1)
#define ST_PART_HEAD(n_layers) (n_layers)

/* Where a forward pass gets weights: resident tensors or a streamer. */
typedef struct st_part_source {
    void *user;
    /* Make part `part` available (may block while it loads); fills *view,
     * valid until release(part). */
    strata_err (*acquire)(void *user, int part, st_part_view *view, strata_error *err);
    /* The step is done with `part`: a streamer may drop it. */
    void (*release)(void *user, int part);
    /* NULL, or: the consumer keeps its own copy of `part` from now on (a GPU
     * holding the layer in VRAM) and will not acquire it again, so a
     * streamer stops reading it from disk. */
    void (*hold)(void *user, int part);
} st_part_source;

struct st_hparams {
    st_arch arch;
    int n_layers;
    int n_embd;
    int n_head;
    int n_head_kv;
    int head_dim;
    int n_ff;
    int n_vocab;
    int n_ctx_train;
    float rms_eps;
    /* RoPE, as ggml_rope_ext takes it */
    st_rope_kind rope_kind;
    int n_rot;              /* dimensions rotated per head */
    float rope_base;
    float rope_freq_scale;  /* 1 / linear scaling factor */
    float rope_ext_factor;  /* YaRN: 1 when enabled, else 0 */
    float rope_attn_factor;
    float rope_beta_fast;
    float rope_beta_slow;
    int rope_n_ctx_orig;
};

struct strata_model {
    gguf_file *gguf;
    st_tokenizer *tok;
    st_hparams hp;
    st_weight tok_embd;     /* (n_vocab rows of n_embd) */
    const float *out_norm;  /* (n_embd) */
    st_weight output;       /* (n_embd -> n_vocab); = tok_embd when tied */
    const float *rope_freqs;/* (n_rot / 2) Llama 3.1 frequency factors, or NULL */
    st_layer *layers;       /* (n_layers) */
    float **owned_vecs;     /* F32 copies of small non-F32 vectors (norms, biases) */
    size_t n_owned_vecs;
    int n_threads;
    char chat_template[16];
    char weight_type[16];
    uint64_t n_params;
    char name[128];
    st_part_source source;  /* resident by default; a streamer for streamed models */
    void (*source_free)(void *user); /* NULL, or frees source.user with the model (streamed) */
    int backend;            /* STRATA_BACKEND_CPU or _CUDA (backend.h) */
    struct st_cuda_model *gpu; /* GPU state when backend is CUDA, else NULL */
    char device_name[128];
};

/* The resident source: views straight into the model's tensors. */
void st_part_source_resident(strata_model *m, st_part_source *out);

const st_tokenizer *st_model_tokenizer(const strata_model *m);

/* After a load: choose the backend (cuda/backend.h). On failure frees *m
 * and sets it to NULL. */
strata_err st_model_init_backend(strata_model **m, const strata_model_params *params, strata_error *err);

#endif
