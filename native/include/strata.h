/* Strata: a layer-streaming LLM inference engine.
 *
 * The one public header. Every function that can fail returns a strata_err
 * and, when the caller passes a strata_error, fills it with a message that
 * names what went wrong (the tensor, the offset, the architecture...).
 * No global state: everything hangs off a strata_model or a strata_ctx.
 */
#ifndef STRATA_H
#define STRATA_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STRATA_VERSION "0.1.0"

typedef enum {
    STRATA_OK = 0,
    STRATA_ERR_IO,          /* file missing, unreadable, short read */
    STRATA_ERR_FORMAT,      /* corrupt or malformed input (model file, JSON, ...) */
    STRATA_ERR_UNSUPPORTED, /* valid input we do not handle: unknown arch, tensor type */
    STRATA_ERR_NOMEM,       /* allocation failed */
    STRATA_ERR_ARG,         /* bad argument from the caller */
    STRATA_ERR_LIMIT,       /* a limit was exceeded: context full, prompt too long */
    STRATA_ERR_CANCELLED,   /* the caller asked to stop */
    STRATA_ERR_INTERNAL,    /* a bug: should never happen */
} strata_err;

typedef struct strata_error {
    strata_err code;
    char msg[512];
} strata_error;

const char *strata_strerror(strata_err code);
/* The code's identifier, e.g. "STRATA_ERR_FORMAT" (for error codes in JS and
 * in the worker protocol). */
const char *strata_err_name(strata_err code);

typedef int32_t strata_token;

/* ---------------------------------------------------------------- model -- */

typedef struct strata_model strata_model;

/* Where the forward pass runs. AUTO: CUDA when the engine was built with it
 * and a device + driver exist, else the CPU. The environment variable
 * STRATA_BACKEND=auto|cpu|cuda overrides the parameter. */
typedef enum {
    STRATA_BACKEND_AUTO = 0,
    STRATA_BACKEND_CPU,
    STRATA_BACKEND_CUDA,  /* STRATA_ERR_UNSUPPORTED when unavailable */
} strata_backend;

typedef struct strata_model_params {
    int n_threads;   /* 0: all online cores */
    bool use_mmap;   /* map the file instead of reading it into memory */
    bool use_mlock;  /* lock mapped weights in RAM (best effort) */
    int backend;     /* strata_backend (default AUTO) */
    uint64_t vram_budget; /* CUDA: bytes of weights kept resident on the GPU
                             (the rest stream through pinned buffers each
                             step); 0: all that fit, minus a margin */
} strata_model_params;

void strata_model_params_default(strata_model_params *p);

typedef struct strata_model_info {
    char arch[32];       /* "llama", "qwen2", "qwen3" */
    char name[128];      /* general.name, may be empty */
    int n_layers;
    int n_embd;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int n_ff;
    int n_vocab;
    int n_ctx_train;
    uint64_t n_params;
    uint64_t file_bytes;
    char weight_type[16]; /* type of most weight bytes, e.g. "Q8_0" */
    char tokenizer[16];   /* "spm" or "bpe" */
    char chat_template[16]; /* "chatml", "llama3", "llama2", "mistral", variants
                               such as "mistral-v3", or "plain" */
    strata_token bos, eos, eot;
    bool add_bos;         /* prompts start with BOS by default (tokenizer.ggml.add_bos_token) */
    char backend[16];     /* "cpu" or "cuda": where the forward pass runs */
    char device[128];     /* the GPU's name with "cuda", else "" */
} strata_model_info;

/* path: a GGUF file; a Hugging Face folder (config.json), converted once to a
 * GGUF beside it; or a split store folder (manifest.json), loaded with every
 * part resident (strata_model_load_streamed picks a memory budget). */
strata_err strata_model_load(const char *path, const strata_model_params *params,
                             strata_model **out, strata_error *err);
void strata_model_free(strata_model *model);
void strata_model_get_info(const strata_model *model, strata_model_info *info);

/* ------------------------------------------------------------ tokenizer -- */

/* Writes at most cap tokens to out; *n_out receives the number needed. If it
 * exceeds cap the call returns STRATA_ERR_LIMIT and the caller may retry. */
strata_err strata_tokenize(const strata_model *model, const char *text, size_t len,
                           bool add_bos, bool parse_special, strata_token *out,
                           size_t cap, size_t *n_out, strata_error *err);

/* Text of one token as it appears in output (SPM's leading space kept unless
 * strip_leading_space). Returns bytes written (not NUL-terminated) or -needed
 * when buf is too small. Special/control tokens render as "" unless
 * render_special. */
int strata_token_to_piece(const strata_model *model, strata_token tok, char *buf,
                          size_t cap, bool render_special);

/* Detokenize a whole sequence into a malloc'd NUL-terminated string. */
strata_err strata_detokenize(const strata_model *model, const strata_token *toks, size_t n,
                             bool render_special, char **out, strata_error *err);

bool strata_token_is_eog(const strata_model *model, strata_token tok);

/* --------------------------------------------------------- chat template -- */

typedef struct strata_chat_message {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} strata_chat_message;

/* template: NULL or "" for the model's own, else "chatml", "llama3",
 * "llama2", "mistral" (and the variants st_chat_detect names), "plain".
 * Output is malloc'd. */
strata_err strata_chat_apply(const strata_model *model, const char *template_name,
                             const strata_chat_message *msgs, size_t n,
                             bool add_generation_prompt, char **out, strata_error *err);

/* -------------------------------------------------------------- context -- */

typedef struct strata_ctx strata_ctx;

typedef struct strata_ctx_params {
    int n_ctx;       /* KV cache length in tokens; 0: min(n_ctx_train, 4096) */
    int n_batch;     /* prompt tokens per forward chunk; 0: 512 */
    int n_threads;   /* 0: model's */
    bool kv_f32;     /* F32 KV cache (default F16, as llama.cpp) */
} strata_ctx_params;

void strata_ctx_params_default(strata_ctx_params *p);

strata_err strata_ctx_new(strata_model *model, const strata_ctx_params *params,
                          strata_ctx **out, strata_error *err);
void strata_ctx_free(strata_ctx *ctx);
int strata_ctx_n_ctx(const strata_ctx *ctx);
int strata_ctx_n_past(const strata_ctx *ctx);
/* Drop cached positions >= n_past (0 clears everything). */
void strata_ctx_truncate(strata_ctx *ctx, int n_past);

/* Run tokens through the model, appending them to the KV cache. If logits is
 * not NULL it receives n_vocab floats: the next-token logits after the last
 * token. */
strata_err strata_eval(strata_ctx *ctx, const strata_token *toks, size_t n, float *logits,
                       strata_error *err);

/* ------------------------------------------------------------- sampling -- */

typedef struct strata_sampler_params {
    float temperature;     /* <= 0: greedy */
    int top_k;             /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off */
    int repeat_last_n;     /* tokens considered for the penalty */
    float presence_penalty;
    float frequency_penalty;
    uint64_t seed;
    bool json;             /* constrain output to one valid JSON value */
} strata_sampler_params;

void strata_sampler_params_default(strata_sampler_params *p);

typedef struct strata_sampler strata_sampler;

strata_err strata_sampler_new(const strata_model *model, const strata_sampler_params *p,
                              strata_sampler **out, strata_error *err);
void strata_sampler_free(strata_sampler *s);
/* Picks a token from logits (modified in place). */
strata_token strata_sampler_sample(strata_sampler *s, float *logits);
/* Tell the sampler a token was emitted (history, JSON state). */
void strata_sampler_accept(strata_sampler *s, strata_token tok);
/* True when JSON mode has closed its value. */
bool strata_sampler_done(const strata_sampler *s);

/* ------------------------------------------------------------ generation -- */

typedef enum {
    STRATA_STOP_NONE = 0,
    STRATA_STOP_EOG,        /* end-of-generation token */
    STRATA_STOP_MAX_TOKENS,
    STRATA_STOP_STRING,     /* one of the stop strings */
    STRATA_STOP_CONTEXT,    /* KV cache full */
    STRATA_STOP_JSON,       /* JSON value complete */
    STRATA_STOP_CALLBACK,   /* the callback asked to stop */
    STRATA_STOP_CANCELLED,  /* *cancel became non-zero */
} strata_stop_reason;

/* "eog", "maxTokens", "stop", "context", "json", "callback", "cancelled",
 * or "none": the names the addon and the worker protocol use. */
const char *strata_stop_name(strata_stop_reason r);

/* Called with each new piece of text (UTF-8 complete; stop strings held back
 * until they can be ruled out). Return false to stop. */
typedef bool (*strata_piece_cb)(const char *piece, size_t len, void *user);

typedef struct strata_generate_params {
    strata_sampler_params sampling;
    int max_tokens;               /* <= 0: until context is full */
    const char *const *stop;      /* stop strings, may be NULL */
    size_t n_stop;
    strata_piece_cb on_piece;     /* may be NULL */
    void *user;
    const volatile int *cancel;   /* if non-NULL and *cancel != 0: stop with STRATA_STOP_CANCELLED */
} strata_generate_params;

void strata_generate_params_default(strata_generate_params *p);

typedef struct strata_generate_result {
    char *text;              /* malloc'd, stop string excluded */
    size_t n_prompt_tokens;
    size_t n_gen_tokens;
    strata_stop_reason stop;
    double prompt_ms;
    double gen_ms;
} strata_generate_result;

/* Tokenize-free core: continue the context after prompt tokens. The context
 * is reset first unless the prompt extends what is already cached, in which
 * case the common prefix is reused. */
strata_err strata_generate(strata_ctx *ctx, const strata_token *prompt, size_t n_prompt,
                           const strata_generate_params *p, strata_generate_result *res,
                           strata_error *err);
void strata_generate_result_free(strata_generate_result *res);

/* ------------------------------------------------------------ streaming -- */

/* Layer streaming: run a model larger than memory by reading its weights
 * one part (embeddings, each block, head) at a time from a split store. */
typedef struct strata_stream_params {
    uint64_t memory_budget;  /* bytes of weights kept in memory: the parts that
                                fit stay resident, the rest stream; 0: one
                                layer at a time (+ one read ahead) */
    int prefetch;            /* parts read ahead: -1 as many as the budget
                                allows (at least 1), 0 none */
    const char *compression; /* splitting a GGUF: NULL/"none", "8bit" (Q8_0),
                                "4bit" (Q4_0) for the 2-D weight matrices */
    const char *store_path;  /* NULL: "<model>.strata-store" ("-8bit"/"-4bit"
                                appended when compressed) beside the file, or
                                in $STRATA_STORE_DIR when set */
    bool delete_original;    /* delete the GGUF once its store is complete */
    bool verify;             /* check each part's checksum the first time it loads */
    bool in_place;           /* stream the GGUF itself, without a store: each
                                layer's tensors must be contiguous, norms F32,
                                output untied (else STRATA_ERR_UNSUPPORTED);
                                compression and store_path are ignored */
    bool direct_io;          /* read streamed parts with O_DIRECT instead of
                                through the page cache (default false: buffered
                                reads with kernel read-ahead, each part's pages
                                dropped once read, so the cache never holds
                                the model; works on every file system) */
} strata_stream_params;

void strata_stream_params_default(strata_stream_params *p);

/* path: a GGUF file (split once into its store, which later loads reuse) or
 * a store folder. Free with strata_model_free. */
strata_err strata_model_load_streamed(const char *path, const strata_model_params *params,
                                      const strata_stream_params *sp, strata_model **out,
                                      strata_error *err);

/* Profiling counters of one weight part of a streamed model. */
typedef struct strata_stream_stats {
    int part;            /* -1 embeddings, 0..n_layers-1 blocks, n_layers the head */
    bool resident;       /* read once and kept (within the memory budget) */
    uint64_t loads;      /* times read from disk */
    uint64_t bytes_read;
    double read_ms;      /* reader thread: read + checksum + parse */
    double stall_ms;     /* time the forward pass waited for the part */
    double compute_ms;   /* time the forward pass held it (acquire -> release) */
} strata_stream_stats;

/* Fills min(cap, parts) entries in part order and returns the number of
 * parts (n_layers + 2); 0 for a model that is not streamed. reset: zero the
 * counters afterwards. Safe while another thread runs the model. */
size_t strata_model_stream_stats(strata_model *model, strata_stream_stats *out, size_t cap, bool reset);

#ifdef __cplusplus
}
#endif

#endif
