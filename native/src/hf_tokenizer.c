/* tokenizer.json (+ tokenizer_config.json, config.json) -> tokenizer.*
 * GGUF metadata, as llama.cpp's converter writes it (see hf_import.h).
 *
 * Byte-level BPE becomes tokenizer.ggml.model "gpt2": tokens as stored
 * (byte-alphabet text), added tokens CONTROL when special (or when they look
 * special, as llama.cpp's does_token_look_special), else USER_DEFINED, ids
 * the model has no token for become [PADn] UNUSED, merges "a b", and
 * tokenizer.ggml.pre from the pre-tokenizer's split regex.
 *
 * SentencePiece-style BPE (byte_fallback, U+2581 for spaces: Llama 2,
 * TinyLlama) becomes "llama" with scores: llama.cpp's SPM tokenizer merges
 * the pair whose result has the highest score, and HF's BPE the pair with
 * the lowest merge rank, so score = -(rank of the first merge producing the
 * token) gives the same merges.
 */
#include "hf_import.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* Split regexes of the pre-tokenizers llama.cpp knows, by GGUF name. */
static const struct {
    const char *pre;
    const char *regex;
} k_pre_regex[] = {
    {"llama-bpe",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+"},
    {"qwen2",
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
     "\\s+(?!\\S)|\\s+"},
};

typedef struct {
    json_t *tok;          /* tokenizer.json */
    json_t *tcfg;         /* tokenizer_config.json or NULL */
    json_t *cfg;          /* config.json or NULL */
    json_t *model;        /* tok.model */
    json_t *vocab;        /* model.vocab: text -> id */
    json_t *added;        /* added_tokens array or NULL */
    int64_t n;            /* tokens in the GGUF */
    const char **text;    /* (n) borrowed from the JSON, NULL for padding */
    int32_t *types;       /* (n) */
    char *pads;           /* (n_pad * 24) [PADn] texts */
    strata_error *err;
} tok_builder;

static json_t *load_opt(const char *dir, const char *file)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    return json_load_file(path, JSON_ALLOW_NUL, NULL);
}

static bool looks_special(const char *s)
{
    size_t n = strlen(s);
    if (strcmp(s, "<pad>") == 0 || strcmp(s, "<mask>") == 0 || strcmp(s, "<2mass>") == 0 || strcmp(s, "[@BOS@]") == 0) {
        return true;
    }
    if (n >= 4 && strncmp(s, "<|", 2) == 0 && strcmp(s + n - 2, "|>") == 0) {
        return true;
    }
    if (n >= 8 && strncmp(s, "<\xef\xbd\x9c", 4) == 0 && strcmp(s + n - 4, "\xef\xbd\x9c>") == 0) {
        return true;
    }
    return (strncmp(s, "<start_of_", 10) == 0 || strncmp(s, "<end_of_", 8) == 0) && s[n - 1] == '>';
}

/* The pre-tokenizer's Split regex, if any; *byte_level set when a ByteLevel
 * step is present (with use_regex: the GPT-2 regex itself). */
static const char *find_split_regex(const json_t *pt, bool *byte_level, bool *bl_regex)
{
    if (!json_is_object(pt)) {
        return NULL;
    }
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (type == NULL) {
        return NULL;
    }
    if (strcmp(type, "Sequence") == 0) {
        const char *found = NULL;
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(pt, "pretokenizers"), i, e)
        {
            const char *r = find_split_regex(e, byte_level, bl_regex);
            if (r != NULL && found == NULL) {
                found = r;
            }
        }
        return found;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        *byte_level = true;
        json_t *ur = json_object_get(pt, "use_regex");
        *bl_regex = ur == NULL || json_is_true(ur);
        return NULL;
    }
    if (strcmp(type, "Split") == 0) {
        return json_string_value(json_object_get(json_object_get(pt, "pattern"), "Regex"));
    }
    return NULL;
}

/* The id of the added token (or vocab entry) whose text is the
 * tokenizer_config entry typ (a string or {"content": ...}). */
static int64_t special_from_config(tok_builder *b, const char *typ)
{
    char key[32];
    snprintf(key, sizeof(key), "%s_token", typ);
    json_t *e = json_object_get(b->tcfg, key);
    const char *content = json_is_string(e) ? json_string_value(e) : json_string_value(json_object_get(e, "content"));
    if (content == NULL) {
        return -1;
    }
    size_t i;
    json_t *a;
    json_array_foreach(b->added, i, a)
    {
        const char *c = json_string_value(json_object_get(a, "content"));
        if (c != NULL && strcmp(c, content) == 0 && json_is_integer(json_object_get(a, "id"))) {
            return json_integer_value(json_object_get(a, "id"));
        }
    }
    return -1;
}

static void add_special_ids(tok_builder *b, gguf_writer *w)
{
    static const char *const types[] = {"bos", "eos", "unk", "sep", "pad"};
    static const char *const keys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                       "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.seperator_token_id",
                                       "tokenizer.ggml.padding_token_id"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        int64_t id = special_from_config(b, types[i]);
        if (id < 0) {
            char key[32];
            snprintf(key, sizeof(key), "%s_token_id", types[i]);
            json_t *v = json_object_get(b->cfg, key);
            id = json_is_integer(v) ? json_integer_value(v) : -1;
        }
        if (id < 0 && strcmp(types[i], "unk") == 0) {
            const char *u = json_string_value(json_object_get(b->model, "unk_token"));
            json_t *v = u ? json_object_get(b->vocab, u) : NULL;
            id = json_is_integer(v) ? json_integer_value(v) : -1;
        }
        if (id >= 0 && id < b->n) {
            gguf_writer_add_u32(w, keys[i], (uint32_t)id);
        }
    }
    /* add_bos/add_eos: tokenizer_config first, else a TemplateProcessing
     * post-processor that starts with the BOS token */
    json_t *ab = json_object_get(b->tcfg, "add_bos_token");
    json_t *ae = json_object_get(b->tcfg, "add_eos_token");
    if (json_is_boolean(ab)) {
        gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", json_is_true(ab));
    } else {
        json_t *pp = json_object_get(b->tok, "post_processor");
        json_t *procs = json_object_get(pp, "processors");
        size_t np = json_is_array(procs) ? json_array_size(procs) : 1;
        for (size_t i = 0; i < np; i++) {
            json_t *p = json_is_array(procs) ? json_array_get(procs, i) : pp;
            const char *t = json_string_value(json_object_get(p, "type"));
            json_t *single = json_object_get(p, "single");
            if (t && strcmp(t, "TemplateProcessing") == 0 && json_array_size(single) > 1) {
                const char *first = json_string_value(
                    json_object_get(json_object_get(json_array_get(single, 0), "SpecialToken"), "id"));
                int64_t bos = special_from_config(b, "bos");
                const char *bos_text = bos >= 0 && bos < b->n ? b->text[bos] : NULL;
                if (first != NULL) {
                    gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token",
                                         bos_text == NULL || strcmp(first, bos_text) == 0);
                }
            }
        }
    }
    if (json_is_boolean(ae)) {
        gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", json_is_true(ae));
    }
    json_t *tmpl = json_object_get(b->tcfg, "chat_template");
    if (json_is_array(tmpl)) {
        size_t i;
        json_t *e;
        json_t *found = NULL;
        json_array_foreach(tmpl, i, e)
        {
            const char *name = json_string_value(json_object_get(e, "name"));
            if (found == NULL || (name && strcmp(name, "default") == 0)) {
                found = json_object_get(e, "template");
            }
        }
        tmpl = found;
    }
    if (json_is_string(tmpl)) {
        gguf_writer_add_strn(w, "tokenizer.chat_template", json_string_value(tmpl), json_string_length(tmpl));
    }
}

/* vocab + added tokens -> text[] and types[] (padding as [PADn] UNUSED). */
static strata_err collect_tokens(tok_builder *b, int64_t vocab_size, bool spm)
{
    int64_t n = vocab_size;
    const char *key;
    json_t *v;
    json_object_foreach(b->vocab, key, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24)) {
            return st_error(b->err, STRATA_ERR_FORMAT, "tokenizer.json: vocab entry '%.64s' has a bad id", key);
        }
        n = ST_MAX(n, json_integer_value(v) + 1);
    }
    size_t i;
    json_array_foreach(b->added, i, v)
    {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 24) ||
            !json_is_string(json_object_get(v, "content"))) {
            return st_error(b->err, STRATA_ERR_FORMAT, "tokenizer.json: added_tokens[%zu] needs an id and content", i);
        }
        n = ST_MAX(n, json_integer_value(id) + 1);
    }
    b->n = n;
    b->text = st_calloc((size_t)n, sizeof(char *));
    b->types = st_calloc((size_t)n, sizeof(int32_t));
    if (b->text == NULL || b->types == NULL) {
        return st_error(b->err, STRATA_ERR_NOMEM, "out of memory");
    }
    json_object_foreach(b->vocab, key, v)
    {
        int64_t id = json_integer_value(v);
        b->text[id] = key;
        b->types[id] = TT_NORMAL;
        if (spm && strlen(key) == 6 && strncmp(key, "<0x", 3) == 0 && key[5] == '>') {
            b->types[id] = TT_BYTE;
        }
    }
    json_array_foreach(b->added, i, v)
    {
        int64_t id = json_integer_value(json_object_get(v, "id"));
        const char *c = json_string_value(json_object_get(v, "content"));
        bool special = json_is_true(json_object_get(v, "special"));
        b->text[id] = c;
        b->types[id] = special || looks_special(c) ? TT_CONTROL : TT_USER_DEFINED;
    }
    if (spm) {
        const char *u = json_string_value(json_object_get(b->model, "unk_token"));
        json_t *uid = u ? json_object_get(b->vocab, u) : NULL;
        if (json_is_integer(uid)) {
            b->types[json_integer_value(uid)] = TT_UNKNOWN;
        }
    }
    size_t n_pad = 0;
    for (int64_t id = 0; id < n; id++) {
        n_pad += b->text[id] == NULL;
    }
    b->pads = st_malloc_array(n_pad, 24);
    if (b->pads == NULL) {
        return st_error(b->err, STRATA_ERR_NOMEM, "out of memory");
    }
    n_pad = 0;
    for (int64_t id = 0; id < n; id++) {
        if (b->text[id] == NULL) {
            char *p = b->pads + 24 * n_pad++;
            snprintf(p, 24, "[PAD%d]", (int)id);
            b->text[id] = p;
            b->types[id] = TT_UNUSED;
        }
    }
    return STRATA_OK;
}

/* USER_DEFINED texts with U+2581 get real spaces (llama.cpp pre-normalizes
 * them); the copies live in *owned. */
static strata_err normalize_user_defined(tok_builder *b, char ***owned, size_t *n_owned)
{
    for (int64_t id = 0; id < b->n; id++) {
        if (b->types[id] != TT_USER_DEFINED || strstr(b->text[id], "\xe2\x96\x81") == NULL) {
            continue;
        }
        char *s = strdup(b->text[id]);
        char **o = realloc(*owned, (*n_owned + 1) * sizeof(char *));
        if (s == NULL || o == NULL) {
            free(s);
            if (o != NULL) {
                *owned = o;
            }
            return st_error(b->err, STRATA_ERR_NOMEM, "out of memory");
        }
        *owned = o;
        (*owned)[(*n_owned)++] = s;
        char *d = s;
        for (const char *p = s; *p;) {
            if (strncmp(p, "\xe2\x96\x81", 3) == 0) {
                *d++ = ' ';
                p += 3;
            } else {
                *d++ = *p++;
            }
        }
        *d = '\0';
        b->text[id] = s;
    }
    return STRATA_OK;
}

/* merges as "a b" strings; arrays [a, b] (transformers >= 4.45) joined with
 * spaces inside parts written as U+0120, as gguf-py does. */
static strata_err collect_merges(tok_builder *b, char ***out, size_t *n_out)
{
    json_t *merges = json_object_get(b->model, "merges");
    size_t n = json_is_array(merges) ? json_array_size(merges) : 0;
    *out = st_calloc(n, sizeof(char *));
    *n_out = 0;
    if (*out == NULL) {
        return st_error(b->err, STRATA_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(merges, i);
        char *s = NULL;
        if (json_is_string(m)) {
            s = strdup(json_string_value(m));
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            const char *parts[2] = {json_string_value(json_array_get(m, 0)), json_string_value(json_array_get(m, 1))};
            size_t len = 2;
            for (int k = 0; k < 2; k++) {
                for (const char *p = parts[k]; *p; p++) {
                    len += *p == ' ' ? 2 : 1;
                }
            }
            s = malloc(len);
            if (s != NULL) {
                char *d = s;
                for (int k = 0; k < 2; k++) {
                    for (const char *p = parts[k]; *p; p++) {
                        if (*p == ' ') {
                            *d++ = (char)0xc4; /* U+0120 */
                            *d++ = (char)0xa0;
                        } else {
                            *d++ = *p;
                        }
                    }
                    *d++ = k == 0 ? ' ' : '\0';
                }
            }
        } else {
            return st_error(b->err, STRATA_ERR_FORMAT, "tokenizer.json: merges[%zu] is neither \"a b\" nor [a, b]", i);
        }
        if (s == NULL) {
            return st_error(b->err, STRATA_ERR_NOMEM, "out of memory");
        }
        (*out)[(*n_out)++] = s;
    }
    return STRATA_OK;
}

/* SPM scores: -(rank of the first merge giving the token); tokens no merge
 * makes rank after every merge, in vocabulary order. */
static strata_err spm_scores(tok_builder *b, char **merges, size_t n_merges, float **out)
{
    float *s = st_malloc_array((size_t)b->n, sizeof(float));
    if (s == NULL) {
        return st_error(b->err, STRATA_ERR_NOMEM, "out of memory");
    }
    bool *set = st_calloc((size_t)b->n, sizeof(bool));
    char *buf = NULL;
    size_t cap = 0;
    if (set == NULL) {
        free(s);
        return st_error(b->err, STRATA_ERR_NOMEM, "out of memory");
    }
    for (size_t r = 0; r < n_merges; r++) {
        size_t len = strlen(merges[r]);
        if (len + 1 > cap) {
            cap = 2 * len + 16;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                free(s);
                free(set);
                return st_error(b->err, STRATA_ERR_NOMEM, "out of memory");
            }
            buf = nb;
        }
        const char *sp = strchr(merges[r], ' ');
        if (sp == NULL) {
            continue;
        }
        size_t a = (size_t)(sp - merges[r]);
        memcpy(buf, merges[r], a);
        memcpy(buf + a, sp + 1, len - a);
        json_t *id = json_object_get(b->vocab, buf);
        if (json_is_integer(id) && !set[json_integer_value(id)]) {
            s[json_integer_value(id)] = -(float)r;
            set[json_integer_value(id)] = true;
        }
    }
    for (int64_t id = 0; id < b->n; id++) {
        if (!set[id]) {
            s[id] = b->types[id] == TT_NORMAL ? -(float)(n_merges + (size_t)id) : 0.0f;
        }
    }
    free(buf);
    free(set);
    *out = s;
    return STRATA_OK;
}

/* Is the tokenizer SentencePiece-style (U+2581 for spaces, byte fallback)? */
static bool is_spm_style(const json_t *tok, const json_t *model)
{
    if (json_is_true(json_object_get(model, "byte_fallback"))) {
        return true;
    }
    const char *pt = json_string_value(json_object_get(json_object_get(tok, "pre_tokenizer"), "type"));
    if (pt != NULL && strcmp(pt, "Metaspace") == 0) {
        return true;
    }
    char *dump = json_dumps(json_object_get(tok, "normalizer"), JSON_COMPACT);
    bool meta = dump != NULL && strstr(dump, "\xe2\x96\x81") != NULL;
    free(dump);
    return meta;
}

strata_err st_hf_add_tokenizer(const char *dir, gguf_writer *w, int64_t vocab_size, strata_error *err)
{
    tok_builder b = {.err = err};
    char **merges = NULL, **owned = NULL;
    size_t n_merges = 0, n_owned = 0;
    float *scores = NULL;
    strata_err rc = STRATA_OK;
    char path[4096];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    json_error_t jerr;
    b.tok = json_load_file(path, JSON_ALLOW_NUL, &jerr);
    if (b.tok == NULL) {
        rc = st_error(err, jerr.line > 0 ? STRATA_ERR_FORMAT : STRATA_ERR_IO, "%s: %s (line %d)", path, jerr.text,
                      jerr.line);
        goto done;
    }
    b.tcfg = load_opt(dir, "tokenizer_config.json");
    b.cfg = load_opt(dir, "config.json");
    b.model = json_object_get(b.tok, "model");
    b.vocab = json_object_get(b.model, "vocab");
    b.added = json_object_get(b.tok, "added_tokens");
    const char *mtype = json_string_value(json_object_get(b.model, "type"));
    if (!json_is_object(b.vocab) || (mtype != NULL && strcmp(mtype, "BPE") != 0)) {
        rc = st_error(err, STRATA_ERR_UNSUPPORTED, "%s: tokenizer model '%s' is not supported (BPE only)", path,
                      mtype ? mtype : "?");
        goto done;
    }
    bool spm = is_spm_style(b.tok, b.model);
    const char *pre = "default";
    if (!spm) {
        bool byte_level = false, bl_regex = false;
        const char *re = find_split_regex(json_object_get(b.tok, "pre_tokenizer"), &byte_level, &bl_regex);
        if (!byte_level) {
            const char *dt = json_string_value(json_object_get(json_object_get(b.tok, "decoder"), "type"));
            byte_level = dt != NULL && strcmp(dt, "ByteLevel") == 0;
        }
        if (!byte_level) {
            rc = st_error(err, STRATA_ERR_UNSUPPORTED, "%s: BPE without a ByteLevel pre-tokenizer or byte fallback "
                          "is not supported", path);
            goto done;
        }
        pre = NULL;
        if (re == NULL && bl_regex) {
            pre = "gpt-2";
        }
        for (size_t i = 0; re != NULL && i < sizeof(k_pre_regex) / sizeof(k_pre_regex[0]); i++) {
            if (strcmp(re, k_pre_regex[i].regex) == 0) {
                pre = k_pre_regex[i].pre;
            }
        }
        if (pre == NULL) {
            rc = st_error(err, STRATA_ERR_UNSUPPORTED,
                          "%s: pre-tokenizer regex '%.200s' is not one Strata knows (llama3, qwen2, gpt-2)", path,
                          re ? re : "(none)");
            goto done;
        }
    }
    if ((rc = collect_tokens(&b, vocab_size, spm)) != STRATA_OK ||
        (rc = normalize_user_defined(&b, &owned, &n_owned)) != STRATA_OK ||
        (rc = collect_merges(&b, &merges, &n_merges)) != STRATA_OK) {
        goto done;
    }
    gguf_writer_add_str(w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
    gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
    gguf_writer_add_str_arr(w, "tokenizer.ggml.tokens", b.text, NULL, (uint64_t)b.n);
    if (spm) {
        if ((rc = spm_scores(&b, merges, n_merges, &scores)) != STRATA_OK) {
            goto done;
        }
        gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_T_FLOAT32, scores, (uint64_t)b.n);
    }
    gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_T_INT32, b.types, (uint64_t)b.n);
    if (!spm) {
        gguf_writer_add_str_arr(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, (uint64_t)n_merges);
    }
    if (spm) {
        /* a normalizer or Metaspace that prepends U+2581 is SPM's add_dummy_prefix */
        char *d1 = json_dumps(json_object_get(b.tok, "normalizer"), JSON_COMPACT | JSON_ENCODE_ANY);
        char *d2 = json_dumps(json_object_get(b.tok, "pre_tokenizer"), JSON_COMPACT | JSON_ENCODE_ANY);
        bool prefix = (d1 != NULL && strstr(d1, "\"Prepend\"") != NULL) ||
                      (d2 != NULL && strstr(d2, "\"Metaspace\"") != NULL);
        free(d1);
        free(d2);
        gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", prefix);
    }
    add_special_ids(&b, w);
done:
    for (size_t i = 0; i < n_merges; i++) {
        free(merges[i]);
    }
    free(merges);
    for (size_t i = 0; i < n_owned; i++) {
        free(owned[i]);
    }
    free(owned);
    free(scores);
    free(b.text);
    free(b.types);
    free(b.pads);
    json_decref(b.tok);
    json_decref(b.tcfg);
    json_decref(b.cfg);
    return rc;
}
