/* Tokenizer tests: llama.cpp's own tokenizer test vectors (tests/fixtures/
 * vocab, from tests/fixtures/get-vocab.sh), round trips, special tokens,
 * hostile input, and small synthetic vocabularies built in memory. */
#include "test.h"
#include "gguf.h"
#include "tokenizer.h"

#include <stdint.h>

#define VOCAB_DIR "tests/fixtures/vocab/"
#define STORIES "../shared/models/stories260K.gguf"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, fp)) > 0;) {
        n += got;
        if (n == cap) {
            cap *= 2;
            char *p = realloc(buf, cap + 1);
            if (p == NULL) {
                free(buf);
                buf = NULL;
            }
            buf = p;
        }
    }
    fclose(fp);
    if (buf != NULL) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

static bool file_exists(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp != NULL) {
        fclose(fp);
    }
    return fp != NULL;
}

/* Load a tokenizer and close the GGUF at once (the tokenizer must not keep
 * pointers into it). */
static st_tokenizer *load_tokenizer(const char *path, double *ms)
{
    gguf_file *f = NULL;
    strata_error err = {0};
    if (gguf_open(path, false, &f, &err) != STRATA_OK) {
        fprintf(stderr, "gguf_open(%s): %s\n", path, err.msg);
        return NULL;
    }
    st_tokenizer *t = NULL;
    double t0 = st_now_ms();
    strata_err rc = st_tokenizer_load(f, &t, &err);
    if (ms != NULL) {
        *ms = st_now_ms() - t0;
    }
    gguf_close(f);
    if (rc != STRATA_OK) {
        fprintf(stderr, "st_tokenizer_load(%s): %s\n", path, err.msg);
        return NULL;
    }
    return t;
}

/* Tokenize into a malloc'd array (exercising the LIMIT/retry protocol). */
static strata_token *tokenize(const st_tokenizer *t, const char *s, size_t len, bool add_bos, bool special,
                              size_t *n)
{
    size_t need = 0;
    strata_token probe[4];
    strata_err rc = st_tokenize(t, s, len, add_bos, special, probe, 4, &need, NULL);
    CHECK(rc == STRATA_OK || rc == STRATA_ERR_LIMIT);
    strata_token *out = malloc((need + 1) * sizeof(*out));
    size_t got = 0;
    rc = st_tokenize(t, s, len, add_bos, special, out, need, &got, NULL);
    CHECK(rc == STRATA_OK && got == need);
    for (size_t i = 0; i < ST_MIN(need, (size_t)4); i++) {
        CHECK(out[i] == probe[i]);
    }
    *n = got;
    return out;
}

static char *detok(const st_tokenizer *t, const strata_token *toks, size_t n, bool special, size_t *len)
{
    char *s = NULL;
    strata_err rc = st_detokenize(t, toks, n, special, &s, len, NULL);
    CHECK(rc == STRATA_OK);
    return s;
}

static void print_tokens(const char *label, const strata_token *v, size_t n)
{
    fprintf(stderr, "  %s:", label);
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, " %d", v[i]);
    }
    fprintf(stderr, "\n");
}

/* ---------------------------------------------------- llama.cpp vectors -- */

/* As tests/test-tokenizer-0.cpp: inputs separated by
 * "\n__ggml_vocab_test__\n", expected ids one line per input, tokenized with
 * add_special = false, parse_special = false. */
static void run_vectors(const char *name, bool required)
{
    char gguf_path[256], inp_path[300], out_path[300];
    snprintf(gguf_path, sizeof(gguf_path), VOCAB_DIR "ggml-vocab-%s.gguf", name);
    snprintf(inp_path, sizeof(inp_path), "%s.inp", gguf_path);
    snprintf(out_path, sizeof(out_path), "%s.out", gguf_path);
    if (!file_exists(gguf_path) || !file_exists(inp_path) || !file_exists(out_path)) {
        if (required) {
            fprintf(stderr, "missing %s (and .inp/.out): run tests/fixtures/get-vocab.sh from the repo root\n",
                    gguf_path);
            CHECK_MSG(false, "tokenizer fixtures missing");
        } else {
            printf("skip %s: not extracted\n", name);
        }
        return;
    }
    double ms = 0;
    st_tokenizer *t = load_tokenizer(gguf_path, &ms);
    CHECK_MSG(t != NULL, "%s", name);
    if (t == NULL) {
        return;
    }
    printf("%s: %d tokens, %s, loaded in %.1f ms\n", name, st_tokenizer_n_vocab(t), st_tokenizer_kind(t), ms);

    size_t inp_len = 0, out_len = 0;
    char *inp = read_file(inp_path, &inp_len);
    char *exp = read_file(out_path, &out_len);
    CHECK(inp != NULL && exp != NULL);

    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t sep_len = sizeof(sep) - 1;
    size_t ipos = 0, opos = 0, n_cases = 0, n_ok = 0;
    while (inp && exp && ipos < inp_len) {
        const char *next = memmem(inp + ipos, inp_len - ipos, sep, sep_len);
        size_t case_len = next ? (size_t)(next - (inp + ipos)) : inp_len - ipos;
        const char *text = inp + ipos;
        ipos = next ? ipos + case_len + sep_len : inp_len;

        /* expected line */
        CHECK_MSG(opos < out_len, "%s: fewer .out lines than inputs", name);
        if (opos >= out_len) {
            break;
        }
        const char *eol = memchr(exp + opos, '\n', out_len - opos);
        size_t line_len = eol ? (size_t)(eol - (exp + opos)) : out_len - opos;
        strata_token want[4096];
        size_t n_want = 0;
        for (const char *p = exp + opos, *e = exp + opos + line_len; p < e && n_want < 4096;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) {
                p++;
                continue;
            }
            want[n_want++] = (strata_token)v;
            p = end;
        }
        opos += line_len + 1;

        size_t n_got = 0;
        strata_token *got = tokenize(t, text, case_len, false, false, &n_got);
        bool same = n_got == n_want && memcmp(got, want, n_got * sizeof(strata_token)) == 0;
        n_cases++;
        n_ok += same;
        CHECK_MSG(same, "%s: vector %zu '%.*s'", name, n_cases, (int)case_len, text);
        if (!same) {
            print_tokens("want", want, n_want);
            print_tokens("got ", got, n_got);
        }
        free(got);
    }
    printf("%s: %zu/%zu vectors match\n", name, n_ok, n_cases);
    CHECK(n_cases > 0);
    free(inp);
    free(exp);
    st_tokenizer_free(t);
}

/* ------------------------------------------------------------ round trips -- */

static void utf8_put(uint32_t cp, char *out, size_t *n)
{
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (char)(0xC0 | (cp >> 6));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xE0 | (cp >> 12));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*n)++] = (char)(0xF0 | (cp >> 18));
        out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

/* test-tokenizer-1-{spm,bpe}: every code point (bar surrogates, the
 * unassigned planes and U+2581) detokenizes back to itself. stride > 1
 * samples the range to keep sanitizer runs short. */
static void roundtrip_codepoints(const st_tokenizer *t, const char *name, uint32_t stride)
{
    size_t bad = 0, tested = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp += (cp < 0x3000 ? 1 : stride)) {
        if ((cp >= 0xD800 && cp <= 0xDFFF) || (cp >= 0x40000 && cp <= 0xE0000) || cp == 0x2581) {
            continue;
        }
        char s[4];
        size_t n = 0, nt = 0, nd = 0;
        utf8_put(cp, s, &n);
        strata_token *toks = tokenize(t, s, n, false, true, &nt);
        char *back = detok(t, toks, nt, true, &nd);
        tested++;
        if (back == NULL || nd != n || memcmp(back, s, n) != 0) {
            if (bad++ < 5) {
                fprintf(stderr, "%s: U+%04X detokenizes to '%s'\n", name, cp, back ? back : "(null)");
            }
        }
        free(back);
        free(toks);
    }
    CHECK_MSG(bad == 0, "%s: %zu of %zu code points do not round-trip", name, bad, tested);
}

/* test-tokenizer-1-spm: every token's text re-tokenizes to itself. */
static void roundtrip_tokens(const st_tokenizer *t, const char *name)
{
    size_t bad = 0;
    for (int i = 0; i < st_tokenizer_n_vocab(t); i++) {
        size_t n = 0, nt = 0, nd = 0;
        strata_token tok = i;
        char *str = detok(t, &tok, 1, true, &n);
        strata_token *toks = tokenize(t, str, n, false, true, &nt);
        char *back = detok(t, toks, nt, true, &nd);
        if (back == NULL || nd != n || memcmp(back, str, n) != 0) {
            if (bad++ < 5) {
                fprintf(stderr, "%s: token %d '%s' comes back as '%s'\n", name, i, str, back);
            }
        }
        free(str);
        free(back);
        free(toks);
    }
    CHECK_MSG(bad == 0, "%s: %zu tokens do not round-trip", name, bad);
}

static bool same_tokens(const st_tokenizer *t, const char *s, bool add_bos, bool special, const strata_token *want,
                        size_t n_want)
{
    size_t n = 0;
    strata_token *got = tokenize(t, s, strlen(s), add_bos, special, &n);
    bool same = n == n_want && memcmp(got, want, n * sizeof(*got)) == 0;
    if (!same) {
        fprintf(stderr, "tokens of '%s':\n", s);
        print_tokens("want", want, n_want);
        print_tokens("got ", got, n);
    }
    free(got);
    return same;
}

/* Hostile input: malformed UTF-8, NULs, empty, 1 MB. */
static void robustness(const st_tokenizer *t, const char *name, bool bytes_roundtrip)
{
    size_t n = 0;
    strata_token one[2];
    CHECK(st_tokenize(t, "", 0, false, false, one, 2, &n, NULL) == STRATA_OK && n == 0);
    CHECK(st_tokenize(t, NULL, 0, false, true, NULL, 0, &n, NULL) == STRATA_OK && n == 0);
    if (st_tokenizer_bos(t) >= 0) {
        CHECK(st_tokenize(t, "", 0, true, false, one, 2, &n, NULL) == STRATA_OK && n == 1 &&
              one[0] == st_tokenizer_bos(t));
    }
    CHECK(st_tokenize(t, NULL, 3, false, false, one, 2, &n, NULL) == STRATA_ERR_ARG);

    static const char *const bad[] = {"\xff", "\xc3", "a\xc3", "\xe2\x96", "\xf0\x9f\x98", "\x80\x80x",
                                      "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80",
                                      "ok\xfe\xffok", "\xe2\x96x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t nt = 0, nd = 0;
        strata_token *toks = tokenize(t, bad[i], strlen(bad[i]), false, true, &nt);
        char *back = detok(t, toks, nt, false, &nd);
        if (bytes_roundtrip) { /* SPM byte fallback keeps the bytes */
            CHECK_MSG(nd == strlen(bad[i]) && memcmp(back, bad[i], nd) == 0, "%s: bad utf-8 #%zu", name, i);
        }
        free(back);
        free(toks);
    }

    static const char nul[] = "a\0b\0\0c";
    size_t nt = 0, nd = 0;
    strata_token *toks = tokenize(t, nul, sizeof(nul) - 1, false, false, &nt);
    char *back = detok(t, toks, nt, false, &nd);
    CHECK_MSG(nd == sizeof(nul) - 1 && memcmp(back, nul, nd) == 0, "%s: NUL bytes", name);
    free(back);
    free(toks);

    /* 1 MB of mixed text, tags and garbage */
    size_t big_len = 1 << 20;
    char *big = malloc(big_len);
    static const char *const parts[] = {"Hello world, ", "  \n\t", "12345 ", "\xc3\xa9t\xc3\xa9 ", "<|im_end|>",
                                        "\xff\xfe", "</s>", "\xf0\x9f\xa6\x99", "don't ", "........"};
    uint32_t rng = 12345;
    for (size_t pos = 0; pos < big_len;) {
        rng = rng * 1103515245u + 12345u;
        const char *p = parts[(rng >> 16) % 10];
        size_t k = ST_MIN(strlen(p), big_len - pos);
        memcpy(big + pos, p, k);
        pos += k;
    }
    for (int special = 0; special < 2; special++) {
        double t0 = st_now_ms();
        toks = tokenize(t, big, big_len, true, special, &nt);
        double ms = st_now_ms() - t0;
        printf("%s: 1 MB -> %zu tokens in %.0f ms (parse_special %d)\n", name, nt, ms, special);
        CHECK(nt > 1000);
        back = detok(t, toks, nt, special, &nd);
        CHECK(back != NULL && nd > 0);
        free(back);
        free(toks);
    }
    free(big);
}

/* ------------------------------------------------------- real vocabs -- */

static void test_llama_spm(void)
{
    st_tokenizer *t = load_tokenizer(VOCAB_DIR "ggml-vocab-llama-spm.gguf", NULL);
    if (t == NULL) {
        return;
    }
    CHECK(strcmp(st_tokenizer_kind(t), "spm") == 0);
    CHECK(st_tokenizer_bos(t) == 1 && st_tokenizer_eos(t) == 2 && st_tokenizer_add_bos_default(t));
    CHECK(st_token_is_eog(t, 2) && !st_token_is_eog(t, 1) && st_token_is_control(t, 1));

    size_t len;
    const char *b = st_token_bytes(t, st_tokenizer_find(t, "\xe2\x96\x81Hello"), &len);
    CHECK(len == 6 && memcmp(b, " Hello", 6) == 0);
    b = st_token_bytes(t, st_tokenizer_find(t, "<0x0A>"), &len);
    CHECK(len == 1 && b[0] == '\n');
    b = st_token_bytes(t, st_tokenizer_find(t, "<0x00>"), &len);
    CHECK(len == 1 && b[0] == '\0');
    st_token_bytes(t, 2, &len);
    CHECK(len == 0);
    st_token_bytes(t, -1, &len);
    CHECK(len == 0);

    char buf[16];
    CHECK(st_token_to_piece(t, 2, buf, sizeof(buf), false) == 0);
    CHECK(st_token_to_piece(t, 2, buf, sizeof(buf), true) == 4 && memcmp(buf, "</s>", 4) == 0);
    CHECK(st_token_to_piece(t, 2, buf, 2, true) == -4);
    CHECK(st_token_to_piece(t, 1000000, buf, sizeof(buf), true) == 0);

    /* control tokens only with parse_special; the space prefix after them */
    strata_token want1[] = {1, 15043};                   /* <s>, ▁Hello */
    strata_token want2[] = {529, 29879, 29958, 10994}; /* ▁<, s, >, Hello */
    CHECK(same_tokens(t, "<s>Hello", false, true, want1, 2));
    CHECK(same_tokens(t, "<s>Hello", false, false, want2, 4));
    /* the text after a special token gets the space prefix too: " " -> "▁▁" */
    strata_token want3[] = {1, 15043, 2, 259, 1};
    CHECK(same_tokens(t, "Hello</s> <s>", true, true, want3, 5));

    /* detokenize: the first piece's leading space goes, not after BOS */
    strata_token hello[] = {15043, 3186};
    strata_token bos_hello[] = {1, 15043};
    size_t n;
    char *s = detok(t, hello, 2, false, &n);
    CHECK(strcmp(s, "Hello world") == 0);
    free(s);
    s = detok(t, bos_hello, 2, false, &n);
    CHECK(strcmp(s, " Hello") == 0);
    free(s);
    s = detok(t, bos_hello, 2, true, &n);
    CHECK(strcmp(s, "<s> Hello") == 0);
    free(s);
    strata_token out_of_range = 32000;
    CHECK(st_detokenize(t, &out_of_range, 1, false, &s, &n, NULL) == STRATA_ERR_ARG && s == NULL);

    roundtrip_tokens(t, "llama-spm");
    roundtrip_codepoints(t, "llama-spm", SANITIZED ? 61 : 1);
    robustness(t, "llama-spm", true);
    st_tokenizer_free(t);
}

static void test_qwen2(void)
{
    double ms = 0;
    st_tokenizer *t = load_tokenizer(VOCAB_DIR "ggml-vocab-qwen2.gguf", &ms);
    if (t == NULL) {
        return;
    }
    /* speed is the benchmark's business, not a test's: just report it */
    printf("qwen2 vocab loaded in %.1f ms\n", ms);
    CHECK(strcmp(st_tokenizer_kind(t), "bpe") == 0);
    CHECK(st_tokenizer_find(t, "<|im_end|>") == 151645);
    CHECK(st_tokenizer_find(t, "<|im_start|>") == 151644);
    CHECK(st_tokenizer_find(t, "no such token") == -1);
    CHECK(st_tokenizer_eos(t) == 151643 && st_tokenizer_eot(t) == 151645);
    CHECK(!st_tokenizer_add_bos_default(t));
    CHECK(st_token_is_eog(t, 151643) && st_token_is_eog(t, 151645) && !st_token_is_eog(t, 151644));
    CHECK(!st_token_is_eog(t, 9707));
    CHECK(st_tokenizer_find(t, "[PAD151646]") == 151646 && !st_token_is_control(t, 151646));

    size_t len;
    const char *b = st_token_bytes(t, st_tokenizer_find(t, "\xc4\xa0hello"), &len); /* "Ġhello" */
    CHECK(len == 6 && memcmp(b, " hello", 6) == 0);
    b = st_token_bytes(t, st_tokenizer_find(t, "\xc4\x8a"), &len); /* "Ċ" */
    CHECK(len == 1 && b[0] == '\n');
    st_token_bytes(t, 151645, &len);
    CHECK(len == 0);

    /* chat markup: special tokens only when asked */
    const char *chat = "<|im_start|>user\nHi<|im_end|>\n";
    size_t n = 0;
    strata_token *toks = tokenize(t, chat, strlen(chat), false, true, &n);
    CHECK(n == 6 && toks[0] == 151644 && toks[4] == 151645);
    free(toks);
    toks = tokenize(t, chat, strlen(chat), false, false, &n);
    CHECK(n > 10);
    for (size_t i = 0; i < n; i++) {
        CHECK(toks[i] != 151644 && toks[i] != 151645);
    }
    char *s = detok(t, toks, n, false, &len);
    CHECK(strcmp(s, chat) == 0);
    free(s);
    free(toks);

    /* LIMIT: the first cap tokens are written, n_out says how many are needed */
    strata_token two[2] = {-7, -7};
    strata_error err = {0};
    CHECK(st_tokenize(t, "Hello world, how are you?", 25, false, false, two, 2, &n, &err) == STRATA_ERR_LIMIT);
    CHECK(n == 7 && two[0] == 9707 && two[1] == 1879 && err.code == STRATA_ERR_LIMIT);

    roundtrip_codepoints(t, "qwen2", SANITIZED ? 61 : 7);
    robustness(t, "qwen2", false);
    st_tokenizer_free(t);
}

static void test_llama_bpe(void)
{
    st_tokenizer *t = load_tokenizer(VOCAB_DIR "ggml-vocab-llama-bpe.gguf", NULL);
    if (t == NULL) {
        return;
    }
    CHECK(st_tokenizer_bos(t) == 128000 && st_tokenizer_eos(t) == 128001 && st_tokenizer_add_bos_default(t));
    CHECK(st_tokenizer_eot(t) == 128009);
    CHECK(st_token_is_eog(t, 128001) && st_token_is_eog(t, 128009) && !st_token_is_eog(t, 128000));
    strata_token want[] = {128000, 128006, 882, 128007, 271, 13347, 128009};
    CHECK(same_tokens(t, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", true, true, want, 7));

    /* clean_up_tokenization_spaces */
    size_t n = 0, len = 0;
    strata_token *toks = tokenize(t, "Hello , world ! it 's", 21, false, false, &n);
    char *s = detok(t, toks, n, false, &len);
    CHECK(strcmp(s, "Hello, world! it's") == 0);
    free(s);
    free(toks);

    roundtrip_codepoints(t, "llama-bpe", SANITIZED ? 61 : 7);
    robustness(t, "llama-bpe", false);
    st_tokenizer_free(t);
}

/* Phi-3 (when extracted): its special tokens swallow the whitespace after them */
static void test_phi3(void)
{
    if (!file_exists(VOCAB_DIR "ggml-vocab-phi-3.gguf")) {
        return;
    }
    st_tokenizer *t = load_tokenizer(VOCAB_DIR "ggml-vocab-phi-3.gguf", NULL);
    CHECK(t != NULL);
    if (t == NULL) {
        return;
    }
    strata_token want[] = {32010, 15043, 32007};
    CHECK(same_tokens(t, "<|user|>\nHello<|end|>\n", false, true, want, 3));
    CHECK(st_token_is_eog(t, 32007) && st_token_is_eog(t, 32000));
    st_tokenizer_free(t);
}

static void test_stories(void)
{
    if (!file_exists(STORIES)) {
        fprintf(stderr, "missing %s\n", STORIES);
        CHECK_MSG(false, "stories260K.gguf missing");
        return;
    }
    st_tokenizer *t = load_tokenizer(STORIES, NULL);
    CHECK(t != NULL);
    if (t == NULL) {
        return;
    }
    CHECK(st_tokenizer_n_vocab(t) == 512);
    strata_token want[] = {403, 407, 261, 378};
    CHECK(same_tokens(t, "Once upon a time", false, false, want, 4));
    strata_token want_bos[] = {1, 403, 407, 261, 378};
    CHECK(same_tokens(t, "Once upon a time", true, false, want_bos, 5));
    CHECK(st_tokenizer_chat_template(t) == NULL);
    robustness(t, "stories260K", true);
    st_tokenizer_free(t);
}

/* ------------------------------------------------- synthetic vocabs -- */

/* A tiny GGUF image writer: header, then key/value pairs. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
    uint64_t n_kv;
} ggbuf;

static void gb_raw(ggbuf *g, const void *src, size_t n)
{
    if (g->n + n > g->cap) {
        g->cap = (g->n + n) * 2 + 256;
        g->p = realloc(g->p, g->cap);
    }
    memcpy(g->p + g->n, src, n);
    g->n += n;
}
static void gb_u32(ggbuf *g, uint32_t v) { gb_raw(g, &v, 4); }
static void gb_u64(ggbuf *g, uint64_t v) { gb_raw(g, &v, 8); }
static void gb_str(ggbuf *g, const char *s)
{
    gb_u64(g, strlen(s));
    gb_raw(g, s, strlen(s));
}
static void gb_key(ggbuf *g, const char *key, gguf_type type)
{
    gb_str(g, key);
    gb_u32(g, type);
    g->n_kv++;
}
static void gb_kv_str(ggbuf *g, const char *key, const char *v)
{
    gb_key(g, key, GGUF_T_STRING);
    gb_str(g, v);
}
static void gb_kv_u32(ggbuf *g, const char *key, uint32_t v)
{
    gb_key(g, key, GGUF_T_UINT32);
    gb_u32(g, v);
}
static void gb_kv_strs(ggbuf *g, const char *key, const char *const *v, size_t n)
{
    gb_key(g, key, GGUF_T_ARRAY);
    gb_u32(g, GGUF_T_STRING);
    gb_u64(g, n);
    for (size_t i = 0; i < n; i++) {
        gb_str(g, v[i]);
    }
}
static void gb_kv_arr32(ggbuf *g, const char *key, gguf_type type, const void *v, size_t n)
{
    gb_key(g, key, GGUF_T_ARRAY);
    gb_u32(g, type);
    gb_u64(g, n);
    gb_raw(g, v, 4 * n);
}
static void gb_begin(ggbuf *g)
{
    memset(g, 0, sizeof(*g));
    gb_raw(g, "GGUF", 4);
    gb_u32(g, 3);
    gb_u64(g, 0); /* tensors */
    gb_u64(g, 0); /* kv count, patched by gb_end */
}
static void gb_end(ggbuf *g)
{
    memcpy(g->p + 16, &g->n_kv, 8);
}

static strata_err load_image(ggbuf *g, st_tokenizer **t, strata_error *err)
{
    gb_end(g);
    gguf_file *f = NULL;
    strata_err rc = gguf_parse(g->p, g->n, &f, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    rc = st_tokenizer_load(f, t, err);
    gguf_close(f);
    return rc;
}

static void test_synthetic_spm(void)
{
    /* scores decide the merge order: "ab" beats "bc", so "abc" -> ab, c */
    static const char *const toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "c", "ab", "bc",
                                       "<0x41>", "<tag>"};
    static const float scores[] = {0, 0, 0, -1, -1, -1, -1, -2, -3, 0, 0};
    static const int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 6, 4};
    ggbuf g;
    gb_begin(&g);
    gb_kv_str(&g, "tokenizer.ggml.model", "llama");
    gb_kv_strs(&g, "tokenizer.ggml.tokens", toks, 11);
    gb_kv_arr32(&g, "tokenizer.ggml.scores", GGUF_T_FLOAT32, scores, 11);
    gb_kv_arr32(&g, "tokenizer.ggml.token_type", GGUF_T_INT32, types, 11);
    gb_key(&g, "tokenizer.ggml.add_space_prefix", GGUF_T_BOOL);
    gb_raw(&g, "\0", 1);
    gb_kv_str(&g, "tokenizer.chat_template", "{{ hi }}");
    st_tokenizer *t = NULL;
    strata_error err = {0};
    CHECK(load_image(&g, &t, &err) == STRATA_OK);
    free(g.p);
    if (t == NULL) {
        fprintf(stderr, "synthetic spm: %s\n", err.msg);
        return;
    }
    CHECK(strcmp(st_tokenizer_chat_template(t), "{{ hi }}") == 0);
    strata_token w1[] = {7, 6}; /* ab c */
    CHECK(same_tokens(t, "abc", false, false, w1, 2));
    /* "A" has a byte token; "Z" has neither token nor byte token: <unk> */
    strata_token w2[] = {9, 0, 4};
    CHECK(same_tokens(t, "AZa", false, false, w2, 3));
    /* user-defined tokens split the text even without parse_special */
    strata_token w3[] = {4, 10, 5};
    CHECK(same_tokens(t, "a<tag>b", false, false, w3, 3));
    st_tokenizer_free(t);
}

static void test_synthetic_bpe(void)
{
    /* byte-level alphabet: "Ġ" is ' ' */
    static const char *const toks[] = {"a", "b", "\xc4\xa0", "ab", "\304\240ab", "<|end|>", "1", "2", "12",
                                       "<|im_end|>", "<|fim_pad|>"};
    static const char *const merges[] = {"a b", "\xc4\xa0 ab", "1 2", "broken"};
    ggbuf g;
    gb_begin(&g);
    gb_kv_str(&g, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(&g, "tokenizer.ggml.pre", "qwen2");
    gb_kv_strs(&g, "tokenizer.ggml.tokens", toks, 11);
    gb_kv_strs(&g, "tokenizer.ggml.merges", merges, 4);
    gb_kv_u32(&g, "tokenizer.ggml.eos_token_id", 5);
    gb_kv_u32(&g, "tokenizer.ggml.bos_token_id", 99); /* out of range: ignored */
    st_tokenizer *t = NULL;
    strata_error err = {0};
    CHECK(load_image(&g, &t, &err) == STRATA_OK);
    free(g.p);
    if (t == NULL) {
        fprintf(stderr, "synthetic bpe: %s\n", err.msg);
        return;
    }
    CHECK(st_tokenizer_eos(t) == 5 && st_token_is_eog(t, 5) && st_token_is_control(t, 5));
    CHECK(st_tokenizer_bos(t) == -1 && !st_tokenizer_add_bos_default(t)); /* default 11 is out of range */
    /* found by name: EOT (first candidate in llama.cpp's list order), FIM pad;
     * both become control tokens and end generation */
    CHECK(st_tokenizer_eot(t) == 9 && st_token_is_eog(t, 9) && st_token_is_control(t, 9));
    CHECK(st_token_is_eog(t, 10) && st_token_is_control(t, 10) && !st_token_is_eog(t, 0));
    strata_token w4[] = {10, 0};
    CHECK(same_tokens(t, "<|fim_pad|>a", false, true, w4, 2));
    size_t n4 = 0;
    strata_token *t4 = tokenize(t, "<|fim_pad|>a", 12, false, false, &n4);
    CHECK(n4 == 2 && t4[0] == 0 && t4[1] == 0); /* only the a of "pad" and the last a are tokens here */
    free(t4);
    strata_token w1[] = {3, 4, 6, 7}; /* ab Ġab 1 2 (qwen2 splits digits) */
    CHECK(same_tokens(t, "ab ab12", false, false, w1, 4));
    strata_token w2[] = {0, 5};
    CHECK(same_tokens(t, "a<|end|>", false, true, w2, 2));
    /* "c" is not in the vocabulary: dropped, as llama.cpp does */
    strata_token w3[] = {0};
    CHECK(same_tokens(t, "ac", false, false, w3, 1));
    st_tokenizer_free(t);

    /* errors */
    gb_begin(&g);
    gb_kv_str(&g, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(&g, "tokenizer.ggml.pre", "no-such-pre");
    gb_kv_strs(&g, "tokenizer.ggml.tokens", toks, 9);
    gb_kv_strs(&g, "tokenizer.ggml.merges", merges, 4);
    CHECK(load_image(&g, &t, &err) == STRATA_ERR_UNSUPPORTED && t == NULL);
    CHECK(strstr(err.msg, "no-such-pre") != NULL);
    free(g.p);

    gb_begin(&g);
    gb_kv_str(&g, "tokenizer.ggml.model", "gpt2");
    gb_kv_strs(&g, "tokenizer.ggml.tokens", toks, 9);
    CHECK(load_image(&g, &t, &err) == STRATA_ERR_FORMAT && t == NULL); /* no merges */
    free(g.p);

    gb_begin(&g);
    gb_kv_str(&g, "general.name", "no tokenizer");
    CHECK(load_image(&g, &t, &err) == STRATA_ERR_FORMAT && t == NULL);
    free(g.p);

    gb_begin(&g);
    gb_kv_str(&g, "tokenizer.ggml.model", "bert");
    gb_kv_strs(&g, "tokenizer.ggml.tokens", toks, 9);
    CHECK(load_image(&g, &t, &err) == STRATA_ERR_UNSUPPORTED && t == NULL);
    free(g.p);

    static const float short_scores[] = {0, 0};
    gb_begin(&g);
    gb_kv_str(&g, "tokenizer.ggml.model", "llama");
    gb_kv_strs(&g, "tokenizer.ggml.tokens", toks, 9);
    gb_kv_arr32(&g, "tokenizer.ggml.scores", GGUF_T_FLOAT32, short_scores, 2);
    CHECK(load_image(&g, &t, &err) == STRATA_ERR_FORMAT && t == NULL);
    free(g.p);
}

int main(void)
{
    run_vectors("llama-spm", true);
    run_vectors("llama-bpe", true);
    run_vectors("qwen2", true);
    run_vectors("gpt-2", false);
    run_vectors("phi-3", false);
    run_vectors("mpt", false);
    run_vectors("starcoder", false);
    run_vectors("qwen35", false);
    if (file_exists(VOCAB_DIR "ggml-vocab-llama-spm.gguf")) {
        test_llama_spm();
        test_qwen2();
        test_llama_bpe();
        test_phi3();
    }
    test_stories();
    test_synthetic_spm();
    test_synthetic_bpe();
    TEST_MAIN_END();
}
