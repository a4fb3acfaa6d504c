/* Tokenizer: vocabulary loading and llama.cpp-identical (de)tokenization.
 *
 * Reference: llama.cpp src/llama-vocab.cpp (llama_vocab::impl::load,
 * tokenizer_st_partition, llm_tokenizer_spm_session, llm_tokenizer_bpe_session,
 * token_to_piece, detokenize). The structure follows it step by step so the
 * two can be read side by side; where llama.cpp depends on unordered_map
 * iteration order (picking EOT among several candidates) we take the first
 * candidate in its list order instead.
 */
#include "tokenizer.h"
#include "unicode.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama_token_attr bits */
enum {
    ATTR_UNDEFINED = 0,
    ATTR_UNKNOWN = 1 << 0,
    ATTR_UNUSED = 1 << 1,
    ATTR_NORMAL = 1 << 2,
    ATTR_CONTROL = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE = 1 << 5,
    ATTR_NORMALIZED = 1 << 6,
    ATTR_LSTRIP = 1 << 7,
    ATTR_RSTRIP = 1 << 8,
};

typedef enum { VOCAB_SPM, VOCAB_BPE } vocab_kind;

struct st_tokenizer {
    vocab_kind kind;
    st_pretok pre;
    int32_t n_vocab;

    char *text;           /* every token's text, each NUL-terminated */
    uint32_t *text_off;   /* (n_vocab) offset into text */
    uint32_t *text_len;   /* (n_vocab) bytes, NUL excluded */
    float *score;         /* (n_vocab) SPM merge priority */
    uint16_t *attr;       /* (n_vocab) ATTR_* bits */
    uint8_t *eog;         /* (n_vocab) 1 if end-of-generation */
    char *piece;          /* every token rendered with special=true, NUL-terminated */
    uint32_t *piece_off;  /* (n_vocab) */
    uint32_t *piece_len;  /* (n_vocab) */

    uint32_t *tok_slots;  /* (tok_mask + 1) text -> id + 1, 0 = empty; open addressing */
    size_t tok_mask;

    char *merge_text;     /* merges' "first second" strings, concatenated */
    uint32_t *merge_off;  /* (n_merges) */
    uint32_t *merge_len1; /* (n_merges) bytes of first */
    uint32_t *merge_len2; /* (n_merges) bytes of second */
    uint32_t n_merges;
    uint32_t *merge_slots; /* (merge_mask + 1) (first, second) -> rank + 1 */
    size_t merge_mask;

    strata_token byte_tok[256]; /* SPM byte fallback: <0xXX> (or the byte itself), -1 if none */
    strata_token *specials;     /* (n_specials) control/user-defined/unknown, longest text first */
    size_t n_specials;

    strata_token bos, eos, eot, eom, unk, sep, pad, mask;
    strata_token fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    bool add_bos, add_eos, add_space_prefix, clean_spaces, ignore_merges;

    char *chat_template; /* NULL if absent */
};

/* ---------------------------------------------------------- hashing -- */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv_update(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= FNV_PRIME;
    }
    return h;
}

static uint64_t hash_pair(const char *a, size_t na, const char *b, size_t nb)
{
    uint64_t h = fnv_update(FNV_OFFSET, a, na);
    h ^= 0x1FF; /* separator no byte can produce */
    h *= FNV_PRIME;
    return fnv_update(h, b, nb);
}

static size_t table_size(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) {
        cap *= 2;
    }
    return cap;
}

static strata_token text_to_token(const st_tokenizer *t, const char *s, size_t n)
{
    size_t i = (size_t)fnv_update(FNV_OFFSET, s, n) & t->tok_mask;
    for (uint32_t v; (v = t->tok_slots[i]) != 0; i = (i + 1) & t->tok_mask) {
        uint32_t id = v - 1;
        if (t->text_len[id] == n && memcmp(t->text + t->text_off[id], s, n) == 0) {
            return (strata_token)id;
        }
    }
    return -1;
}

/* Later duplicates replace earlier ones, as token_to_id[word] = i does. */
static void token_table_insert(st_tokenizer *t, uint32_t id)
{
    const char *s = t->text + t->text_off[id];
    size_t n = t->text_len[id];
    size_t i = (size_t)fnv_update(FNV_OFFSET, s, n) & t->tok_mask;
    for (uint32_t v; (v = t->tok_slots[i]) != 0; i = (i + 1) & t->tok_mask) {
        if (t->text_len[v - 1] == n && memcmp(t->text + t->text_off[v - 1], s, n) == 0) {
            break;
        }
    }
    t->tok_slots[i] = id + 1;
}

static int find_bpe_rank(const st_tokenizer *t, const char *a, size_t na, const char *b, size_t nb)
{
    size_t i = (size_t)hash_pair(a, na, b, nb) & t->merge_mask;
    for (uint32_t v; (v = t->merge_slots[i]) != 0; i = (i + 1) & t->merge_mask) {
        uint32_t r = v - 1;
        const char *m = t->merge_text + t->merge_off[r];
        if (t->merge_len1[r] == na && t->merge_len2[r] == nb && memcmp(m, a, na) == 0 &&
            memcmp(m + na + 1, b, nb) == 0) {
            return (int)r;
        }
    }
    return -1;
}

/* The first rank of a pair wins, as bpe_ranks.emplace does. */
static void merge_table_insert(st_tokenizer *t, uint32_t r)
{
    const char *m = t->merge_text + t->merge_off[r];
    size_t na = t->merge_len1[r], nb = t->merge_len2[r];
    if (find_bpe_rank(t, m, na, m + na + 1, nb) >= 0) {
        return;
    }
    size_t i = (size_t)hash_pair(m, na, m + na + 1, nb) & t->merge_mask;
    while (t->merge_slots[i] != 0) {
        i = (i + 1) & t->merge_mask;
    }
    t->merge_slots[i] = r + 1;
}

/* ----------------------------------------------------- growable buffers -- */

typedef struct {
    strata_token *v;
    size_t n, cap;
    bool oom;
} tokvec;

static void tv_push(tokvec *tv, strata_token tok)
{
    if (tv->n == tv->cap) {
        size_t cap = tv->cap ? tv->cap * 2 : 64;
        strata_token *v = realloc(tv->v, cap * sizeof(*v));
        if (v == NULL) {
            tv->oom = true;
            return;
        }
        tv->v = v;
        tv->cap = cap;
    }
    tv->v[tv->n++] = tok;
}

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} strbuf;

static void sb_append(strbuf *sb, const char *s, size_t n)
{
    if (sb->n + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;
        while (cap < sb->n + n + 1) {
            cap *= 2;
        }
        char *p = realloc(sb->p, cap);
        if (p == NULL) {
            sb->oom = true;
            return;
        }
        sb->p = p;
        sb->cap = cap;
    }
    memcpy(sb->p + sb->n, s, n);
    sb->n += n;
    sb->p[sb->n] = '\0';
}

/* ------------------------------------------------------------- pieces -- */

static const char *tok_text(const st_tokenizer *t, strata_token id)
{
    return t->text + t->text_off[id];
}

/* llama_decode_text: map byte-level BPE text back to bytes. */
static void decode_bpe_text(const char *s, size_t n, strbuf *out)
{
    size_t off = 0;
    while (off < n) {
        uint32_t cpt = st_utf8_decode(s, n, &off);
        int b = st_gpt2_cpt_to_byte(cpt);
        if (b >= 0) {
            char c = (char)b;
            sb_append(out, &c, 1);
            continue;
        }
        char utf8[4], hex[3];
        size_t k = st_utf8_encode(cpt, utf8);
        sb_append(out, "[UNK_BYTE_0x", 12);
        for (size_t i = 0; i < k; i++) {
            snprintf(hex, sizeof(hex), "%02x", (uint8_t)utf8[i]);
            sb_append(out, hex, 2);
        }
        sb_append(out, s, n);
        sb_append(out, "]", 1);
    }
}

/* llama_vocab::impl::token_to_piece(special = true), uncached. */
static void render_piece(const st_tokenizer *t, strata_token id, strbuf *out)
{
    const uint16_t attr = t->attr[id];
    const char *s = tok_text(t, id);
    size_t n = t->text_len[id];
    if (attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED)) {
        sb_append(out, s, n);
    } else if (attr & ATTR_NORMAL) {
        if (t->kind == VOCAB_SPM) { /* U+2581 -> ' ' */
            for (size_t i = 0; i < n; i++) {
                if (i + 2 < n && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                    sb_append(out, " ", 1);
                    i += 2;
                } else {
                    sb_append(out, s + i, 1);
                }
            }
        } else {
            decode_bpe_text(s, n, out);
        }
    } else if ((attr & ATTR_BYTE) && n >= 5) {
        /* "<0xXX>": strtol of text[3..5] */
        char hex[3] = {s[3], s[4], 0};
        char c = (char)strtol(hex, NULL, 16);
        sb_append(out, &c, 1);
    }
}

/* ------------------------------------------------------------ loading -- */

static const gguf_kv *find_typed(const gguf_file *f, const char *key, gguf_type type)
{
    const gguf_kv *kv = gguf_find_kv(f, key);
    return (kv != NULL && kv->type == type) ? kv : NULL;
}

/* Pre-tokenizer names llama.cpp knows whose regexes we implement. */
typedef struct {
    const char *name;
    st_pretok pre;
    bool ignore_merges, add_bos, keep_spaces, no_bos;
} pre_entry;

static const pre_entry k_pre_table[] = {
    {"default", ST_PRE_DEFAULT, false, false, false, false},
    {"llama3", ST_PRE_LLAMA3, true, true, false, false},
    {"llama-v3", ST_PRE_LLAMA3, true, true, false, false},
    {"llama-bpe", ST_PRE_LLAMA3, true, true, false, false},
    {"falcon3", ST_PRE_LLAMA3, true, true, false, false},
    {"falcon-h1", ST_PRE_LLAMA3, true, true, false, false},
    {"pixtral", ST_PRE_LLAMA3, true, true, false, false},
    {"midm-2.0", ST_PRE_LLAMA3, true, true, false, false},
    {"lfm2", ST_PRE_LLAMA3, true, true, false, false},
    {"jina-v5-nano", ST_PRE_LLAMA3, true, true, false, false},
    {"dbrx", ST_PRE_LLAMA3, false, false, false, false},
    {"smaug-bpe", ST_PRE_LLAMA3, false, false, false, false},
    {"glm4", ST_PRE_LLAMA3, false, false, false, true},
    {"chatglm-bpe", ST_PRE_LLAMA3, false, false, false, true},
    {"qwen2", ST_PRE_QWEN2, false, false, true, false},
    {"deepseek-r1-qwen", ST_PRE_QWEN2, false, false, true, false},
    {"kormo", ST_PRE_QWEN2, false, false, true, false},
    {"f2llmv2", ST_PRE_QWEN2, false, false, true, false},
    {"stablelm2", ST_PRE_QWEN2, false, false, false, false},
    {"megrez", ST_PRE_QWEN2, false, false, false, false},
    {"hunyuan", ST_PRE_QWEN2, false, false, true, false},
    {"grok-2", ST_PRE_QWEN2, false, false, true, false},
    {"solar-open", ST_PRE_QWEN2, false, false, true, false},
    {"qwen35", ST_PRE_QWEN35, false, false, true, false},
    {"gpt-2", ST_PRE_GPT2, false, false, false, false},
    {"phi-2", ST_PRE_GPT2, false, false, false, false},
    {"jina-es", ST_PRE_GPT2, false, false, false, false},
    {"jina-de", ST_PRE_GPT2, false, false, false, false},
    {"gigachat", ST_PRE_GPT2, false, false, false, false},
    {"jina-v2-es", ST_PRE_GPT2, false, false, false, false},
    {"jina-v2-de", ST_PRE_GPT2, false, false, false, false},
    {"a.x-4.0", ST_PRE_GPT2, false, false, false, false},
    {"mellum", ST_PRE_GPT2, false, false, false, false},
    {"modern-bert", ST_PRE_GPT2, false, false, false, false},
    {"jina-v1-en", ST_PRE_GPT2, false, false, false, false},
    {"jina-v2-code", ST_PRE_GPT2, false, false, false, false},
    {"roberta-bpe", ST_PRE_GPT2, false, false, false, false},
    {"mpt", ST_PRE_GPT2, false, false, false, false},
    {"olmo", ST_PRE_GPT2, false, false, false, false},
    {"jais", ST_PRE_GPT2, false, false, false, false},
    {"exaone4", ST_PRE_GPT2, false, false, false, false},
    {"trillion", ST_PRE_GPT2, false, false, true, false},
    {"granite-docling", ST_PRE_GPT2, false, false, true, false},
    {"starcoder", ST_PRE_STARCODER, false, false, false, false},
    {"refact", ST_PRE_STARCODER, false, false, false, false},
    {"command-r", ST_PRE_STARCODER, false, false, true, false},
    {"smollm", ST_PRE_STARCODER, false, false, true, false},
    {"codeshell", ST_PRE_STARCODER, false, false, false, false},
    {"exaone", ST_PRE_STARCODER, false, false, false, false},
    {"minerva-7b", ST_PRE_STARCODER, false, false, false, false},
    {"mellum2", ST_PRE_STARCODER, false, false, false, false},
};

static strata_err load_tokens(st_tokenizer *t, const gguf_file *f, strata_error *err)
{
    const gguf_kv *tokens = gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_T_STRING);
    if (tokens == NULL) {
        return st_error(err, STRATA_ERR_FORMAT, "tokenizer.ggml.tokens missing or not a string array");
    }
    uint64_t n = tokens->v.arr.n;
    if (n == 0 || n > INT32_MAX - 1) {
        return st_error(err, STRATA_ERR_FORMAT, "tokenizer.ggml.tokens has %llu entries", (unsigned long long)n);
    }
    t->n_vocab = (int32_t)n;

    const gguf_kv *scores = gguf_find_kv(f, "tokenizer.ggml.scores");
    if (scores != NULL && (scores->type != GGUF_T_ARRAY ||
                           (scores->v.arr.type != GGUF_T_FLOAT32 && scores->v.arr.type != GGUF_T_INT32))) {
        return st_error(err, STRATA_ERR_FORMAT, "invalid gguf type for tokenizer.ggml.scores");
    }
    if (scores != NULL && scores->v.arr.n < n) {
        return st_error(err, STRATA_ERR_FORMAT, "tokenizer.ggml.scores has %llu entries for %llu tokens",
                        (unsigned long long)scores->v.arr.n, (unsigned long long)n);
    }
    const gguf_kv *types = gguf_find_kv(f, "tokenizer.ggml.token_type");
    if (types != NULL && (types->type != GGUF_T_ARRAY || types->v.arr.type != GGUF_T_INT32)) {
        return st_error(err, STRATA_ERR_FORMAT, "invalid gguf type for tokenizer.ggml.token_type");
    }
    if (types != NULL && types->v.arr.n < n) {
        return st_error(err, STRATA_ERR_FORMAT, "tokenizer.ggml.token_type has %llu entries for %llu tokens",
                        (unsigned long long)types->v.arr.n, (unsigned long long)n);
    }

    /* empty tokens become "[EMPTY_<id>]" (at most 22 bytes) */
    uint64_t pool = 0;
    for (uint64_t i = 0; i < n; i++) {
        pool += (tokens->v.arr.strs[i].len ? tokens->v.arr.strs[i].len : 22) + 1;
    }
    if (pool > UINT32_MAX) {
        return st_error(err, STRATA_ERR_UNSUPPORTED, "vocabulary text is %llu bytes", (unsigned long long)pool);
    }
    t->text = malloc(pool);
    t->text_off = st_malloc_array(n, sizeof(uint32_t));
    t->text_len = st_malloc_array(n, sizeof(uint32_t));
    t->score = st_malloc_array(n, sizeof(float));
    t->attr = st_malloc_array(n, sizeof(uint16_t));
    t->eog = st_calloc(n, 1);
    t->tok_mask = table_size(n) - 1;
    t->tok_slots = st_calloc(t->tok_mask + 1, sizeof(uint32_t));
    if (!t->text || !t->text_off || !t->text_len || !t->score || !t->attr || !t->eog || !t->tok_slots) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory for a %llu-token vocabulary", (unsigned long long)n);
    }

    uint32_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        gguf_str s = tokens->v.arr.strs[i];
        t->text_off[i] = off;
        if (s.len == 0) {
            int k = snprintf(t->text + off, 22, "[EMPTY_%u]", i);
            t->text_len[i] = (uint32_t)k;
        } else {
            memcpy(t->text + off, s.ptr, s.len);
            t->text_len[i] = (uint32_t)s.len;
        }
        off += t->text_len[i];
        t->text[off++] = '\0';

        t->score[i] = 0.0f;
        if (scores != NULL && scores->v.arr.type == GGUF_T_FLOAT32) {
            memcpy(&t->score[i], scores->v.arr.data + 4 * (size_t)i, 4);
        } else if (scores != NULL) {
            int32_t v;
            memcpy(&v, scores->v.arr.data + 4 * (size_t)i, 4);
            t->score[i] = (float)v;
        }

        t->attr[i] = ATTR_NORMAL;
        if (types != NULL) {
            int32_t ty;
            memcpy(&ty, types->v.arr.data + 4 * (size_t)i, 4);
            switch (ty) {
            case 1: t->attr[i] = ATTR_NORMAL; break;
            case 2: t->attr[i] = ATTR_UNKNOWN; break;
            case 3: t->attr[i] = ATTR_CONTROL; break;
            case 4: t->attr[i] = ATTR_USER_DEFINED; break;
            case 5: t->attr[i] = ATTR_UNUSED; break;
            case 6: t->attr[i] = ATTR_BYTE; break;
            default: t->attr[i] = ATTR_UNDEFINED; break;
            }
        }
        token_table_insert(t, i);
    }
    return STRATA_OK;
}

static strata_err load_merges(st_tokenizer *t, const gguf_file *f, strata_error *err)
{
    const gguf_kv *merges = gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_T_STRING);
    if (merges == NULL) {
        return st_error(err, STRATA_ERR_FORMAT, "cannot find tokenizer merges (tokenizer.ggml.merges) in model file");
    }
    uint64_t n = merges->v.arr.n, pool = 0;
    if (n > INT32_MAX - 1) {
        return st_error(err, STRATA_ERR_FORMAT, "tokenizer.ggml.merges has %llu entries", (unsigned long long)n);
    }
    for (uint64_t i = 0; i < n; i++) {
        pool += merges->v.arr.strs[i].len + 1;
    }
    if (pool > UINT32_MAX) {
        return st_error(err, STRATA_ERR_UNSUPPORTED, "merges text is %llu bytes", (unsigned long long)pool);
    }
    t->n_merges = (uint32_t)n;
    t->merge_text = malloc(pool + 1);
    t->merge_off = st_malloc_array(n, sizeof(uint32_t));
    t->merge_len1 = st_malloc_array(n, sizeof(uint32_t));
    t->merge_len2 = st_malloc_array(n, sizeof(uint32_t));
    t->merge_mask = table_size(n) - 1;
    t->merge_slots = st_calloc(t->merge_mask + 1, sizeof(uint32_t));
    if (!t->merge_text || !t->merge_off || !t->merge_len1 || !t->merge_len2 || !t->merge_slots) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory for %llu merges", (unsigned long long)n);
    }
    uint32_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        gguf_str s = merges->v.arr.strs[i];
        memcpy(t->merge_text + off, s.ptr, s.len);
        t->merge_text[off + s.len] = '\0';
        t->merge_off[i] = off;
        /* split at the first space after position 0; none: both halves empty */
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        t->merge_len1[i] = sp ? (uint32_t)(sp - s.ptr) : 0;
        t->merge_len2[i] = sp ? (uint32_t)(s.len - t->merge_len1[i] - 1) : 0;
        off += (uint32_t)s.len + 1;
        if (sp != NULL) {
            merge_table_insert(t, i);
        }
    }
    return STRATA_OK;
}

/* A token id from metadata: missing, negative or out of range leaves *id. */
static void read_special_id(const gguf_file *f, const char *key, int32_t n_vocab, strata_token *id)
{
    uint64_t v;
    if (*id >= n_vocab) {
        *id = -1; /* default out of vocab range: disabled */
    }
    if (gguf_get_u64(f, key, &v) && v < (uint64_t)n_vocab) {
        *id = (strata_token)v;
    }
}

/* Find a special token by its text among candidates, in list order, if the
 * id is still unset; such tokens are made control tokens. */
static void detect_special(st_tokenizer *t, strata_token *id, const char *const *names)
{
    if (*id != -1) {
        return;
    }
    for (size_t k = 0; names[k] != NULL; k++) {
        strata_token tok = text_to_token(t, names[k], strlen(names[k]));
        if (tok >= 0) {
            *id = tok;
            t->attr[tok] |= ATTR_CONTROL;
            return;
        }
    }
}

static void set_eog(st_tokenizer *t, strata_token id)
{
    if (id >= 0 && id < t->n_vocab) {
        t->eog[id] = 1;
    }
}

static strata_token find_eog_text(const st_tokenizer *t, const char *s)
{
    strata_token id = text_to_token(t, s, strlen(s));
    return (id >= 0 && t->eog[id]) ? id : -1;
}

static void detect_specials_and_eog(st_tokenizer *t)
{
    static const char *const eot_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
        "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "<end_of_utterance>", NULL};
    static const char *const eom_names[] = {"<|eom_id|>", NULL};
    static const char *const fim_pre_names[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
        "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>",
        "<|prefix|>", NULL};
    static const char *const fim_suf_names[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
        "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>", "<SUF>", "\xe2\x96\x81<SUF>", "<|code_suffix|>",
        "<|suffix|>", NULL};
    static const char *const fim_mid_names[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
        "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>", "\xe2\x96\x81<MID>", "<|code_middle|>",
        "<|middle|>", NULL};
    static const char *const fim_pad_names[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
    static const char *const fim_rep_names[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>",
        "<reponame>", NULL};
    static const char *const fim_sep_names[] = {"<|file_sep|>", NULL};
    static const char *const eog_names[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>",
        "<|flush|>", "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>",
        "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "[e~[", NULL};
    static const char *const always_rendered[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL};

    detect_special(t, &t->eot, eot_names);
    detect_special(t, &t->eom, eom_names);
    detect_special(t, &t->fim_pre, fim_pre_names);
    detect_special(t, &t->fim_suf, fim_suf_names);
    detect_special(t, &t->fim_mid, fim_mid_names);
    detect_special(t, &t->fim_pad, fim_pad_names);
    detect_special(t, &t->fim_rep, fim_rep_names);
    detect_special(t, &t->fim_sep, fim_sep_names);

    /* control tokens named "...unused..." are unused */
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if ((t->attr[i] & ATTR_CONTROL) && strstr(tok_text(t, i), "unused") != NULL) {
            t->attr[i] |= ATTR_UNUSED;
        }
    }

    set_eog(t, t->fim_pad);
    set_eog(t, t->fim_rep);
    set_eog(t, t->fim_sep);
    for (size_t k = 0; eog_names[k] != NULL; k++) {
        strata_token id = text_to_token(t, eog_names[k], strlen(eog_names[k]));
        if (id >= 0) {
            set_eog(t, id);
            t->attr[id] |= ATTR_CONTROL;
        }
    }
    for (size_t k = 0; always_rendered[k] != NULL; k++) {
        strata_token id = text_to_token(t, always_rendered[k], strlen(always_rendered[k]));
        if (id >= 0) {
            t->attr[id] = ATTR_USER_DEFINED;
        }
    }
    set_eog(t, t->eos);
    set_eog(t, t->eot);
    set_eog(t, t->eom);

    /* o200k_harmony / solar-open: <|end|> ends a message, not generation */
    strata_token end_id = find_eog_text(t, "<|end|>");
    bool has_return = find_eog_text(t, "<|return|>") >= 0;
    bool has_call = find_eog_text(t, "<|call|>") >= 0 || find_eog_text(t, "<|calls|>") >= 0;
    bool has_flush = find_eog_text(t, "<|flush|>") >= 0;
    if (end_id >= 0 && ((has_return && has_call) || (has_call && has_flush))) {
        t->eog[end_id] = 0;
        t->attr[end_id] = ATTR_USER_DEFINED;
    }
    /* gemma4 / paddleocr: </s> is not end of generation */
    strata_token s_id = find_eog_text(t, "</s>");
    if (s_id >= 0 && find_eog_text(t, "<|tool_response>") >= 0) {
        t->eog[s_id] = 0;
        t->attr[s_id] = ATTR_NORMAL;
    }
}

typedef struct {
    uint32_t len;
    strata_token id;
} special_key;

/* Longest first; llama.cpp's std::sort leaves ties unordered, we take ids. */
static int cmp_special(const void *a, const void *b)
{
    const special_key *x = a, *y = b;
    if (x->len != y->len) {
        return x->len > y->len ? -1 : 1;
    }
    return x->id < y->id ? -1 : (x->id > y->id);
}

static strata_err build_caches(st_tokenizer *t, strata_error *err)
{
    size_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        n += (t->attr[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) != 0;
    }
    t->specials = st_malloc_array(n, sizeof(strata_token));
    t->piece_off = st_malloc_array((size_t)t->n_vocab, sizeof(uint32_t));
    t->piece_len = st_malloc_array((size_t)t->n_vocab, sizeof(uint32_t));
    if (!t->specials || !t->piece_off || !t->piece_len) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory for the token caches");
    }
    special_key *keys = st_malloc_array(n, sizeof(special_key));
    if (keys == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory for the token caches");
    }
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (t->attr[i] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) {
            keys[t->n_specials].len = t->text_len[i];
            keys[t->n_specials++].id = i;
        }
    }
    qsort(keys, t->n_specials, sizeof(special_key), cmp_special);
    for (size_t k = 0; k < t->n_specials; k++) {
        t->specials[k] = keys[k].id;
    }
    free(keys);

    strbuf sb = {0};
    for (int32_t i = 0; i < t->n_vocab && !sb.oom; i++) {
        size_t start = sb.n;
        render_piece(t, i, &sb);
        if (sb.n > UINT32_MAX - 1) {
            free(sb.p);
            return st_error(err, STRATA_ERR_UNSUPPORTED, "token pieces exceed 4 GiB");
        }
        t->piece_off[i] = (uint32_t)start;
        t->piece_len[i] = (uint32_t)(sb.n - start);
        sb_append(&sb, "", 1); /* the NUL: each piece stays NUL-terminated */
    }
    if (sb.oom) {
        free(sb.p);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory for the token pieces");
    }
    t->piece = sb.p;

    for (int b = 0; b < 256; b++) {
        static const char *hex = "0123456789ABCDEF";
        char buf[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
        char one = (char)b;
        t->byte_tok[b] = text_to_token(t, buf, 6);
        if (t->byte_tok[b] < 0 && b != 0) {
            t->byte_tok[b] = text_to_token(t, &one, 1);
        }
    }
    return STRATA_OK;
}

static void set_attr_by_text(st_tokenizer *t, const char *text, uint16_t attr, bool on)
{
    strata_token id = text_to_token(t, text, strlen(text));
    if (id >= 0) {
        t->attr[id] = on ? (uint16_t)(t->attr[id] | attr) : (uint16_t)(t->attr[id] & ~attr);
    }
}

/* Per-model token attributes llama.cpp sets by name: jina's and ModernBERT's
 * mask token eats the whitespace before it, Phi-3's special tokens the
 * whitespace after them. */
static void apply_model_attrs(st_tokenizer *t, const gguf_file *f)
{
    char name[256] = "", pre[64] = "", arch[64] = "";
    gguf_get_str(f, "general.name", name, sizeof(name));
    gguf_get_str(f, "tokenizer.ggml.pre", pre, sizeof(pre));
    gguf_get_str(f, "general.architecture", arch, sizeof(arch));
    for (char *p = name; *p; p++) {
        *p = (char)tolower((unsigned char)*p);
    }
    if (strstr(pre, "jina-v2-de") || strstr(pre, "jina-v2-es") || strstr(pre, "jina-v2-code") ||
        strstr(arch, "nomic-bert-moe") || strstr(arch, "jina-bert-v3")) {
        set_attr_by_text(t, "<mask>", ATTR_LSTRIP, true);
    } else if (strstr(name, "phi-3") || strstr(name, "phi3")) {
        for (size_t k = 0; k < t->n_specials; k++) {
            t->attr[t->specials[k]] |= ATTR_RSTRIP;
        }
        set_attr_by_text(t, "</s>", ATTR_RSTRIP, true);
        set_attr_by_text(t, "<unk>", ATTR_RSTRIP, false);
        set_attr_by_text(t, "<s>", ATTR_RSTRIP, false);
        set_attr_by_text(t, "<|endoftext|>", ATTR_RSTRIP, false);
    } else if (strstr(name, "modern-bert")) {
        set_attr_by_text(t, "[MASK]", ATTR_LSTRIP, true);
    }
}

strata_err st_tokenizer_load(const gguf_file *f, st_tokenizer **out, strata_error *err)
{
    *out = NULL;
    const gguf_kv *model_kv = find_typed(f, "tokenizer.ggml.model", GGUF_T_STRING);
    if (model_kv == NULL) {
        return st_error(err, STRATA_ERR_FORMAT, "tokenizer.ggml.model missing: the file has no tokenizer");
    }
    char model[64] = "", pre[64] = "";
    gguf_get_str(f, "tokenizer.ggml.model", model, sizeof(model));
    gguf_get_str(f, "tokenizer.ggml.pre", pre, sizeof(pre));

    st_tokenizer *t = st_calloc(1, sizeof(*t));
    if (t == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory for the tokenizer");
    }
    t->eot = t->eom = t->sep = t->pad = t->mask = -1;
    t->fim_pre = t->fim_suf = t->fim_mid = t->fim_pad = t->fim_rep = t->fim_sep = -1;

    strata_err rc = STRATA_OK;
    if (strcmp(model, "llama") == 0) {
        t->kind = VOCAB_SPM;
        t->bos = 1;
        t->eos = 2;
        t->unk = 0;
        t->pre = ST_PRE_DEFAULT;
        t->add_space_prefix = true;
        t->add_bos = true;
    } else if (strcmp(model, "gpt2") == 0) {
        t->kind = VOCAB_BPE;
        t->bos = 11;
        t->eos = 11;
        t->unk = -1;
        t->clean_spaces = true;
        const char *p = pre[0] ? pre : "default";
        size_t k = 0, n_pre = sizeof(k_pre_table) / sizeof(k_pre_table[0]);
        while (k < n_pre && strcmp(k_pre_table[k].name, p) != 0) {
            k++;
        }
        if (k == n_pre) {
            rc = st_error(err, STRATA_ERR_UNSUPPORTED, "unsupported pre-tokenizer type tokenizer.ggml.pre='%s'", p);
            goto fail;
        }
        t->pre = k_pre_table[k].pre;
        t->ignore_merges = k_pre_table[k].ignore_merges;
        t->add_bos = k_pre_table[k].add_bos;
        t->clean_spaces = !k_pre_table[k].keep_spaces;
        if (k_pre_table[k].no_bos) {
            t->bos = -1;
        }
    } else {
        rc = st_error(err, STRATA_ERR_UNSUPPORTED, "unsupported tokenizer model tokenizer.ggml.model='%s'", model);
        goto fail;
    }
    gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);

    if ((rc = load_tokens(t, f, err)) != STRATA_OK) {
        goto fail;
    }
    if (t->kind == VOCAB_BPE && (rc = load_merges(t, f, err)) != STRATA_OK) {
        goto fail;
    }

    read_special_id(f, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->bos);
    read_special_id(f, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->eos);
    read_special_id(f, "tokenizer.ggml.eot_token_id", t->n_vocab, &t->eot);
    read_special_id(f, "tokenizer.ggml.eom_token_id", t->n_vocab, &t->eom);
    read_special_id(f, "tokenizer.ggml.unknown_token_id", t->n_vocab, &t->unk);
    read_special_id(f, "tokenizer.ggml.seperator_token_id", t->n_vocab, &t->sep);
    read_special_id(f, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->pad);
    read_special_id(f, "tokenizer.ggml.mask_token_id", t->n_vocab, &t->mask);
    read_special_id(f, "tokenizer.ggml.fim_pre_token_id", t->n_vocab, &t->fim_pre);
    read_special_id(f, "tokenizer.ggml.fim_suf_token_id", t->n_vocab, &t->fim_suf);
    read_special_id(f, "tokenizer.ggml.fim_mid_token_id", t->n_vocab, &t->fim_mid);
    read_special_id(f, "tokenizer.ggml.fim_pad_token_id", t->n_vocab, &t->fim_pad);
    read_special_id(f, "tokenizer.ggml.fim_rep_token_id", t->n_vocab, &t->fim_rep);
    read_special_id(f, "tokenizer.ggml.fim_sep_token_id", t->n_vocab, &t->fim_sep);
    read_special_id(f, "tokenizer.ggml.prefix_token_id", t->n_vocab, &t->fim_pre);
    read_special_id(f, "tokenizer.ggml.suffix_token_id", t->n_vocab, &t->fim_suf);
    read_special_id(f, "tokenizer.ggml.middle_token_id", t->n_vocab, &t->fim_mid);
    gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos);
    gguf_get_bool(f, "tokenizer.ggml.add_eos_token", &t->add_eos);

    detect_specials_and_eog(t);
    if ((rc = build_caches(t, err)) != STRATA_OK) {
        goto fail;
    }
    apply_model_attrs(t, f);

    const gguf_kv *tmpl = find_typed(f, "tokenizer.chat_template", GGUF_T_STRING);
    if (tmpl != NULL) {
        t->chat_template = malloc(tmpl->v.str.len + 1);
        if (t->chat_template == NULL) {
            rc = st_error(err, STRATA_ERR_NOMEM, "out of memory for the chat template");
            goto fail;
        }
        memcpy(t->chat_template, tmpl->v.str.ptr, tmpl->v.str.len);
        t->chat_template[tmpl->v.str.len] = '\0';
    }
    *out = t;
    return STRATA_OK;

fail:
    st_tokenizer_free(t);
    return rc;
}

void st_tokenizer_free(st_tokenizer *t)
{
    if (t == NULL) {
        return;
    }
    free(t->text);
    free(t->text_off);
    free(t->text_len);
    free(t->score);
    free(t->attr);
    free(t->eog);
    free(t->piece);
    free(t->piece_off);
    free(t->piece_len);
    free(t->tok_slots);
    free(t->merge_text);
    free(t->merge_off);
    free(t->merge_len1);
    free(t->merge_len2);
    free(t->merge_slots);
    free(t->specials);
    free(t->chat_template);
    free(t);
}

/* ------------------------------------------------- special partition -- */

typedef struct {
    strata_token tok; /* >= 0: a special token; -1: raw text */
    size_t off, len;  /* raw text span */
} fragment;

typedef struct {
    fragment *v;
    size_t n, cap;
    bool oom;
} fragvec;

static void fv_push(fragvec *fv, strata_token tok, size_t off, size_t len)
{
    if (fv->n == fv->cap) {
        size_t cap = fv->cap ? fv->cap * 2 : 16;
        fragment *v = realloc(fv->v, cap * sizeof(*v));
        if (v == NULL) {
            fv->oom = true;
            return;
        }
        fv->v = v;
        fv->cap = cap;
    }
    fv->v[fv->n++] = (fragment){tok, off, len};
}

/* tokenizer_st_partition: cut the text at every occurrence of each special
 * token, longest tokens first. Control and unknown tokens only count when
 * parse_special; user-defined ones always do. Returns false when out of
 * memory. */
static bool partition(const st_tokenizer *t, const char *text, size_t len, bool parse_special, fragvec *frags)
{
    fragvec next = {0};
    frags->n = 0;
    if (len > 0) {
        fv_push(frags, -1, 0, len);
    }
    for (size_t k = 0; k < t->n_specials && !frags->oom && !next.oom; k++) {
        const strata_token id = t->specials[k];
        const uint16_t attr = t->attr[id];
        if (!parse_special && (attr & (ATTR_CONTROL | ATTR_UNKNOWN))) {
            continue;
        }
        const char *stext = tok_text(t, id);
        const size_t slen = t->text_len[id];
        bool found = false;
        next.n = 0;
        for (size_t i = 0; i < frags->n; i++) {
            fragment fr = frags->v[i];
            if (fr.tok >= 0) {
                fv_push(&next, fr.tok, 0, 0);
                continue;
            }
            size_t pos = fr.off, end = fr.off + fr.len;
            for (;;) {
                const char *m = memmem(text + pos, end - pos, stext, slen);
                if (m == NULL) {
                    if (end > pos) {
                        fv_push(&next, -1, pos, end - pos);
                    }
                    break;
                }
                found = true;
                size_t match = (size_t)(m - text);
                size_t left_len = match - pos;
                if (attr & ATTR_LSTRIP) {
                    while (left_len > 0 && isspace((unsigned char)text[pos + left_len - 1])) {
                        left_len--;
                    }
                }
                if (left_len > 0) {
                    fv_push(&next, -1, pos, left_len);
                }
                fv_push(&next, id, 0, 0);
                pos = match + slen;
                if (attr & ATTR_RSTRIP) {
                    while (pos < end && isspace((unsigned char)text[pos])) {
                        pos++;
                    }
                }
            }
        }
        if (found) {
            fragvec tmp = *frags;
            *frags = next;
            next = tmp;
        }
    }
    bool ok = !frags->oom && !next.oom;
    free(next.v);
    return ok;
}

/* ---------------------------------------------------------- sessions -- */

typedef struct {
    int prev, next; /* neighbours in the current segmentation, -1 at the ends */
    size_t off, n;  /* bytes of the word buffer; n == 0 once merged away */
} symbol;

typedef struct {
    int left, right;
    float score; /* SPM: score of the merged token, highest first */
    int rank;    /* BPE: merge rank, lowest first */
    size_t size; /* bytes of left + right when queued; stale entries differ */
} bigram;

/* Scratch space of one st_tokenize call, reused across fragments/words. */
typedef struct {
    strbuf buf;       /* text being segmented */
    symbol *sym;      /* (sym_cap) */
    size_t sym_cap, n_sym;
    bigram *heap;     /* (heap_cap) binary heap */
    size_t heap_cap, n_heap;
    bool spm;         /* heap order: SPM (score) or BPE (rank) */
    uint32_t *cpts;   /* (cpts_cap) BPE fragment code points */
    size_t cpts_cap;
    size_t *lens;     /* (cpts_cap) BPE word lengths */
    bool oom;
} session;

static void session_free(session *s)
{
    free(s->buf.p);
    free(s->sym);
    free(s->heap);
    free(s->cpts);
    free(s->lens);
}

/* a comes out of the queue after b */
static bool bigram_after(const session *s, const bigram *a, const bigram *b)
{
    if (s->spm) {
        return a->score < b->score || (a->score == b->score && a->left > b->left);
    }
    return a->rank > b->rank || (a->rank == b->rank && a->left > b->left);
}

static void heap_push(session *s, bigram bg)
{
    if (s->n_heap == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
        bigram *h = realloc(s->heap, cap * sizeof(*h));
        if (h == NULL) {
            s->oom = true;
            return;
        }
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bigram_after(s, &s->heap[parent], &bg)) {
            break;
        }
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = bg;
}

static bigram heap_pop(session *s)
{
    bigram top = s->heap[0];
    bigram last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && bigram_after(s, &s->heap[c], &s->heap[c + 1])) {
            c++;
        }
        if (!bigram_after(s, &last, &s->heap[c])) {
            break;
        }
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n > 0) {
        s->heap[i] = last;
    }
    return top;
}

static bool reserve_symbols(session *s, size_t n)
{
    if (n > s->sym_cap) {
        symbol *v = realloc(s->sym, n * sizeof(*v));
        if (v == NULL) {
            s->oom = true;
            return false;
        }
        s->sym = v;
        s->sym_cap = n;
    }
    return true;
}

/* Split buf into one symbol per UTF-8 sequence (by lead byte, clipped to
 * the end, as llama.cpp does even for malformed text). */
static bool make_symbols(session *s)
{
    const char *p = s->buf.p;
    size_t n = s->buf.n;
    if (!reserve_symbols(s, n)) {
        return false;
    }
    s->n_sym = 0;
    for (size_t off = 0; off < n;) {
        size_t len = ST_MIN(st_utf8_len((uint8_t)p[off]), n - off);
        int idx = (int)s->n_sym;
        s->sym[s->n_sym++] = (symbol){idx - 1, off + len == n ? -1 : idx + 1, off, len};
        off += len;
    }
    return true;
}

/* Merge the queued bigram if it is still current; returns its left symbol
 * or -1 if the entry was stale. */
static int apply_bigram(session *s, bigram bg)
{
    symbol *l = &s->sym[bg.left], *r = &s->sym[bg.right];
    if (l->n == 0 || r->n == 0 || l->n + r->n != bg.size) {
        return -1;
    }
    l->n += r->n;
    r->n = 0;
    l->next = r->next;
    if (r->next >= 0) {
        s->sym[r->next].prev = bg.left;
    }
    return bg.left;
}

/* --------------------------------------------------------------- SPM -- */

static void spm_try_add_bigram(const st_tokenizer *t, session *s, int left, int right)
{
    if (left == -1 || right == -1) {
        return;
    }
    size_t size = s->sym[left].n + s->sym[right].n;
    strata_token tok = text_to_token(t, s->buf.p + s->sym[left].off, size);
    if (tok < 0) {
        return;
    }
    heap_push(s, (bigram){left, right, t->score[tok], 0, size});
}

/* llm_tokenizer_spm_session::tokenize on one raw fragment. Symbols that are
 * not tokens fall back to byte tokens (to <unk> if even those are missing,
 * where llama.cpp would throw). llama.cpp's rev_merge re-segmentation never
 * applies: merged symbols are tokens by construction. */
static void spm_tokenize(const st_tokenizer *t, session *s, const char *text, size_t len, bool prefix,
                         tokvec *out)
{
    s->buf.n = 0;
    if (prefix) {
        sb_append(&s->buf, "\xe2\x96\x81", 3);
    }
    size_t run = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || text[i] == ' ') {
            sb_append(&s->buf, text + run, i - run);
            if (i < len) {
                sb_append(&s->buf, "\xe2\x96\x81", 3);
            }
            run = i + 1;
        }
    }
    if (s->buf.oom || !make_symbols(s) || s->n_sym == 0) {
        s->oom |= s->buf.oom;
        return;
    }

    s->spm = true;
    s->n_heap = 0;
    for (size_t i = 1; i < s->n_sym; i++) {
        spm_try_add_bigram(t, s, (int)i - 1, (int)i);
    }
    while (s->n_heap > 0 && !s->oom) {
        int left = apply_bigram(s, heap_pop(s));
        if (left >= 0) {
            spm_try_add_bigram(t, s, s->sym[left].prev, left);
            spm_try_add_bigram(t, s, left, s->sym[left].next);
        }
    }

    for (int i = 0; i != -1; i = s->sym[i].next) {
        const char *p = s->buf.p + s->sym[i].off;
        strata_token tok = text_to_token(t, p, s->sym[i].n);
        if (tok >= 0) {
            tv_push(out, tok);
            continue;
        }
        for (size_t j = 0; j < s->sym[i].n; j++) {
            strata_token b = t->byte_tok[(uint8_t)p[j]];
            if (b >= 0 || t->unk >= 0) {
                tv_push(out, b >= 0 ? b : t->unk);
            }
        }
    }
}

/* --------------------------------------------------------------- BPE -- */

static void bpe_add_bigram(const st_tokenizer *t, session *s, int left, int right)
{
    if (left == -1 || right == -1) {
        return;
    }
    const symbol *l = &s->sym[left], *r = &s->sym[right];
    int rank = find_bpe_rank(t, s->buf.p + l->off, l->n, s->buf.p + r->off, r->n);
    if (rank < 0) {
        return;
    }
    heap_push(s, (bigram){left, right, 0.0f, rank, l->n + r->n});
}

/* Merge one pre-tokenized, byte-encoded word in s->buf. */
static void bpe_word(const st_tokenizer *t, session *s, tokvec *out)
{
    const char *p = s->buf.p;
    if (t->ignore_merges && text_to_token(t, p, s->buf.n) >= 0) {
        /* llama3-style vocabularies take a whole word that is a token as is */
        if (!reserve_symbols(s, 1)) {
            return;
        }
        s->sym[0] = (symbol){-1, -1, 0, s->buf.n};
        s->n_sym = 1;
    } else if (!make_symbols(s)) {
        return;
    }

    s->spm = false;
    s->n_heap = 0;
    for (size_t i = 1; i < s->n_sym; i++) {
        bpe_add_bigram(t, s, (int)i - 1, (int)i);
    }
    while (s->n_heap > 0 && !s->oom) {
        int left = apply_bigram(s, heap_pop(s));
        if (left >= 0) {
            bpe_add_bigram(t, s, s->sym[left].prev, left);
            bpe_add_bigram(t, s, left, s->sym[left].next);
        }
    }

    for (size_t i = 0; i < s->n_sym; i++) {
        const symbol *sy = &s->sym[i];
        if (sy->n == 0) {
            continue;
        }
        strata_token tok = text_to_token(t, p + sy->off, sy->n);
        if (tok >= 0) {
            tv_push(out, tok);
            continue;
        }
        /* llama.cpp looks up each single byte of the encoded text */
        for (size_t j = 0; j < sy->n; j++) {
            tok = text_to_token(t, p + sy->off + j, 1);
            if (tok >= 0) {
                tv_push(out, tok);
            }
        }
    }
}

/* llm_tokenizer_bpe_session::tokenize on one raw fragment: code points
 * (U+FFFD for malformed UTF-8), pre-tokenizer words, GPT-2 byte alphabet,
 * merges. */
static void bpe_tokenize(const st_tokenizer *t, session *s, const char *text, size_t len, tokvec *out)
{
    if (len > s->cpts_cap) {
        free(s->cpts);
        free(s->lens);
        s->cpts = st_malloc_array(len, sizeof(uint32_t));
        s->lens = st_malloc_array(len, sizeof(size_t));
        s->cpts_cap = (s->cpts && s->lens) ? len : 0;
        if (s->cpts_cap == 0) {
            s->oom = true;
            return;
        }
    }
    size_t n = st_utf8_to_cpts(text, len, s->cpts);
    size_t n_words = st_pretokenize(t->pre, s->cpts, n, s->lens);
    if (n_words == (size_t)-1) {
        s->oom = true;
        return;
    }
    size_t c = 0;
    for (size_t w = 0; w < n_words && !s->oom && !out->oom; w++) {
        s->buf.n = 0;
        for (size_t k = 0; k < s->lens[w]; k++) {
            char utf8[4], enc[4];
            size_t nb = st_utf8_encode(s->cpts[c++], utf8);
            for (size_t j = 0; j < nb; j++) {
                size_t ne = st_utf8_encode(st_gpt2_byte_to_cpt((uint8_t)utf8[j]), enc);
                sb_append(&s->buf, enc, ne);
            }
        }
        if (s->buf.oom) {
            s->oom = true;
            return;
        }
        bpe_word(t, s, out);
    }
}

/* -------------------------------------------------------------- API -- */

strata_err st_tokenize(const st_tokenizer *t, const char *text, size_t len, bool add_bos, bool parse_special,
                       strata_token *out, size_t cap, size_t *n_out, strata_error *err)
{
    if (n_out != NULL) {
        *n_out = 0;
    }
    if (t == NULL || (len > 0 && text == NULL) || (cap > 0 && out == NULL)) {
        return st_error(err, STRATA_ERR_ARG, "st_tokenize: NULL tokenizer, text or output");
    }
    tokvec tv = {0};
    fragvec frags = {0};
    session s = {0};

    if (add_bos && t->bos >= 0) {
        tv_push(&tv, t->bos);
    }
    bool ok = partition(t, text, len, parse_special, &frags);
    bool prev_special = true; /* SPM: prefix a space to the first text and after specials */
    for (size_t i = 0; ok && i < frags.n && !s.oom && !tv.oom; i++) {
        const fragment *fr = &frags.v[i];
        if (fr->tok >= 0) {
            tv_push(&tv, fr->tok);
            prev_special = true;
        } else if (t->kind == VOCAB_SPM) {
            spm_tokenize(t, &s, text + fr->off, fr->len, t->add_space_prefix && prev_special, &tv);
            prev_special = false;
        } else {
            bpe_tokenize(t, &s, text + fr->off, fr->len, &tv);
        }
    }
    ok = ok && !s.oom && !tv.oom;
    session_free(&s);
    free(frags.v);
    if (!ok) {
        free(tv.v);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory tokenizing %zu bytes", len);
    }

    size_t n = tv.n;
    if (n > 0 && cap > 0) {
        memcpy(out, tv.v, ST_MIN(n, cap) * sizeof(strata_token));
    }
    free(tv.v);
    if (n_out != NULL) {
        *n_out = n;
    }
    if (n > cap) {
        return st_error(err, STRATA_ERR_LIMIT, "text needs %zu tokens, room for %zu", n, cap);
    }
    return STRATA_OK;
}

static bool valid_token(const st_tokenizer *t, strata_token tok)
{
    return t != NULL && tok >= 0 && tok < t->n_vocab;
}

int st_token_to_piece(const st_tokenizer *t, strata_token tok, char *buf, size_t cap, bool render_special)
{
    if (!valid_token(t, tok)) {
        return 0;
    }
    if (!render_special && (t->attr[tok] & (ATTR_UNKNOWN | ATTR_CONTROL))) {
        return 0;
    }
    size_t n = t->piece_len[tok];
    if (cap < n) {
        return -(int)n;
    }
    if (n > 0) {
        memcpy(buf, t->piece + t->piece_off[tok], n);
    }
    return (int)n;
}

const char *st_token_bytes(const st_tokenizer *t, strata_token tok, size_t *len)
{
    if (!valid_token(t, tok) || (t->attr[tok] & (ATTR_UNKNOWN | ATTR_CONTROL))) {
        *len = 0;
        return "";
    }
    *len = t->piece_len[tok];
    return t->piece + t->piece_off[tok];
}

/* clean_up_tokenization_spaces, as llama_vocab::impl::detokenize does it
 * (three in-place passes; returns the new length). */
static size_t clean_spaces(char *text, size_t total)
{
    /* " ?", " !", " .", " ," lose the space */
    size_t total1 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total1; ++i) {
        const char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) {
            total--;
        }
        text[total++] = x;
    }
    /* " ' " -> "'" */
    size_t total2 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total2; ++i) {
        const char x = text[i];
        if (x == '\'' && i + 1 < total2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
            total--;
            text[++i] = '\0';
        }
        text[total++] = x;
    }
    /* " 's", " 'm", " 're", " 've" lose the space */
    size_t total3 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total3; ++i) {
        const char x = text[i];
        if (text[i - 1] == ' ' && x == '\'' && i + 1 < total3) {
            const char x1 = text[i + 1];
            if (x1 == 's' || x1 == 'm') {
                total--;
            } else if (x1 != 't' && x1 != 'd' && i + 2 < total3) {
                const char x2 = text[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) {
                    total--;
                }
            }
        }
        text[total++] = x;
    }
    return total;
}

strata_err st_detokenize(const st_tokenizer *t, const strata_token *toks, size_t n, bool render_special,
                         char **out, size_t *out_len, strata_error *err)
{
    *out = NULL;
    if (t == NULL || (n > 0 && toks == NULL)) {
        return st_error(err, STRATA_ERR_ARG, "st_detokenize: NULL tokenizer or tokens");
    }
    strbuf sb = {0};
    sb_append(&sb, "", 0);
    bool remove_space = t->add_space_prefix;
    for (size_t i = 0; i < n && !sb.oom; i++) {
        strata_token tok = toks[i];
        if (!valid_token(t, tok)) {
            free(sb.p);
            return st_error(err, STRATA_ERR_ARG, "token %d at position %zu is outside the vocabulary (%d)", tok, i,
                            t->n_vocab);
        }
        size_t len;
        const char *p;
        if (!render_special && (t->attr[tok] & (ATTR_UNKNOWN | ATTR_CONTROL))) {
            len = 0;
            p = "";
        } else {
            p = t->piece + t->piece_off[tok];
            len = t->piece_len[tok];
            if (remove_space && len > 0 && *p == ' ') {
                p++;
                len--;
            }
        }
        remove_space = false;
        sb_append(&sb, p, len);
    }
    if (sb.oom) {
        free(sb.p);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory detokenizing %zu tokens", n);
    }
    if (t->clean_spaces) {
        sb.n = clean_spaces(sb.p, sb.n);
        sb.p[sb.n] = '\0';
    }
    *out = sb.p;
    if (out_len != NULL) {
        *out_len = sb.n;
    }
    return STRATA_OK;
}

int st_tokenizer_n_vocab(const st_tokenizer *t)
{
    return t->n_vocab;
}

const char *st_tokenizer_kind(const st_tokenizer *t)
{
    return t->kind == VOCAB_SPM ? "spm" : "bpe";
}

bool st_token_is_eog(const st_tokenizer *t, strata_token tok)
{
    return valid_token(t, tok) && t->eog[tok];
}

bool st_token_is_control(const st_tokenizer *t, strata_token tok)
{
    return valid_token(t, tok) && (t->attr[tok] & ATTR_CONTROL);
}

strata_token st_tokenizer_bos(const st_tokenizer *t)
{
    return t->bos;
}

strata_token st_tokenizer_eos(const st_tokenizer *t)
{
    return t->eos;
}

strata_token st_tokenizer_eot(const st_tokenizer *t)
{
    return t->eot;
}

bool st_tokenizer_add_bos_default(const st_tokenizer *t)
{
    return t->add_bos && t->bos >= 0;
}

strata_token st_tokenizer_find(const st_tokenizer *t, const char *text)
{
    if (t == NULL || text == NULL) {
        return -1;
    }
    return text_to_token(t, text, strlen(text));
}

const char *st_tokenizer_chat_template(const st_tokenizer *t)
{
    return t->chat_template;
}
