/* safetensors reader: a valid file, then a corpus of broken ones that must
 * each give STRATA_ERR_FORMAT (never a crash). */
#include "safetensors.h"
#include "test.h"

#include <stdint.h>
#include <unistd.h>

/* An image: 8-byte length, header (as given), then n_data bytes of data. */
static uint8_t *make_image(const char *header, uint64_t claimed_len, size_t n_data, size_t *size)
{
    size_t hl = strlen(header);
    *size = 8 + hl + n_data;
    uint8_t *p = calloc(1, *size);
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(claimed_len >> (8 * i));
    }
    memcpy(p + 8, header, hl);
    for (size_t i = 0; i < n_data; i++) {
        p[8 + hl + i] = (uint8_t)i;
    }
    return p;
}

static strata_err parse_header(const char *header, size_t n_data, strata_error *err)
{
    size_t size;
    uint8_t *img = make_image(header, strlen(header), n_data, &size);
    st_safetensors *s = NULL;
    strata_err rc = st_safetensors_parse(img, size, &s, err);
    st_safetensors_close(s);
    free(img);
    return rc;
}

static void test_valid(void)
{
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                    "\"c\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[32,40]},"
                    "\"z\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[40,40]}}";
    size_t size;
    uint8_t *img = make_image(h, strlen(h), 40, &size);
    float v = 1.5f;
    memcpy(img + 8 + strlen(h), &v, 4);
    uint16_t bf = st_fp32_to_bf16(-2.0f);
    memcpy(img + 8 + strlen(h) + 24, &bf, 2);
    st_safetensors *s = NULL;
    strata_error err = {0};
    CHECK_MSG(st_safetensors_parse(img, size, &s, &err) == STRATA_OK, "%s", err.msg);
    if (s != NULL) {
        CHECK(s->n_tensors == 4);
        const st_safetensor *a = st_safetensors_find(s, "a");
        const st_safetensor *b = st_safetensors_find(s, "b");
        const st_safetensor *c = st_safetensors_find(s, "c");
        CHECK(a && a->type == ST_F32 && a->n_dims == 2 && a->shape[0] == 2 && a->shape[1] == 3 && a->n_elems == 6);
        CHECK(b && b->type == ST_BF16 && b->n_elems == 4);
        CHECK(c && c->type == -1 && c->n_dims == 0 && c->n_elems == 1);
        CHECK(st_safetensors_find(s, "__metadata__") == NULL);
        CHECK(st_safetensors_find(s, "nope") == NULL);
        float out[4];
        if (a && b) {
            st_safetensor_to_f32(a, 0, 1, out);
            CHECK(out[0] == 1.5f);
            st_safetensor_to_f32(b, 0, 1, out);
            CHECK(out[0] == -2.0f);
        }
    }
    st_safetensors_close(s);
    free(img);
}

static void expect_bad(const char *what, const char *header, size_t n_data, const char *needle)
{
    strata_error err = {0};
    strata_err rc = parse_header(header, n_data, &err);
    CHECK_MSG(rc == STRATA_ERR_FORMAT, "%s: rc %d", what, (int)rc);
    CHECK_MSG(needle == NULL || strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", what, err.msg, needle);
}

static void test_corpus(void)
{
    strata_error err = {0};
    st_safetensors *s = NULL;
    uint8_t tiny[5] = {1, 2, 3, 4, 5};
    CHECK(st_safetensors_parse(tiny, sizeof(tiny), &s, &err) == STRATA_ERR_FORMAT && s == NULL);

    /* header length past the end, and huge */
    size_t size;
    uint8_t *img = make_image("{}", 1000, 0, &size);
    CHECK(st_safetensors_parse(img, size, &s, &err) == STRATA_ERR_FORMAT && strstr(err.msg, "past the end"));
    free(img);
    img = make_image("{}", UINT64_MAX, 0, &size);
    CHECK(st_safetensors_parse(img, size, &s, &err) == STRATA_ERR_FORMAT && strstr(err.msg, "limit"));
    free(img);
    img = make_image("{}", (uint64_t)1 << 40, 0, &size);
    CHECK(st_safetensors_parse(img, size, &s, &err) == STRATA_ERR_FORMAT);
    free(img);

    expect_bad("bad json", "{\"a\":{\"dtype\":\"F32\",", 0, "JSON");
    expect_bad("not object", "[1, 2, 3]          ", 0, "object");
    expect_bad("entry not object", "{\"a\": 3}", 0, "'a'");
    expect_bad("no dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype");
    expect_bad("unknown dtype", "{\"a\":{\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype");
    expect_bad("offsets out of range", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
               "outside");
    expect_bad("offsets reversed", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, "outside");
    expect_bad("negative offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "sizes");
    expect_bad("one offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets");
    expect_bad("wrong dtype size", "{\"a\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "need 2");
    expect_bad("shape/offset mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,20]}}", 24,
               "need 24");
    expect_bad("negative dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape");
    expect_bad("shape overflow",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}}", 4, "more than");
    expect_bad("too many dims", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
               "dimensions");
    expect_bad("overlap",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, "overlap");
    expect_bad("duplicate key",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, NULL);
    expect_bad("metadata not object", "{\"__metadata__\": 1}", 0, "__metadata__");
    expect_bad("string shape", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "shape");

    /* every truncation of a valid file fails cleanly or parses a prefix-valid header */
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
    img = make_image(h, strlen(h), 24, &size);
    for (size_t cut = 0; cut < size; cut++) {
        s = NULL;
        CHECK(st_safetensors_parse(img, cut, &s, &err) == STRATA_ERR_FORMAT && s == NULL);
    }
    /* single-byte corruption of the header never crashes */
    for (size_t i = 0; i < size; i++) {
        uint8_t *c = malloc(size);
        memcpy(c, img, size);
        c[i] ^= 0x5a;
        s = NULL;
        if (st_safetensors_parse(c, size, &s, &err) == STRATA_OK) {
            CHECK(s != NULL);
            for (size_t t = 0; t < s->n_tensors; t++) {
                CHECK(s->tensors[t].data + (s->tensors[t].end - s->tensors[t].begin) <= c + size);
            }
        }
        st_safetensors_close(s);
        free(c);
    }
    free(img);
}

static void test_file(void)
{
    strata_error err = {0};
    st_safetensors *s = NULL;
    CHECK(st_safetensors_open("/nonexistent/x.safetensors", &s, &err) == STRATA_ERR_IO);
    char path[] = "/tmp/strata-st-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *h = "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
    size_t size;
    uint8_t *img = make_image(h, strlen(h), 4, &size);
    CHECK(write(fd, img, size) == (ssize_t)size);
    close(fd);
    CHECK_MSG(st_safetensors_open(path, &s, &err) == STRATA_OK, "%s", err.msg);
    CHECK(s && s->mapped && s->n_tensors == 1);
    st_safetensors_close(s);
    /* truncated on disk: the error names the file */
    CHECK(truncate(path, (off_t)size - 1) == 0);
    s = NULL;
    CHECK(st_safetensors_open(path, &s, &err) == STRATA_ERR_FORMAT && strstr(err.msg, path) != NULL);
    unlink(path);
    free(img);
}

int main(void)
{
    test_valid();
    test_corpus();
    test_file();
    TEST_MAIN_END();
}
