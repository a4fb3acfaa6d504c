/* gguf2hf: export a GGUF model (llama, qwen2, qwen3; F32/F16/BF16 weights,
 * other types dequantized) as a Hugging Face folder, the inverse of
 * st_hf_import: config.json, model.safetensors (or N shards and
 * model.safetensors.index.json), tokenizer.json built from the GGUF vocab,
 * tokenizer_config.json. Llama Q/K rows get HF's rotary layout back.
 * A test helper: tests include this file with GGUF2HF_NO_MAIN.
 *
 *   gguf2hf IN.gguf OUT_DIR [--dtype keep|F32|F16|BF16] [--shards N] [--tokenizer-only]
 */
#include "gguf.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    int dtype;          /* -1 keep (quantized -> F32), else ST_F32 / ST_F16 / ST_BF16 */
    int n_shards;       /* 0 or 1: one model.safetensors */
    bool tokenizer_only;
} gguf2hf_opts;

enum { G2H_NORMAL = 1, G2H_UNKNOWN = 2, G2H_CONTROL = 3, G2H_USER = 4, G2H_UNUSED = 5, G2H_BYTE = 6 };

static const char *const g2h_llama3_re =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const g2h_qwen2_re =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static char *g2h_strndup(gguf_str s)
{
    char *p = malloc(s.len + 1);
    if (p != NULL) {
        memcpy(p, s.ptr, s.len);
        p[s.len] = '\0';
    }
    return p;
}

static strata_err g2h_dump(json_t *j, const char *dir, const char *file, strata_error *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    if (json_dump_file(j, path, JSON_INDENT(1) | JSON_ENSURE_ASCII) != 0) {
        return st_error(err, STRATA_ERR_IO, "cannot write %s", path);
    }
    return STRATA_OK;
}

/* ------------------------------------------------------------ tokenizer -- */

static bool g2h_is_pad(const char *s, uint64_t id)
{
    char want[32];
    snprintf(want, sizeof(want), "[PAD%llu]", (unsigned long long)id);
    return strcmp(s, want) == 0;
}

/* SPM merges: every split of a NORMAL token into two tokens, ranked by the
 * merged token's score (highest first), as HF's SentencePieceExtractor. */
typedef struct {
    float score;
    uint32_t id, a, b;
    uint32_t split;
} g2h_merge;

static int g2h_cmp_merge(const void *x, const void *y)
{
    const g2h_merge *p = x, *q = y;
    if (p->score != q->score) {
        return p->score > q->score ? -1 : 1;
    }
    if (p->a != q->a) {
        return p->a < q->a ? -1 : 1;
    }
    return (p->b > q->b) - (p->b < q->b);
}

static json_t *g2h_spm_merges(char **text, const int32_t *types, const float *scores, uint64_t n, json_t *vocab)
{
    size_t cap = 1024, cnt = 0;
    g2h_merge *m = malloc(cap * sizeof(*m));
    char buf[1024];
    for (uint64_t id = 0; m != NULL && id < n; id++) {
        if (types[id] != G2H_NORMAL) {
            continue;
        }
        size_t len = strlen(text[id]);
        if (len >= sizeof(buf)) {
            continue;
        }
        for (size_t k = 1; k < len; k++) {
            if (((uint8_t)text[id][k] & 0xC0) == 0x80) {
                continue; /* not a UTF-8 boundary */
            }
            memcpy(buf, text[id], k);
            buf[k] = '\0';
            json_t *a = json_object_get(vocab, buf);
            json_t *b = json_object_get(vocab, text[id] + k);
            if (!a || !b) {
                continue;
            }
            if (cnt == cap) {
                cap *= 2;
                g2h_merge *nm = realloc(m, cap * sizeof(*m));
                if (nm == NULL) {
                    free(m);
                    return NULL;
                }
                m = nm;
            }
            m[cnt++] = (g2h_merge){scores ? scores[id] : -(float)id, (uint32_t)id, (uint32_t)json_integer_value(a),
                                   (uint32_t)json_integer_value(b), (uint32_t)k};
        }
    }
    if (m == NULL) {
        return NULL;
    }
    qsort(m, cnt, sizeof(*m), g2h_cmp_merge);
    json_t *arr = json_array();
    for (size_t i = 0; i < cnt; i++) {
        const char *t = text[m[i].id];
        json_t *pair = json_array();
        json_array_append_new(pair, json_stringn(t, m[i].split));
        json_array_append_new(pair, json_string(t + m[i].split));
        json_array_append_new(arr, pair);
    }
    free(m);
    return arr;
}

static json_t *g2h_added(uint64_t id, const char *content, bool special)
{
    return json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id, "content", content, "single_word",
                     0, "lstrip", 0, "rstrip", 0, "normalized", !special, "special", special);
}

strata_err gguf2hf_write_tokenizer(const gguf_file *f, const char *dir, strata_error *err)
{
    const gguf_kv *toks = gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_T_STRING);
    const gguf_kv *types_kv = gguf_get_arr(f, "tokenizer.ggml.token_type", GGUF_T_INT32);
    const gguf_kv *scores_kv = gguf_get_arr(f, "tokenizer.ggml.scores", GGUF_T_FLOAT32);
    const gguf_kv *merges_kv = gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_T_STRING);
    char model[32] = "", pre[64] = "default";
    gguf_get_str(f, "tokenizer.ggml.model", model, sizeof(model));
    gguf_get_str(f, "tokenizer.ggml.pre", pre, sizeof(pre));
    bool spm = strcmp(model, "llama") == 0;
    if (toks == NULL || (!spm && (strcmp(model, "gpt2") != 0 || merges_kv == NULL))) {
        return st_error(err, STRATA_ERR_UNSUPPORTED, "gguf2hf: tokenizer model '%s' cannot be exported", model);
    }
    uint64_t n = toks->v.arr.n;
    char **text = calloc(n, sizeof(char *));
    int32_t *types = calloc(n, sizeof(int32_t));
    float *scores = NULL;
    if (text == NULL || types == NULL) {
        free(text);
        free(types);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < n; i++) {
        text[i] = g2h_strndup(toks->v.arr.strs[i]);
        types[i] = G2H_NORMAL;
        if (types_kv != NULL && types_kv->v.arr.n == n) {
            memcpy(&types[i], types_kv->v.arr.data + 4 * i, 4);
        }
    }
    if (scores_kv != NULL && scores_kv->v.arr.n == n) {
        scores = malloc(n * sizeof(float));
        if (scores != NULL) {
            memcpy(scores, scores_kv->v.arr.data, n * sizeof(float));
        }
    }
    json_t *vocab = json_object(), *added = json_array();
    for (uint64_t i = 0; i < n; i++) {
        if (text[i] == NULL) {
            continue;
        }
        if (types[i] == G2H_UNUSED && g2h_is_pad(text[i], i)) {
            continue; /* the importer makes [PADn] again from vocab_size */
        }
        if (types[i] == G2H_CONTROL || types[i] == G2H_USER) {
            json_array_append_new(added, g2h_added(i, text[i], types[i] == G2H_CONTROL));
            if (!spm) {
                continue;
            }
        }
        if (spm && types[i] == G2H_UNKNOWN) {
            json_array_append_new(added, g2h_added(i, text[i], true));
        }
        json_object_set_new(vocab, text[i], json_integer((json_int_t)i));
    }
    json_t *merges;
    if (spm) {
        merges = g2h_spm_merges(text, types, scores, n, vocab);
    } else {
        merges = json_array();
        for (uint64_t i = 0; i < merges_kv->v.arr.n; i++) {
            gguf_str s = merges_kv->v.arr.strs[i];
            const char *sp = memchr(s.ptr, ' ', s.len);
            if (sp == NULL) {
                continue;
            }
            json_array_append_new(merges, json_pack("[s%, s%]", s.ptr, (size_t)(sp - s.ptr), sp + 1,
                                                    (size_t)(s.len - (uint64_t)(sp - s.ptr) - 1)));
        }
    }
    json_t *tok = json_object();
    json_object_set_new(tok, "version", json_string("1.0"));
    json_object_set_new(tok, "truncation", json_null());
    json_object_set_new(tok, "padding", json_null());
    json_object_set_new(tok, "added_tokens", added);
    char unk_text[64] = "";
    for (uint64_t i = 0; i < n; i++) {
        if (types[i] == G2H_UNKNOWN && text[i] != NULL) {
            snprintf(unk_text, sizeof(unk_text), "%s", text[i]);
            break;
        }
    }
    if (spm) {
        bool prefix = true;
        gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &prefix);
        json_t *norm = json_array();
        if (prefix) {
            json_array_append_new(norm, json_pack("{s:s, s:s}", "type", "Prepend", "prepend", "\xe2\x96\x81"));
        }
        json_array_append_new(norm, json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", " ",
                                              "content", "\xe2\x96\x81"));
        json_object_set_new(tok, "normalizer", json_pack("{s:s, s:o}", "type", "Sequence", "normalizers", norm));
        json_object_set_new(tok, "pre_tokenizer", json_null());
        json_object_set_new(tok, "post_processor", json_null());
        json_object_set_new(
            tok, "decoder",
            json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]}", "type", "Sequence",
                      "decoders", "type", "Replace", "pattern", "String", "\xe2\x96\x81", "content", " ", "type",
                      "ByteFallback", "type", "Fuse", "type", "Strip", "content", " ", "start", 1, "stop", 0));
    } else {
        json_object_set_new(tok, "normalizer", json_null());
        const char *re = strcmp(pre, "llama-bpe") == 0 || strcmp(pre, "llama3") == 0 ? g2h_llama3_re
                         : strcmp(pre, "qwen2") == 0                                 ? g2h_qwen2_re
                                                                                     : NULL;
        if (re != NULL) {
            json_object_set_new(
                tok, "pre_tokenizer",
                json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence",
                          "pretokenizers", "type", "Split", "pattern", "Regex", re, "behavior", "Isolated", "invert",
                          0, "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 0));
        } else {
            json_object_set_new(tok, "pre_tokenizer",
                                json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                          "trim_offsets", 1, "use_regex", 1));
        }
        json_object_set_new(tok, "post_processor", json_null());
        json_object_set_new(tok, "decoder", json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel",
                                                      "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1));
    }
    json_t *m = json_object();
    json_object_set_new(m, "type", json_string("BPE"));
    json_object_set_new(m, "dropout", json_null());
    json_object_set_new(m, "unk_token", spm && unk_text[0] ? json_string(unk_text) : json_null());
    json_object_set_new(m, "continuing_subword_prefix", json_null());
    json_object_set_new(m, "end_of_word_suffix", json_null());
    json_object_set_new(m, "fuse_unk", json_boolean(spm));
    json_object_set_new(m, "byte_fallback", json_boolean(spm));
    json_object_set_new(m, "ignore_merges", json_false());
    json_object_set_new(m, "vocab", vocab);
    json_object_set_new(m, "merges", merges ? merges : json_array());
    json_object_set_new(tok, "model", m);
    strata_err rc = g2h_dump(tok, dir, "tokenizer.json", err);
    json_decref(tok);

    /* tokenizer_config.json: special tokens, add_bos/eos, chat template */
    json_t *tc = json_object();
    static const char *const sp_keys[][2] = {{"tokenizer.ggml.bos_token_id", "bos_token"},
                                             {"tokenizer.ggml.eos_token_id", "eos_token"},
                                             {"tokenizer.ggml.unknown_token_id", "unk_token"},
                                             {"tokenizer.ggml.padding_token_id", "pad_token"}};
    for (size_t k = 0; k < sizeof(sp_keys) / sizeof(sp_keys[0]); k++) {
        uint64_t id;
        if (gguf_get_u64(f, sp_keys[k][0], &id) && id < n && text[id] != NULL) {
            json_object_set_new(tc, sp_keys[k][1], json_string(text[id]));
        }
    }
    bool b;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b)) {
        json_object_set_new(tc, "add_bos_token", json_boolean(b));
    }
    if (gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &b)) {
        json_object_set_new(tc, "add_eos_token", json_boolean(b));
    }
    const gguf_kv *tmpl = gguf_find_kv(f, "tokenizer.chat_template");
    if (tmpl != NULL && tmpl->type == GGUF_T_STRING) {
        json_object_set_new(tc, "chat_template", json_stringn(tmpl->v.str.ptr, tmpl->v.str.len));
    }
    if (rc == STRATA_OK) {
        rc = g2h_dump(tc, dir, "tokenizer_config.json", err);
    }
    json_decref(tc);
    for (uint64_t i = 0; i < n; i++) {
        free(text[i]);
    }
    free(text);
    free(types);
    free(scores);
    return rc;
}

/* -------------------------------------------------------------- weights -- */

typedef struct {
    char hf[96];
    const gguf_tensor *t;
    int permute_heads;   /* > 0: llama Q/K back to HF's rotary layout */
    int dtype;           /* ST_F32 / ST_F16 / ST_BF16 */
    uint64_t nbytes;
    int shard;
} g2h_tensor;

static const char *const g2h_names[][2] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

static bool g2h_map_name(const char *gg, char *hf, size_t cap)
{
    int layer, used = 0;
    if (strcmp(gg, "token_embd.weight") == 0) {
        snprintf(hf, cap, "model.embed_tokens.weight");
    } else if (strcmp(gg, "output_norm.weight") == 0) {
        snprintf(hf, cap, "model.norm.weight");
    } else if (strcmp(gg, "output.weight") == 0) {
        snprintf(hf, cap, "lm_head.weight");
    } else if (sscanf(gg, "blk.%d.%n", &layer, &used) == 1 && used > 0) {
        for (size_t k = 0; k < sizeof(g2h_names) / sizeof(g2h_names[0]); k++) {
            if (strcmp(gg + used, g2h_names[k][0]) == 0) {
                snprintf(hf, cap, "model.layers.%d.%s", layer, g2h_names[k][1]);
                return true;
            }
        }
        return false;
    } else {
        return false;
    }
    return true;
}

static const char *g2h_dtype_name(int t)
{
    return t == ST_F32 ? "F32" : t == ST_F16 ? "F16" : "BF16";
}

/* Writes one tensor's HF bytes to fp. */
static strata_err g2h_write_tensor(FILE *fp, const g2h_tensor *x, strata_error *err)
{
    const gguf_tensor *t = x->t;
    int64_t n = t->ne[0], rows = t->n_dims >= 2 ? t->ne[1] : 1;
    size_t es = x->dtype == ST_F32 ? 4 : 2;
    size_t src_rb = st_row_bytes(t->type, n);
    float *row = malloc((size_t)n * sizeof(float));
    uint8_t *out = malloc((size_t)n * es);
    float *vec = NULL;
    strata_err rc = STRATA_OK;
    if (row == NULL || out == NULL) {
        rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
        goto done;
    }
    bool vec_perm = t->n_dims == 1 && x->permute_heads > 0;
    if (vec_perm) {
        vec = malloc((size_t)n * sizeof(float));
        if (vec == NULL) {
            rc = st_error(err, STRATA_ERR_NOMEM, "out of memory");
            goto done;
        }
        st_dequant_row(t->type, t->data, vec, n);
    }
    for (int64_t s = 0; s < (vec_perm ? 1 : rows); s++) {
        int64_t r = s;
        if (x->permute_heads > 0 && !vec_perm) {
            /* HF row s = h*hd + half*hd/2 + j holds GGUF row h*hd + 2j + half */
            int64_t hd = rows / x->permute_heads, h = s / hd, half = (s % hd) / (hd / 2), j = (s % hd) % (hd / 2);
            r = h * hd + 2 * j + half;
        }
        if (vec_perm) {
            int64_t hd = n / x->permute_heads;
            for (int64_t i = 0; i < n; i++) {
                int64_t h = i / hd, half = (i % hd) / (hd / 2), j = (i % hd) % (hd / 2);
                row[i] = vec[h * hd + 2 * j + half];
            }
        } else if ((int)t->type == x->dtype) {
            memcpy(out, t->data + (size_t)r * src_rb, (size_t)n * es);
        } else {
            st_dequant_row(t->type, t->data + (size_t)r * src_rb, row, n);
        }
        if (vec_perm || (int)t->type != x->dtype) {
            for (int64_t i = 0; i < n; i++) {
                if (x->dtype == ST_F32) {
                    memcpy(out + 4 * i, &row[i], 4);
                } else {
                    uint16_t h = x->dtype == ST_F16 ? st_fp32_to_fp16(row[i]) : st_fp32_to_bf16(row[i]);
                    memcpy(out + 2 * i, &h, 2);
                }
            }
        }
        if (fwrite(out, es, (size_t)n, fp) != (size_t)n) {
            rc = st_error(err, STRATA_ERR_IO, "write failed: %s", strerror(errno));
            goto done;
        }
    }
done:
    free(row);
    free(out);
    free(vec);
    return rc;
}

static strata_err g2h_write_shard(const char *dir, const char *file, g2h_tensor *ts, int nt, int shard,
                                  strata_error *err)
{
    json_t *h = json_object();
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        if (ts[i].shard != shard) {
            continue;
        }
        const gguf_tensor *t = ts[i].t;
        json_t *shape = t->n_dims >= 2 ? json_pack("[I, I]", (json_int_t)t->ne[1], (json_int_t)t->ne[0])
                                       : json_pack("[I]", (json_int_t)t->ne[0]);
        json_object_set_new(h, ts[i].hf,
                            json_pack("{s:s, s:o, s:[I, I]}", "dtype", g2h_dtype_name(ts[i].dtype), "shape", shape,
                                      "data_offsets", (json_int_t)off, (json_int_t)(off + ts[i].nbytes)));
        off += ts[i].nbytes;
    }
    char *hs = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (hs == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    size_t hl = strlen(hs), padded = (hl + 7) & ~(size_t)7;
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *fp = fopen(path, "wb");
    strata_err rc = STRATA_OK;
    if (fp == NULL) {
        free(hs);
        return st_error(err, STRATA_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    }
    uint8_t len[8];
    for (int i = 0; i < 8; i++) {
        len[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    }
    fwrite(len, 1, 8, fp);
    fwrite(hs, 1, hl, fp);
    for (size_t i = hl; i < padded; i++) {
        fputc(' ', fp);
    }
    free(hs);
    for (int i = 0; i < nt && rc == STRATA_OK; i++) {
        if (ts[i].shard == shard) {
            rc = g2h_write_tensor(fp, &ts[i], err);
        }
    }
    if (fclose(fp) != 0 && rc == STRATA_OK) {
        rc = st_error(err, STRATA_ERR_IO, "cannot write %s", path);
    }
    return rc;
}

static strata_err g2h_config(const gguf_file *f, const char *arch, const char *dir, bool tied, strata_error *err)
{
    char k[128];
#define G2H_KEY(s) (snprintf(k, sizeof(k), "%s.%s", arch, s), k)
    int64_t v;
    double d;
    json_t *c = json_object();
    const char *cls = strcmp(arch, "qwen2") == 0 ? "Qwen2ForCausalLM"
                      : strcmp(arch, "qwen3") == 0 ? "Qwen3ForCausalLM"
                                                   : "LlamaForCausalLM";
    json_object_set_new(c, "architectures", json_pack("[s]", cls));
    json_object_set_new(c, "model_type", json_string(strcmp(arch, "mistral") == 0 ? "llama" : arch));
    static const char *const ints[][2] = {{"block_count", "num_hidden_layers"},
                                          {"embedding_length", "hidden_size"},
                                          {"feed_forward_length", "intermediate_size"},
                                          {"attention.head_count", "num_attention_heads"},
                                          {"attention.head_count_kv", "num_key_value_heads"},
                                          {"attention.key_length", "head_dim"},
                                          {"context_length", "max_position_embeddings"}};
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        if (gguf_get_i64(f, G2H_KEY(ints[i][0]), &v)) {
            json_object_set_new(c, ints[i][1], json_integer(v));
        }
    }
    if (gguf_get_f64(f, G2H_KEY("attention.layer_norm_rms_epsilon"), &d)) {
        json_object_set_new(c, "rms_norm_eps", json_real(d));
    }
    if (gguf_get_f64(f, G2H_KEY("rope.freq_base"), &d)) {
        json_object_set_new(c, "rope_theta", json_real(d));
    }
    char type[32] = "";
    gguf_get_str(f, G2H_KEY("rope.scaling.type"), type, sizeof(type));
    if (strcmp(type, "linear") == 0 || strcmp(type, "yarn") == 0) {
        json_t *rs = json_object();
        json_object_set_new(rs, "rope_type", json_string(type));
        if (gguf_get_f64(f, G2H_KEY("rope.scaling.factor"), &d)) {
            json_object_set_new(rs, "factor", json_real(d));
        }
        if (gguf_get_i64(f, G2H_KEY("rope.scaling.original_context_length"), &v)) {
            json_object_set_new(rs, "original_max_position_embeddings", json_integer(v));
        }
        if (gguf_get_f64(f, G2H_KEY("rope.scaling.attn_factor"), &d)) {
            json_object_set_new(rs, "attention_factor", json_real(d));
        }
        if (gguf_get_f64(f, G2H_KEY("rope.scaling.yarn_beta_fast"), &d)) {
            json_object_set_new(rs, "beta_fast", json_real(d));
        }
        if (gguf_get_f64(f, G2H_KEY("rope.scaling.yarn_beta_slow"), &d)) {
            json_object_set_new(rs, "beta_slow", json_real(d));
        }
        json_object_set_new(c, "rope_scaling", rs);
    }
#undef G2H_KEY
    const gguf_kv *toks = gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_T_STRING);
    json_object_set_new(c, "vocab_size", json_integer(toks ? (json_int_t)toks->v.arr.n : 0));
    json_object_set_new(c, "tie_word_embeddings", json_boolean(tied));
    uint64_t id;
    if (gguf_get_u64(f, "tokenizer.ggml.bos_token_id", &id)) {
        json_object_set_new(c, "bos_token_id", json_integer((json_int_t)id));
    }
    if (gguf_get_u64(f, "tokenizer.ggml.eos_token_id", &id)) {
        json_object_set_new(c, "eos_token_id", json_integer((json_int_t)id));
    }
    json_object_set_new(c, "torch_dtype", json_string("float32"));
    strata_err rc = g2h_dump(c, dir, "config.json", err);
    json_decref(c);
    return rc;
}

strata_err gguf2hf_export(const char *gguf_path, const char *dir, const gguf2hf_opts *o, strata_error *err)
{
    gguf_file *f = NULL;
    strata_err rc = gguf_open(gguf_path, true, &f, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        gguf_close(f);
        return st_error(err, STRATA_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    }
    if ((rc = gguf2hf_write_tokenizer(f, dir, err)) != STRATA_OK || o->tokenizer_only) {
        gguf_close(f);
        return rc;
    }
    char arch[32] = "";
    gguf_get_str(f, "general.architecture", arch, sizeof(arch));
    int64_t n_head = 0, n_head_kv = 0;
    char k[96];
    snprintf(k, sizeof(k), "%s.attention.head_count", arch);
    gguf_get_i64(f, k, &n_head);
    snprintf(k, sizeof(k), "%s.attention.head_count_kv", arch);
    if (!gguf_get_i64(f, k, &n_head_kv)) {
        n_head_kv = n_head;
    }
    bool llama = strcmp(arch, "llama") == 0 || strcmp(arch, "mistral") == 0;
    int nt = 0, n_shards = o->n_shards > 1 ? o->n_shards : 1;
    g2h_tensor *ts = calloc(f->n_tensors + 1, sizeof(*ts));
    if (ts == NULL) {
        gguf_close(f);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char gg[96];
        snprintf(gg, sizeof(gg), "%.*s", (int)ST_MIN(t->name.len, 95), t->name.ptr);
        if (strcmp(gg, "rope_freqs.weight") == 0) {
            continue; /* made again from rope_scaling (not exported: llama3 scaling is lost) */
        }
        g2h_tensor *x = &ts[nt];
        if (!g2h_map_name(gg, x->hf, sizeof(x->hf))) {
            rc = st_error(err, STRATA_ERR_UNSUPPORTED, "gguf2hf: no HF name for tensor '%s'", gg);
            break;
        }
        x->t = t;
        if (llama && strstr(gg, ".attn_q.") != NULL) {
            x->permute_heads = (int)n_head;
        } else if (llama && strstr(gg, ".attn_k.") != NULL) {
            x->permute_heads = (int)n_head_kv;
        }
        x->dtype = o->dtype >= 0                                                      ? o->dtype
                   : (t->type == ST_F32 || t->type == ST_F16 || t->type == ST_BF16) ? (int)t->type
                                                                                      : ST_F32;
        uint64_t ne = (uint64_t)t->ne[0] * (uint64_t)(t->n_dims >= 2 ? t->ne[1] : 1);
        x->nbytes = ne * (x->dtype == ST_F32 ? 4 : 2);
        x->shard = nt % n_shards;
        nt++;
    }
    if (rc == STRATA_OK) {
        rc = g2h_config(f, arch, dir, gguf_find_tensor(f, "output.weight") == NULL, err);
    }
    json_t *map = json_object();
    uint64_t total = 0;
    for (int s = 0; s < n_shards && rc == STRATA_OK; s++) {
        char file[128];
        if (n_shards == 1) {
            snprintf(file, sizeof(file), "model.safetensors");
        } else {
            snprintf(file, sizeof(file), "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        }
        rc = g2h_write_shard(dir, file, ts, nt, s, err);
        for (int i = 0; i < nt; i++) {
            if (ts[i].shard == s) {
                json_object_set_new(map, ts[i].hf, json_string(file));
                total += ts[i].nbytes;
            }
        }
    }
    if (rc == STRATA_OK && n_shards > 1) {
        json_t *idx = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
        rc = g2h_dump(idx, dir, "model.safetensors.index.json", err);
        json_decref(idx);
    }
    json_decref(map);
    free(ts);
    gguf_close(f);
    return rc;
}

#ifndef GGUF2HF_NO_MAIN
int main(int argc, char **argv)
{
    gguf2hf_opts o = {.dtype = -1, .n_shards = 1};
    const char *in = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) {
            const char *d = argv[++i];
            o.dtype = strcmp(d, "F32") == 0 ? ST_F32 : strcmp(d, "F16") == 0 ? ST_F16 : strcmp(d, "BF16") == 0 ? ST_BF16 : -1;
        } else if (strcmp(argv[i], "--shards") == 0 && i + 1 < argc) {
            o.n_shards = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--tokenizer-only") == 0) {
            o.tokenizer_only = true;
        } else if (in == NULL) {
            in = argv[i];
        } else if (out == NULL) {
            out = argv[i];
        } else {
            in = NULL;
            break;
        }
    }
    if (in == NULL || out == NULL) {
        fprintf(stderr, "usage: gguf2hf IN.gguf OUT_DIR [--dtype keep|F32|F16|BF16] [--shards N] [--tokenizer-only]\n");
        return 2;
    }
    strata_error err = {0};
    if (gguf2hf_export(in, out, &o, &err) != STRATA_OK) {
        fprintf(stderr, "gguf2hf: %s\n", err.msg);
        return 1;
    }
    return 0;
}
#endif
