/* GGUF reader (src/gguf.c): valid files built with the writer parse and
 * read back; a corpus of broken files (truncated at every byte, bad magic,
 * huge counts, lengths and offsets past the end, misaligned offsets, unknown
 * types, duplicates, nested arrays, zero dims, random byte flips) each give
 * an error code and a message, never a crash. Each image is parsed from a
 * heap copy of exactly its size, so ASan catches any read past the end. */
#include "gguf_write.h"
#include "test.h"

#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------- byte builder -- */

typedef struct {
    uint8_t p[4096];
    size_t len;
} buf;

static void put(buf *b, const void *src, size_t n)
{
    if (b->len + n > sizeof(b->p)) {
        fprintf(stderr, "test buffer overflow\n");
        abort();
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u32(buf *b, uint32_t v)
{
    put(b, &v, 4);
}

static void put_u64(buf *b, uint64_t v)
{
    put(b, &v, 8);
}

static void put_str(buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static void header(buf *b, uint64_t n_tensors, uint64_t n_kv)
{
    b->len = 0;
    put(b, "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, n_tensors);
    put_u64(b, n_kv);
}

static void kv_u32(buf *b, const char *key, uint32_t v)
{
    put_str(b, key);
    put_u32(b, GGUF_T_UINT32);
    put_u32(b, v);
}

static void tensor_info(buf *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset)
{
    put_str(b, name);
    put_u32(b, n_dims);
    for (uint32_t i = 0; i < n_dims; i++) {
        put_u64(b, ne[i]);
    }
    put_u32(b, type);
    put_u64(b, offset);
}

/* Pad to 32 and append n data bytes. */
static void data(buf *b, size_t n)
{
    while (b->len % 32 != 0) {
        uint8_t z = 0;
        put(b, &z, 1);
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t v = (uint8_t)i;
        put(b, &v, 1);
    }
}

/* ------------------------------------------------------------ helpers -- */

/* Parse an exact-size heap copy; returns the code. On success the file is
 * walked (every kv, every tensor byte range) and closed. */
static strata_err parse_copy(const uint8_t *img, size_t n, strata_error *err)
{
    uint8_t *copy = malloc(n ? n : 1);
    if (n > 0) {
        memcpy(copy, img, n);
    }
    gguf_file *f = (gguf_file *)0x1;
    strata_err rc = gguf_parse(copy, n, &f, err);
    if (rc == STRATA_OK) {
        CHECK(f != NULL);
        uint64_t sum = 0;
        for (uint64_t i = 0; f && i < f->n_kv; i++) {
            const gguf_kv *kv = &f->kv[i];
            if (kv->key.len > 0) {
                sum += (uint8_t)kv->key.ptr[kv->key.len - 1];
            }
            if (kv->type == GGUF_T_STRING && kv->v.str.len > 0) {
                sum += (uint8_t)kv->v.str.ptr[kv->v.str.len - 1];
            }
            if (kv->type == GGUF_T_ARRAY && kv->v.arr.type == GGUF_T_STRING) {
                for (uint64_t j = 0; j < kv->v.arr.n; j++) {
                    if (kv->v.arr.strs[j].len > 0) {
                        sum += (uint8_t)kv->v.arr.strs[j].ptr[kv->v.arr.strs[j].len - 1];
                    }
                }
            }
        }
        for (uint64_t i = 0; f && i < f->n_tensors; i++) {
            const gguf_tensor *t = &f->tensors[i];
            CHECK(t->data >= f->image + f->data_offset);
            CHECK((uint64_t)(t->data - f->image) + t->nbytes <= f->size);
            if (t->nbytes > 0) {
                sum += t->data[0] + t->data[t->nbytes - 1];
            }
        }
        (void)sum;
        gguf_close(f);
    } else {
        CHECK(f == NULL);
    }
    free(copy);
    return rc;
}

/* A broken image must fail with `want` (or any error if want == STRATA_OK)
 * and a message containing `needle` (if not NULL). */
static void expect_bad(const char *what, const buf *b, strata_err want, const char *needle)
{
    strata_error err = {0};
    strata_err rc = parse_copy(b->p, b->len, &err);
    CHECK_MSG(rc != STRATA_OK, "%s: parsed without error", what);
    if (want != STRATA_OK) {
        CHECK_MSG(rc == want, "%s: code %d (%s), want %d: %s", what, (int)rc, strata_strerror(rc), (int)want, err.msg);
    }
    CHECK_MSG(err.code == rc && err.msg[0] != '\0', "%s: no message", what);
    if (needle != NULL) {
        CHECK_MSG(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, needle);
    }
}

static void expect_good(const char *what, const buf *b)
{
    strata_error err = {0};
    strata_err rc = parse_copy(b->p, b->len, &err);
    CHECK_MSG(rc == STRATA_OK, "%s: %s", what, err.msg);
}

/* A valid file with metadata of several kinds and three tensors. */
static uint8_t *valid_image(uint64_t *size, uint64_t *data_end)
{
    gguf_writer *w = gguf_writer_new();
    gguf_writer_add_str(w, "general.architecture", "llama");
    gguf_writer_add_u32(w, "llama.block_count", 1);
    gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_writer_add_bool(w, "b", true);
    gguf_writer_add_i64(w, "i", -5);
    const char *toks[] = {"<unk>", "<s>", "</s>", "a", "b"};
    gguf_writer_add_str_arr(w, "tokenizer.ggml.tokens", toks, NULL, 5);
    const float scores[] = {0, 0, 0, -1, -2};
    gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_T_FLOAT32, scores, 5);
    float x[64];
    for (int i = 0; i < 64; i++) {
        x[i] = (float)i;
    }
    uint8_t q[34 * 2] = {0};
    gguf_writer_add_tensor(w, "a", ST_F32, 1, (const int64_t[]){5}, x);
    gguf_writer_add_tensor(w, "b", ST_Q8_0, 2, (const int64_t[]){32, 2}, q);
    gguf_writer_add_tensor(w, "c", ST_F32, 2, (const int64_t[]){3, 3}, x);
    uint8_t *img = NULL;
    strata_error err = {0};
    CHECK(gguf_writer_to_buffer(w, &img, size, &err) == STRATA_OK);
    gguf_writer_free(w);
    gguf_file *f = NULL;
    CHECK(gguf_parse(img, *size, &f, &err) == STRATA_OK);
    *data_end = f ? f->data_offset + f->tensors[2].offset + f->tensors[2].nbytes : 0;
    gguf_close(f);
    return img;
}

/* ---------------------------------------------------------- the tests -- */

static void test_valid_and_getters(void)
{
    uint64_t size = 0;
    uint64_t end = 0;
    uint8_t *img = valid_image(&size, &end);
    gguf_file *f = NULL;
    strata_error err = {0};
    CHECK(gguf_parse(img, size, &f, &err) == STRATA_OK);
    if (f == NULL) {
        free(img);
        return;
    }
    CHECK(f->version == 3 && f->n_tensors == 3 && f->n_kv == 8 && f->alignment == 32);
    uint64_t u = 0;
    int64_t i = 0;
    double d = 0;
    bool b = false;
    char s[8];
    CHECK(gguf_get_u64(f, "llama.block_count", &u) && u == 1);
    CHECK(gguf_get_i64(f, "llama.block_count", &i) && i == 1);      /* unsigned read as signed */
    CHECK(gguf_get_f64(f, "llama.block_count", &d) && d == 1.0);    /* ints read as double */
    CHECK(gguf_get_i64(f, "i", &i) && i == -5);
    CHECK(!gguf_get_u64(f, "i", &u));                               /* negative is not a u64 */
    CHECK(gguf_get_f64(f, "i", &d) && d == -5.0);
    CHECK(gguf_get_f64(f, "llama.attention.layer_norm_rms_epsilon", &d) && fabs(d - 1e-5) < 1e-12);
    CHECK(!gguf_get_u64(f, "llama.attention.layer_norm_rms_epsilon", &u)); /* float is not an int */
    CHECK(gguf_get_bool(f, "b", &b) && b);
    CHECK(!gguf_get_bool(f, "i", &b));
    CHECK(gguf_get_str(f, "general.architecture", s, sizeof(s)) && strcmp(s, "llama") == 0);
    CHECK(gguf_get_str(f, "general.architecture", s, 3) && strcmp(s, "ll") == 0); /* truncated */
    CHECK(!gguf_get_str(f, "general.architecture", s, 0));
    CHECK(!gguf_get_str(f, "b", s, sizeof(s)));
    CHECK(!gguf_get_u64(f, "missing", &u) && !gguf_get_str(f, "missing", s, sizeof(s)));
    CHECK(gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_T_STRING) != NULL);
    CHECK(gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_T_INT32) == NULL);
    CHECK(gguf_get_arr(f, "tokenizer.ggml.scores", GGUF_T_FLOAT32) != NULL);
    CHECK(gguf_get_arr(f, "general.architecture", GGUF_T_STRING) == NULL);
    CHECK(gguf_find_tensor(f, "b") != NULL && gguf_find_tensor(f, "b")->nbytes == 68);
    CHECK(gguf_find_tensor(f, "bb") == NULL && gguf_find_tensor(f, "") == NULL);
    CHECK(gguf_find_kv(f, "general.architecture") == &f->kv[0]);
    CHECK(gguf_str_eq(f->tensors[0].name, "a") && !gguf_str_eq(f->tensors[0].name, "ab"));
    const gguf_tensor *c = gguf_find_tensor(f, "c");
    CHECK(c != NULL && c->n_dims == 2 && c->ne[0] == 3 && c->ne[1] == 3 && c->ne[2] == 1 && c->ne[3] == 1);
    float v;
    memcpy(&v, c->data + 4 * 4, 4);
    CHECK(v == 4.0f);
    gguf_close(f);
    free(img);

    /* version 2, no metadata, no tensors: a 24-byte file */
    buf bb;
    header(&bb, 0, 0);
    bb.p[4] = 2;
    expect_good("v2 empty", &bb);
    header(&bb, 0, 0);
    expect_good("v3 empty", &bb);
    /* alignment other than 32 given as metadata */
    header(&bb, 1, 1);
    kv_u32(&bb, "general.alignment", 64);
    tensor_info(&bb, "t", 1, (const uint64_t[]){4}, ST_F32, 0);
    while (bb.len % 64 != 0) {
        uint8_t z = 0;
        put(&bb, &z, 1);
    }
    data(&bb, 16);
    expect_good("alignment 64", &bb);
}

static void test_truncations(void)
{
    uint64_t size = 0;
    uint64_t end = 0;
    uint8_t *img = valid_image(&size, &end);
    CHECK(end > 0 && end <= size);
    int bad = 0;
    int good = 0;
    for (uint64_t n = 0; n < size; n++) {
        strata_error err = {0};
        strata_err rc = parse_copy(img, n, &err);
        if (n < end) {
            CHECK_MSG(rc == STRATA_ERR_FORMAT && err.msg[0] != '\0', "truncated to %llu bytes: rc %d",
                      (unsigned long long)n, (int)rc);
            bad++;
        } else {
            /* only the zero padding after the last tensor is missing */
            CHECK_MSG(rc == STRATA_OK, "%llu bytes (data ends at %llu): %s", (unsigned long long)n,
                      (unsigned long long)end, err.msg);
            good++;
        }
    }
    CHECK(bad > 300 && good < 32);
    free(img);
}

static void test_header_corpus(void)
{
    buf b;
    b.len = 0;
    expect_bad("empty file", &b, STRATA_ERR_FORMAT, NULL);
    put(&b, "GGU", 3);
    expect_bad("3 bytes", &b, STRATA_ERR_FORMAT, NULL);

    header(&b, 0, 0);
    memcpy(b.p, "GGUG", 4);
    expect_bad("bad magic", &b, STRATA_ERR_FORMAT, "magic");
    header(&b, 0, 0);
    memcpy(b.p, "FUGG", 4); /* big-endian GGUF */
    expect_bad("byte-swapped magic", &b, STRATA_ERR_FORMAT, "magic");

    uint32_t versions[] = {0, 1, 4, 0x03000000u, 0xffffffffu};
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        header(&b, 0, 0);
        memcpy(b.p + 4, &versions[i], 4);
        expect_bad("bad version", &b, STRATA_ERR_UNSUPPORTED, "version");
    }
    header(&b, 0, 0);
    b.len = 10;
    expect_bad("truncated version/counts", &b, STRATA_ERR_FORMAT, NULL);

    uint64_t huge[] = {1ull << 63, UINT64_MAX, 1000001, 1ull << 32};
    for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
        header(&b, 0, huge[i]);
        kv_u32(&b, "k", 1);
        expect_bad("huge metadata count", &b, STRATA_ERR_FORMAT, NULL);
        header(&b, huge[i], 0);
        tensor_info(&b, "t", 1, (const uint64_t[]){4}, ST_F32, 0);
        expect_bad("huge tensor count", &b, STRATA_ERR_FORMAT, NULL);
    }
    /* counts that fit the caps but not the file */
    header(&b, 0, 5);
    kv_u32(&b, "k", 1);
    expect_bad("5 kvs, 1 present", &b, STRATA_ERR_FORMAT, NULL);
    header(&b, 3, 0);
    tensor_info(&b, "t", 1, (const uint64_t[]){4}, ST_F32, 0);
    data(&b, 16);
    expect_bad("3 tensors, 1 present", &b, STRATA_ERR_FORMAT, NULL);
}

static void test_metadata_corpus(void)
{
    buf b;
    uint64_t lens[] = {1000, 1ull << 40, (1ull << 63) + 5, UINT64_MAX, UINT64_MAX - 30};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        header(&b, 0, 1);
        put_u64(&b, lens[i]);
        put(&b, "abc", 3);
        expect_bad("key length past the end", &b, STRATA_ERR_FORMAT, NULL);

        header(&b, 0, 1);
        put_str(&b, "s");
        put_u32(&b, GGUF_T_STRING);
        put_u64(&b, lens[i]);
        put(&b, "abcdef", 6);
        expect_bad("string length past the end", &b, STRATA_ERR_FORMAT, NULL);

        header(&b, 0, 1);
        put_str(&b, "arr");
        put_u32(&b, GGUF_T_ARRAY);
        put_u32(&b, GGUF_T_STRING);
        put_u64(&b, 1);
        put_u64(&b, lens[i]);
        put(&b, "xy", 2);
        expect_bad("array string length past the end", &b, STRATA_ERR_FORMAT, NULL);
    }

    uint32_t types[] = {GGUF_T_COUNT, 100, 0x80000000u, 0xffffffffu};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        header(&b, 0, 1);
        put_str(&b, "weird");
        put_u32(&b, types[i]);
        put_u64(&b, 0);
        expect_bad("unknown metadata type", &b, STRATA_ERR_FORMAT, "weird");

        header(&b, 0, 1);
        put_str(&b, "weirdarr");
        put_u32(&b, GGUF_T_ARRAY);
        put_u32(&b, types[i]);
        put_u64(&b, 1);
        put_u64(&b, 0);
        expect_bad("unknown array element type", &b, STRATA_ERR_FORMAT, "weirdarr");
    }

    /* nested arrays */
    header(&b, 0, 1);
    put_str(&b, "nested");
    put_u32(&b, GGUF_T_ARRAY);
    put_u32(&b, GGUF_T_ARRAY);
    put_u64(&b, 1);
    put_u32(&b, GGUF_T_UINT8);
    put_u64(&b, 1);
    put_u32(&b, 7);
    expect_bad("nested array", &b, STRATA_ERR_FORMAT, "nested");

    /* huge element counts */
    struct {
        gguf_type t;
        uint64_t n;
    } arrs[] = {{GGUF_T_UINT8, 1000},      {GGUF_T_UINT32, 1ull << 62}, {GGUF_T_UINT64, 1ull << 61},
                {GGUF_T_UINT8, UINT64_MAX}, {GGUF_T_STRING, 1ull << 61}, {GGUF_T_STRING, UINT64_MAX},
                {GGUF_T_STRING, 100}};
    for (size_t i = 0; i < sizeof(arrs) / sizeof(arrs[0]); i++) {
        header(&b, 0, 1);
        put_str(&b, "big");
        put_u32(&b, GGUF_T_ARRAY);
        put_u32(&b, arrs[i].t);
        put_u64(&b, arrs[i].n);
        put_u64(&b, 0);
        put_u64(&b, 0);
        expect_bad("array count past the end", &b, STRATA_ERR_FORMAT, NULL);
    }

    /* truncated scalar */
    header(&b, 0, 1);
    put_str(&b, "u64");
    put_u32(&b, GGUF_T_UINT64);
    put_u32(&b, 1);
    expect_bad("truncated scalar", &b, STRATA_ERR_FORMAT, NULL);

    /* general.alignment: wrong type, zero, not a power of two */
    header(&b, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, GGUF_T_UINT64);
    put_u64(&b, 32);
    expect_bad("alignment as u64", &b, STRATA_ERR_FORMAT, "alignment");
    uint32_t aligns[] = {0, 3, 48, 0x80000001u};
    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
        header(&b, 0, 1);
        kv_u32(&b, "general.alignment", aligns[i]);
        expect_bad("bad alignment", &b, STRATA_ERR_FORMAT, "alignment");
    }

    /* duplicate keys: llama.cpp's gguf_init rejects them too */
    header(&b, 0, 2);
    kv_u32(&b, "llama.block_count", 1);
    kv_u32(&b, "llama.block_count", 2);
    expect_bad("duplicate key", &b, STRATA_ERR_FORMAT, "llama.block_count");
}

static void test_tensor_corpus(void)
{
    buf b;
    /* dims: 0, 5, absurd */
    uint32_t ndims[] = {0, 5, 0xffffffffu};
    for (size_t i = 0; i < sizeof(ndims) / sizeof(ndims[0]); i++) {
        header(&b, 1, 0);
        put_str(&b, "t");
        put_u32(&b, ndims[i]);
        for (int k = 0; k < 5; k++) {
            put_u64(&b, 1);
        }
        put_u32(&b, ST_F32);
        put_u64(&b, 0);
        data(&b, 64);
        expect_bad("bad n_dims", &b, STRATA_ERR_FORMAT, "'t'");
    }
    /* a zero, huge, or overflowing shape */
    const uint64_t shapes[][3] = {
        {0, 4, 1}, {4, 0, 1}, {1ull << 63, 1, 1}, {UINT64_MAX, 1, 1}, {1ull << 30, 1ull << 30, 1ull << 30},
        {1ull << 40, 1ull << 40, 1}};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        header(&b, 1, 0);
        tensor_info(&b, "shape", 3, shapes[i], ST_F32, 0);
        data(&b, 64);
        expect_bad("bad shape", &b, STRATA_ERR_FORMAT, "shape");
    }
    /* types nobody knows, or that ggml dropped (4, 5: Q4_2, Q4_3) */
    uint32_t types[] = {4, 5, 39, 40, 99, 0xffffffffu};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        header(&b, 1, 0);
        tensor_info(&b, "typed", 1, (const uint64_t[]){32}, types[i], 0);
        data(&b, 256);
        expect_bad("unknown tensor type", &b, STRATA_ERR_UNSUPPORTED, "typed");
    }
    /* a row that is not a whole number of blocks */
    header(&b, 1, 0);
    tensor_info(&b, "ragged", 2, (const uint64_t[]){16, 2}, ST_Q8_0, 0);
    data(&b, 68);
    expect_bad("ragged Q8_0 row", &b, STRATA_ERR_FORMAT, "ragged");

    /* offsets: past the end, data cut short, huge, misaligned */
    uint64_t offsets[] = {64, 32, 1ull << 62, UINT64_MAX - 31, (1ull << 63) + 32};
    for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
        header(&b, 1, 0);
        tensor_info(&b, "far", 1, (const uint64_t[]){8}, ST_F32, offsets[i]);
        data(&b, 48);
        expect_bad("offset past the end", &b, STRATA_ERR_FORMAT, "far");
    }
    header(&b, 1, 0);
    tensor_info(&b, "short", 1, (const uint64_t[]){8}, ST_F32, 0);
    data(&b, 31);
    expect_bad("data one byte short", &b, STRATA_ERR_FORMAT, "short");
    uint64_t misaligned[] = {1, 8, 16, 31};
    for (size_t i = 0; i < sizeof(misaligned) / sizeof(misaligned[0]); i++) {
        header(&b, 1, 0);
        tensor_info(&b, "skew", 1, (const uint64_t[]){4}, ST_F32, misaligned[i]);
        data(&b, 64);
        expect_bad("misaligned offset", &b, STRATA_ERR_FORMAT, "skew");
    }
    /* tensor infos cut off; the data section missing entirely */
    header(&b, 1, 0);
    tensor_info(&b, "cut", 2, (const uint64_t[]){4, 4}, ST_F32, 0);
    b.len -= 5;
    expect_bad("tensor info cut", &b, STRATA_ERR_FORMAT, NULL);
    header(&b, 1, 0);
    tensor_info(&b, "nodata", 1, (const uint64_t[]){4}, ST_F32, 0);
    expect_bad("no data section", &b, STRATA_ERR_FORMAT, NULL);
    /* tensor name past the end */
    header(&b, 1, 0);
    put_u64(&b, 500);
    put(&b, "name", 4);
    expect_bad("tensor name past the end", &b, STRATA_ERR_FORMAT, NULL);

    /* duplicate names */
    header(&b, 2, 0);
    tensor_info(&b, "twice", 1, (const uint64_t[]){8}, ST_F32, 0);
    tensor_info(&b, "twice", 1, (const uint64_t[]){8}, ST_F32, 32);
    data(&b, 64);
    expect_bad("duplicate tensor", &b, STRATA_ERR_FORMAT, "twice");

    /* the same layout with distinct names is fine */
    header(&b, 2, 0);
    tensor_info(&b, "one", 1, (const uint64_t[]){8}, ST_F32, 0);
    tensor_info(&b, "two", 1, (const uint64_t[]){8}, ST_F32, 32);
    data(&b, 64);
    expect_good("two tensors", &b);
}

/* Flip a few bytes of a valid file, many times: every outcome is either a
 * clean parse whose views stay inside the image, or an error with a message. */
static void test_mutations(void)
{
    uint64_t size = 0;
    uint64_t end = 0;
    uint8_t *img = valid_image(&size, &end);
    uint8_t *m = malloc(size);
    uint32_t s = 12345;
    int ok = 0;
    int failed = 0;
    for (int iter = 0; iter < 4000; iter++) {
        memcpy(m, img, size);
        s = s * 1664525u + 1013904223u;
        int flips = 1 + (int)((s >> 28) & 3);
        for (int k = 0; k < flips; k++) {
            s = s * 1664525u + 1013904223u;
            uint64_t pos = (s >> 8) % size;
            s = s * 1664525u + 1013904223u;
            /* mostly small edits, sometimes a count set to all ones */
            m[pos] = (s >> 24) < 32 ? 0xff : (uint8_t)(m[pos] ^ (1u << ((s >> 16) & 7)));
        }
        strata_error err = {0};
        strata_err rc = parse_copy(m, (size_t)size, &err);
        if (rc == STRATA_OK) {
            ok++;
        } else {
            failed++;
            CHECK_MSG(err.msg[0] != '\0' && err.code == rc, "iteration %d: error %d without a message", iter, (int)rc);
        }
    }
    printf("mutations: %d parsed, %d rejected\n", ok, failed);
    CHECK(failed > 0);
    free(m);
    free(img);
}

static void test_open(void)
{
    strata_error err = {0};
    gguf_file *f = (gguf_file *)0x1;
    CHECK(gguf_open("/nonexistent/strata/model.gguf", true, &f, &err) == STRATA_ERR_IO);
    CHECK(f == NULL && strstr(err.msg, "/nonexistent/strata/model.gguf") != NULL);
    CHECK(gguf_open("/tmp", true, &f, &err) == STRATA_ERR_IO && f == NULL);

    char dir[] = "/tmp/strata-gguf-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128];
    snprintf(path, sizeof(path), "%s/m.gguf", dir);

    FILE *fp = fopen(path, "wb");
    fwrite("GGUF\3\0\0\0", 1, 8, fp);
    fclose(fp);
    for (int mm = 0; mm < 2; mm++) {
        err = (strata_error){0};
        CHECK(gguf_open(path, mm == 1, &f, &err) == STRATA_ERR_FORMAT && f == NULL);
        CHECK(strstr(err.msg, path) != NULL);
    }

    buf b;
    header(&b, 0, 0);
    memcpy(b.p, "XXXX", 4);
    fp = fopen(path, "wb");
    fwrite(b.p, 1, b.len, fp);
    fclose(fp);
    for (int mm = 0; mm < 2; mm++) {
        err = (strata_error){0};
        CHECK(gguf_open(path, mm == 1, &f, &err) == STRATA_ERR_FORMAT && f == NULL);
        CHECK(strstr(err.msg, "magic") != NULL && strstr(err.msg, path) != NULL);
    }

    uint64_t size = 0;
    uint64_t end = 0;
    uint8_t *img = valid_image(&size, &end);
    fp = fopen(path, "wb");
    fwrite(img, 1, size, fp);
    fclose(fp);
    for (int mm = 0; mm < 2; mm++) {
        CHECK(gguf_open(path, mm == 1, &f, &err) == STRATA_OK);
        CHECK(f != NULL && f->n_tensors == 3 && f->size == size && f->mapped == (mm == 1));
        CHECK(f && memcmp(f->image, img, size) == 0);
        gguf_close(f);
    }
    /* the same file cut inside its last tensor */
    CHECK(truncate(path, (off_t)end - 1) == 0);
    CHECK(gguf_open(path, true, &f, &err) == STRATA_ERR_FORMAT && strstr(err.msg, "'c'") != NULL);
    free(img);
    gguf_close(NULL);
    unlink(path);
    rmdir(dir);
}

/* The real stories260K file parses and has what the engine expects. */
static void test_real_file(void)
{
    gguf_file *f = NULL;
    strata_error err = {0};
    if (gguf_open("../shared/models/stories260K.gguf", true, &f, &err) != STRATA_OK) {
        printf("skip: %s\n", err.msg);
        return;
    }
    uint64_t n = 0;
    CHECK(gguf_get_u64(f, "llama.block_count", &n) && n == 5);
    CHECK(f->n_tensors == 48);
    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    CHECK(t != NULL && t->ne[0] == 64 && t->ne[1] == 512 && t->type == ST_F32);
    gguf_close(f);
}

int main(void)
{
    test_valid_and_getters();
    test_truncations();
    test_header_corpus();
    test_metadata_corpus();
    test_tensor_corpus();
    test_mutations();
    test_open();
    test_real_file();
    TEST_MAIN_END();
}
