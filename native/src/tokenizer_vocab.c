/* Tokenizer vocabulary: loading a GGUF tokenizer (tokens, scores, types,
 * merges, special ids, end-of-generation set) and its lookup tables.
 *
 * Reference: llama.cpp src/llama-vocab.cpp (llama_vocab::impl::load). Where
 * llama.cpp depends on unordered_map iteration order (picking EOT among
 * several candidates) we take the first candidate in its list order. */
#include "tokenizer_impl.h"
#include "unicode.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

strata_token st_tok_find_text(const st_tokenizer *t, const char *s, size_t n)
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

int st_tok_bpe_rank(const st_tokenizer *t, const char *a, size_t na, const char *b, size_t nb)
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
    if (st_tok_bpe_rank(t, m, na, m + na + 1, nb) >= 0) {
        return;
    }
    size_t i = (size_t)hash_pair(m, na, m + na + 1, nb) & t->merge_mask;
    while (t->merge_slots[i] != 0) {
        i = (i + 1) & t->merge_mask;
    }
    t->merge_slots[i] = r + 1;
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
        strata_token tok = st_tok_find_text(t, names[k], strlen(names[k]));
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
    strata_token id = st_tok_find_text(t, s, strlen(s));
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
        strata_token id = st_tok_find_text(t, eog_names[k], strlen(eog_names[k]));
        if (id >= 0) {
            set_eog(t, id);
            t->attr[id] |= ATTR_CONTROL;
        }
    }
    for (size_t k = 0; always_rendered[k] != NULL; k++) {
        strata_token id = st_tok_find_text(t, always_rendered[k], strlen(always_rendered[k]));
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
        st_tok_render_piece(t, i, &sb);
        if (sb.n > UINT32_MAX - 1) {
            free(sb.p);
            return st_error(err, STRATA_ERR_UNSUPPORTED, "token pieces exceed 4 GiB");
        }
        t->piece_off[i] = (uint32_t)start;
        t->piece_len[i] = (uint32_t)(sb.n - start);
        st_sb_append(&sb, "", 1); /* the NUL: each piece stays NUL-terminated */
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
        t->byte_tok[b] = st_tok_find_text(t, buf, 6);
        if (t->byte_tok[b] < 0 && b != 0) {
            t->byte_tok[b] = st_tok_find_text(t, &one, 1);
        }
    }
    return STRATA_OK;
}

static void set_attr_by_text(st_tokenizer *t, const char *text, uint16_t attr, bool on)
{
    strata_token id = st_tok_find_text(t, text, strlen(text));
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

