/* Split store: round trip, compression, resume after an interrupted split,
 * corrupt / missing / incomplete / garbage stores, disk-space refusal. */
#include "store.h"
#include "test.h"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* Per-process folder, so concurrent runs on a shared machine do not collide. */
static char dir_base[64];

/* dir_base + suffix in a buffer of its own (never reused: callers keep them). */
static const char *P(const char *suffix)
{
    static char bufs[1024][192];
    static int next;
    if (next == 1024) {
        fprintf(stderr, "P(): out of path buffers\n");
        abort();
    }
    char *b = bufs[next++];
    snprintf(b, sizeof(bufs[0]), "%s%s", dir_base, suffix);
    return b;
}

static void rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

static void flip_byte(const char *path, long off)
{
    FILE *f = fopen(path, "r+b");
    CHECK(f != NULL);
    if (f == NULL) {
        return;
    }
    fseek(f, off, off < 0 ? SEEK_END : SEEK_SET);
    int c = fgetc(f);
    fseek(f, off < 0 ? -1 : off, off < 0 ? SEEK_CUR : SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs(text, f);
        fclose(f);
    }
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = '\0';
    fclose(f);
    return s;
}

/* Every tensor of every part equals the source's (compression none). */
static void check_parts_equal_source(const char *src, const char *dir)
{
    gguf_file *g;
    st_store *s;
    strata_error err = {0};
    CHECK(gguf_open(src, true, &g, &err) == STRATA_OK);
    CHECK_MSG(st_store_open(dir, &s, &err) == STRATA_OK, "%s", err.msg);
    if (s == NULL) {
        gguf_close(g);
        return;
    }
    uint64_t seen = 0;
    for (int i = 0; i < s->n_parts; i++) {
        gguf_file *p;
        CHECK(gguf_open(s->parts[i].path, true, &p, &err) == STRATA_OK);
        for (uint64_t t = 0; t < p->n_tensors; t++) {
            char name[128];
            snprintf(name, sizeof(name), "%.*s", (int)p->tensors[t].name.len, p->tensors[t].name.ptr);
            const gguf_tensor *o = gguf_find_tensor(g, strcmp(name, "output.weight") == 0 &&
                                                               gguf_find_tensor(g, "output.weight") == NULL
                                                           ? "token_embd.weight"
                                                           : name);
            CHECK_MSG(o != NULL, "%s", name);
            if (o != NULL && o->type == p->tensors[t].type) {
                CHECK_MSG(o->nbytes == p->tensors[t].nbytes && memcmp(o->data, p->tensors[t].data, o->nbytes) == 0,
                          "tensor %s differs", name);
            }
            seen++;
        }
        gguf_close(p);
    }
    CHECK(seen >= g->n_tensors);
    st_store_close(s);
    gguf_close(g);
}

static void test_round_trip(void)
{
    const char *src = P("/m.gguf"), *dir = P("/m.store");
    CHECK(test_mkmodel("--arch llama --type Q8_0 --dim 64 --layers 4 --heads 4 --kv-heads 2 --ff 128", src));
    st_split_opts o;
    st_split_opts_default(&o);
    strata_error err = {0};
    CHECK_MSG(st_store_split(src, dir, &o, &err) == STRATA_OK, "%s", err.msg);
    CHECK(o.n_parts_written == 4 + 3);
    st_store *s = NULL;
    CHECK_MSG(st_store_open(dir, &s, &err) == STRATA_OK, "%s", err.msg);
    CHECK(s != NULL && s->n_layers == 4 && s->n_parts == 6 && s->compression == ST_COMPRESS_NONE);
    if (s != NULL) {
        CHECK(strstr(s->parts[0].path, "embed.gguf") != NULL);
        CHECK(strstr(s->parts[5].path, "head.gguf") != NULL);
        CHECK(st_store_part_index(s, ST_PART_EMBED) == 0 && st_store_part_index(s, ST_PART_HEAD(4)) == 5);
        CHECK(st_store_verify(s, &err) == STRATA_OK);
        st_store_close(s);
    }
    check_parts_equal_source(src, dir);
    /* complete and unchanged: nothing to do */
    CHECK(st_store_split(src, dir, &o, &err) == STRATA_OK);
    CHECK(o.n_parts_written == 0);
    /* metadata loads from meta.gguf without tensors */
    strata_model *m = NULL;
    CHECK_MSG(st_model_load_meta(P("/m.store/meta.gguf"), NULL, &m, &err) == STRATA_OK, "%s", err.msg);
    if (m != NULL) {
        CHECK(m->hp.n_layers == 4 && m->hp.n_embd == 64 && m->hp.n_vocab == 512 && m->layers == NULL);
        strata_model_free(m);
    }

    /* a tied F16 model: head.gguf carries a copy of the embeddings */
    const char *src2 = P("/t.gguf"), *dir2 = P("/t.store");
    CHECK(test_mkmodel("--arch qwen2 --type F16 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128 --tied", src2));
    CHECK_MSG(st_store_split(src2, dir2, &o, &err) == STRATA_OK, "%s", err.msg);
    check_parts_equal_source(src2, dir2);
}

static st_type part_tensor_type(const char *path, const char *name)
{
    gguf_file *g;
    strata_error err;
    if (gguf_open(path, true, &g, &err) != STRATA_OK) {
        return ST_TYPE_COUNT;
    }
    const gguf_tensor *t = gguf_find_tensor(g, name);
    st_type ty = t ? t->type : ST_TYPE_COUNT;
    gguf_close(g);
    return ty;
}

static void test_compression(void)
{
    const char *src = P("/f16.gguf"), *dir = P("/f16.store");
    CHECK(test_mkmodel("--arch qwen3 --type F16 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128", src));
    st_split_opts o;
    st_split_opts_default(&o);
    strata_error err = {0};
    uint64_t est_none, est8, est4;
    CHECK(st_store_estimate(src, ST_COMPRESS_NONE, &est_none, &err) == STRATA_OK);
    CHECK(st_store_estimate(src, ST_COMPRESS_8BIT, &est8, &err) == STRATA_OK);
    CHECK(st_store_estimate(src, ST_COMPRESS_4BIT, &est4, &err) == STRATA_OK);
    CHECK(est8 < est_none && est4 < est8);

    o.compression = ST_COMPRESS_8BIT;
    CHECK_MSG(st_store_split(src, dir, &o, &err) == STRATA_OK, "%s", err.msg);
    CHECK(part_tensor_type(P("/f16.store/blk.0.gguf"), "blk.0.attn_q.weight") == ST_Q8_0);
    CHECK(part_tensor_type(P("/f16.store/blk.0.gguf"), "blk.0.attn_norm.weight") == ST_F32);
    CHECK(part_tensor_type(P("/f16.store/blk.0.gguf"), "blk.0.attn_q_norm.weight") == ST_F32);
    CHECK(part_tensor_type(P("/f16.store/embed.gguf"), "token_embd.weight") == ST_Q8_0);
    struct stat st;
    CHECK(stat(P("/f16.store/blk.1.gguf"), &st) == 0);
    off_t blk8 = st.st_size;

    /* another compression redoes the store */
    o.compression = ST_COMPRESS_4BIT;
    CHECK_MSG(st_store_split(src, dir, &o, &err) == STRATA_OK, "%s", err.msg);
    CHECK(o.n_parts_written == 2 + 3 && o.n_parts_kept == 0);
    CHECK(part_tensor_type(P("/f16.store/blk.1.gguf"), "blk.1.ffn_down.weight") == ST_Q4_0);
    CHECK(stat(P("/f16.store/blk.1.gguf"), &st) == 0);
    CHECK(st.st_size < blk8 * 6 / 10);
    st_store *s = NULL;
    CHECK(st_store_open(dir, &s, &err) == STRATA_OK);
    CHECK(s != NULL && s->compression == ST_COMPRESS_4BIT);
    st_store_close(s);

    /* a Q4_K model under 8bit keeps its Q4_K matrices */
    const char *srck = P("/q4k.gguf"), *dirk = P("/q4k.store");
    CHECK(test_mkmodel("--arch llama --type Q4_K --dim 256 --layers 1 --heads 4 --kv-heads 4 --ff 512", srck));
    o.compression = ST_COMPRESS_8BIT;
    CHECK_MSG(st_store_split(srck, dirk, &o, &err) == STRATA_OK, "%s", err.msg);
    CHECK(part_tensor_type(P("/q4k.store/blk.0.gguf"), "blk.0.attn_q.weight") == ST_Q4_K);
    o.compression = ST_COMPRESS_4BIT;
    CHECK_MSG(st_store_split(srck, dirk, &o, &err) == STRATA_OK, "%s", err.msg);
    CHECK(part_tensor_type(P("/q4k.store/blk.0.gguf"), "blk.0.attn_q.weight") == ST_Q4_K);
}

static void test_resume(void)
{
    const char *src = P("/m.gguf"), *dir = P("/r.store");
    st_split_opts o;
    st_split_opts_default(&o);
    strata_error err = {0};
    o.fail_after_parts = 3;
    CHECK(st_store_split(src, dir, &o, &err) == STRATA_ERR_IO);
    CHECK(o.n_parts_written == 3);
    CHECK(strstr(err.msg, "interrupted") != NULL);
    st_store *s = NULL;
    CHECK(st_store_open(dir, &s, &err) == STRATA_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "incomplete") != NULL, "%s", err.msg);
    /* a part damaged while interrupted is redone, the others kept */
    flip_byte(P("/r.store/embed.gguf"), -1);
    o.fail_after_parts = -1;
    CHECK_MSG(st_store_split(src, dir, &o, &err) == STRATA_OK, "%s", err.msg);
    CHECK_MSG(o.n_parts_kept == 2 && o.n_parts_written == 5, "kept %d written %d", o.n_parts_kept,
              o.n_parts_written);
    CHECK_MSG(st_store_open(dir, &s, &err) == STRATA_OK, "%s", err.msg);
    if (s != NULL) {
        CHECK(st_store_verify(s, &err) == STRATA_OK);
        st_store_close(s);
    }
    check_parts_equal_source(src, dir);
}

static void test_broken_stores(void)
{
    const char *src = P("/m.gguf"), *dir = P("/b.store");
    st_split_opts o;
    st_split_opts_default(&o);
    strata_error err = {0};
    st_store *s = NULL;
    CHECK(st_store_split(src, dir, &o, &err) == STRATA_OK);

    /* corrupt part: verify names the file */
    flip_byte(P("/b.store/blk.1.gguf"), -3);
    CHECK(st_store_open(dir, &s, &err) == STRATA_OK);
    if (s != NULL) {
        CHECK(st_store_verify(s, &err) == STRATA_ERR_FORMAT);
        CHECK_MSG(strstr(err.msg, "blk.1.gguf") != NULL && strstr(err.msg, "checksum") != NULL, "%s", err.msg);
        st_store_close(s);
        s = NULL;
    }
    /* corrupt meta: caught at open */
    CHECK(st_store_split(src, dir, &o, &err) == STRATA_OK); /* complete store: left as is */
    flip_byte(P("/b.store/meta.gguf"), -2);
    CHECK(st_store_open(dir, &s, &err) == STRATA_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "meta.gguf") != NULL, "%s", err.msg);
    rm_rf(dir);
    CHECK(st_store_split(src, dir, &o, &err) == STRATA_OK);

    /* missing part file */
    CHECK(unlink(P("/b.store/blk.2.gguf")) == 0);
    CHECK(st_store_open(dir, &s, &err) == STRATA_ERR_IO);
    CHECK_MSG(strstr(err.msg, "blk.2.gguf") != NULL && strstr(err.msg, "missing") != NULL, "%s", err.msg);
    /* truncated part */
    CHECK(st_store_split(src, dir, &o, &err) == STRATA_OK && o.n_parts_written == 1);
    CHECK(truncate(P("/b.store/head.gguf"), 100) == 0);
    CHECK(st_store_open(dir, &s, &err) == STRATA_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "head.gguf") != NULL, "%s", err.msg);

    /* manifest without the completion marker */
    CHECK(st_store_split(src, dir, &o, &err) == STRATA_OK);
    char *text = read_text(P("/b.store/manifest.json"));
    CHECK(text != NULL);
    if (text != NULL) {
        char *c = strstr(text, "\"complete\": true");
        CHECK(c != NULL);
        if (c != NULL) {
            memcpy(c, "\"complete\": 0   ", 16);
            write_text(P("/b.store/manifest.json"), text);
            CHECK(st_store_open(dir, &s, &err) == STRATA_ERR_FORMAT);
            CHECK_MSG(strstr(err.msg, "incomplete") != NULL, "%s", err.msg);
        }
        /* garbage JSON */
        write_text(P("/b.store/manifest.json"), "{\"format\": \"strata-store\", \"parts\": [1, 2,");
        CHECK(st_store_open(dir, &s, &err) == STRATA_ERR_FORMAT);
        CHECK_MSG(strstr(err.msg, "manifest.json") != NULL && strstr(err.msg, "line") != NULL, "%s", err.msg);
        write_text(P("/b.store/manifest.json"), "[]");
        CHECK(st_store_open(dir, &s, &err) == STRATA_ERR_FORMAT);
        write_text(P("/b.store/manifest.json"), "{\"format\": \"strata-store\", \"version\": 1, "
                                                      "\"complete\": true, \"compression\": \"none\", "
                                                      "\"n_layers\": 4, \"parts\": {}}");
        CHECK(st_store_open(dir, &s, &err) == STRATA_ERR_FORMAT);
        CHECK_MSG(strstr(err.msg, "meta") != NULL, "%s", err.msg);
        free(text);
        /* a garbage manifest does not stop a new split */
        CHECK_MSG(st_store_split(src, dir, &o, &err) == STRATA_OK, "%s", err.msg);
        CHECK(st_store_open(dir, &s, &err) == STRATA_OK);
        st_store_close(s);
        s = NULL;
    }
    /* no manifest at all */
    CHECK(st_store_open(P(""), &s, &err) == STRATA_ERR_IO);
    CHECK_MSG(strstr(err.msg, "manifest.json") != NULL, "%s", err.msg);
    CHECK(st_store_open(P("/nowhere"), &s, &err) == STRATA_ERR_IO);
}

static void test_disk_space(void)
{
    const char *src = P("/m.gguf"), *dir = P("/d.store");
    st_split_opts o;
    st_split_opts_default(&o);
    strata_error err = {0};
    uint64_t need;
    CHECK(st_store_estimate(src, ST_COMPRESS_NONE, &need, &err) == STRATA_OK);
    struct stat st;
    CHECK(stat(src, &st) == 0);
    CHECK(need >= (uint64_t)st.st_size);
    o.avail_bytes = (int64_t)need / 2;
    CHECK(st_store_split(src, dir, &o, &err) == STRATA_ERR_IO);
    CHECK_MSG(strstr(err.msg, "not enough disk space") != NULL, "%s", err.msg);
    CHECK(o.n_parts_written == 0);
    CHECK(access(P("/d.store/blk.0.gguf"), F_OK) != 0);
    /* the 4bit store needs less: it fits where none does not */
    uint64_t need4;
    const char *src16 = P("/f16.gguf");
    CHECK(st_store_estimate(src16, ST_COMPRESS_NONE, &need, &err) == STRATA_OK);
    CHECK(st_store_estimate(src16, ST_COMPRESS_4BIT, &need4, &err) == STRATA_OK);
    o.avail_bytes = (int64_t)(need4 + need) / 2;
    CHECK(st_store_split(src16, P("/d16.store"), &o, &err) == STRATA_ERR_IO);
    o.compression = ST_COMPRESS_4BIT;
    CHECK_MSG(st_store_split(src16, P("/d16.store"), &o, &err) == STRATA_OK, "%s", err.msg);
    /* real statvfs path */
    o.avail_bytes = -1;
    o.compression = ST_COMPRESS_NONE;
    CHECK_MSG(st_store_split(src, dir, &o, &err) == STRATA_OK, "%s", err.msg);
}

static void test_delete_original(void)
{
    const char *src = P("/del.gguf"), *dir = P("/del.store");
    CHECK(test_mkmodel("--arch llama --type Q8_0 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 128", src));
    st_split_opts o;
    st_split_opts_default(&o);
    o.delete_original = true;
    strata_error err = {0};
    CHECK_MSG(st_store_split(src, dir, &o, &err) == STRATA_OK, "%s", err.msg);
    CHECK(access(src, F_OK) != 0);
    /* the store stands on its own */
    CHECK(st_store_split(src, dir, &o, &err) == STRATA_OK);
    st_store *s = NULL;
    CHECK(st_store_open(dir, &s, &err) == STRATA_OK);
    st_store_close(s);
    /* without a store the missing source is an error */
    CHECK(st_store_split(src, P("/none.store"), &o, &err) == STRATA_ERR_IO);
}

static void test_checksum(void)
{
    uint8_t buf[1000];
    for (int i = 0; i < 1000; i++) {
        buf[i] = (uint8_t)(i * 7);
    }
    uint64_t a = st_checksum(buf, 1000);
    buf[500] ^= 1;
    CHECK(st_checksum(buf, 1000) != a);
    CHECK(st_checksum(buf, 999) != st_checksum(buf, 1000));
    st_compression c;
    CHECK(st_compression_parse("4bit", &c) && c == ST_COMPRESS_4BIT);
    CHECK(!st_compression_parse("3bit", &c));
}

int main(void)
{
    snprintf(dir_base, sizeof(dir_base), "/tmp/strata-store-test-%d", (int)getpid());
    CHECK(mkdir(P(""), 0755) == 0);
    test_checksum();
    test_round_trip();
    test_compression();
    test_resume();
    test_broken_stores();
    test_disk_space();
    test_delete_original();
    if (st_test_failures == 0) {
        rm_rf(P(""));
    }
    TEST_MAIN_END();
}
