/* GGUF writer: every metadata type and tensor shape round-trips through the
 * reader; offsets are aligned; bad input is refused (sticky errors); files
 * are written atomically and byte-identical to the in-memory image. */
#include "gguf_write.h"
#include "test.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t u8s[] = {0, 1, 255};
static const int8_t i8s[] = {-128, 0, 127};
static const uint16_t u16s[] = {0, 65535};
static const int16_t i16s[] = {-32768, 32767};
static const uint32_t u32s[] = {0, 4000000000u, 7};
static const int32_t i32s[] = {-2000000000, 1, 2000000000};
static const float f32s[] = {1.5f, -0.25f, 1e-6f};
static const uint8_t bools[] = {1, 0, 1};
static const uint64_t u64s[] = {0, UINT64_MAX};
static const int64_t i64s[] = {INT64_MIN, INT64_MAX};
static const double f64s[] = {3.141592653589793, -1e300};

/* Deterministic test data. */
static void fill_bytes(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
}

typedef struct {
    int calls;
    uint64_t last_nbytes;
    bool fail;
} fill_state;

static strata_err fill_pattern(void *user, const char *name, void *dst, uint64_t nbytes, strata_error *err)
{
    fill_state *s = user;
    s->calls++;
    s->last_nbytes = nbytes;
    if (s->fail) {
        return st_error(err, STRATA_ERR_INTERNAL, "asked to fail");
    }
    fill_bytes(dst, (size_t)nbytes, (uint32_t)strlen(name));
    return STRATA_OK;
}

static uint8_t t_f32_1d[4 * 7];
static uint8_t t_f32_2d[4 * 8 * 3];
static uint8_t t_f16_3d[2 * 4 * 3 * 2];
static uint8_t t_q8_0[34 * 2 * 5];  /* 64 x 5 */
static uint8_t t_f32_4d[4 * 2 * 3 * 2 * 2];

/* A writer holding every kind of metadata and tensor. */
static gguf_writer *build_full(fill_state *fs)
{
    gguf_writer *w = gguf_writer_new();
    CHECK(w != NULL);
    fill_bytes(t_f32_1d, sizeof(t_f32_1d), 1);
    fill_bytes(t_f32_2d, sizeof(t_f32_2d), 2);
    fill_bytes(t_f16_3d, sizeof(t_f16_3d), 3);
    fill_bytes(t_q8_0, sizeof(t_q8_0), 4);
    fill_bytes(t_f32_4d, sizeof(t_f32_4d), 5);
    CHECK(gguf_writer_add_str(w, "general.architecture", "llama") == STRATA_OK);
    CHECK(gguf_writer_add_u8(w, "t.u8", 200) == STRATA_OK);
    CHECK(gguf_writer_add_i8(w, "t.i8", -100) == STRATA_OK);
    CHECK(gguf_writer_add_u16(w, "t.u16", 60000) == STRATA_OK);
    CHECK(gguf_writer_add_i16(w, "t.i16", -30000) == STRATA_OK);
    CHECK(gguf_writer_add_u32(w, "t.u32", 4000000000u) == STRATA_OK);
    CHECK(gguf_writer_add_i32(w, "t.i32", -2000000000) == STRATA_OK);
    CHECK(gguf_writer_add_f32(w, "t.f32", 0.125f) == STRATA_OK);
    CHECK(gguf_writer_add_bool(w, "t.bool", true) == STRATA_OK);
    CHECK(gguf_writer_add_u64(w, "t.u64", UINT64_MAX - 1) == STRATA_OK);
    CHECK(gguf_writer_add_i64(w, "t.i64", INT64_MIN + 1) == STRATA_OK);
    CHECK(gguf_writer_add_f64(w, "t.f64", -2.5e-300) == STRATA_OK);
    CHECK(gguf_writer_add_strn(w, "t.strnul", "a\0b", 3) == STRATA_OK);
    CHECK(gguf_writer_add_str(w, "t.empty", "") == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.u8", GGUF_T_UINT8, u8s, 3) == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.i8", GGUF_T_INT8, i8s, 3) == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.u16", GGUF_T_UINT16, u16s, 2) == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.i16", GGUF_T_INT16, i16s, 2) == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.u32", GGUF_T_UINT32, u32s, 3) == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.i32", GGUF_T_INT32, i32s, 3) == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.f32", GGUF_T_FLOAT32, f32s, 3) == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.bool", GGUF_T_BOOL, bools, 3) == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.u64", GGUF_T_UINT64, u64s, 2) == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.i64", GGUF_T_INT64, i64s, 2) == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.f64", GGUF_T_FLOAT64, f64s, 2) == STRATA_OK);
    CHECK(gguf_writer_add_arr(w, "a.none", GGUF_T_INT32, NULL, 0) == STRATA_OK);
    const char *strs[] = {"hello", "", "w\xc3\xb6rld", "x"};
    CHECK(gguf_writer_add_str_arr(w, "a.str", strs, NULL, 4) == STRATA_OK);
    const char *nul_strs[] = {"ab\0cd", "z"};
    const uint64_t nul_lens[] = {5, 1};
    CHECK(gguf_writer_add_str_arr(w, "a.strnul", nul_strs, nul_lens, 2) == STRATA_OK);
    CHECK(gguf_writer_add_str_arr(w, "a.strnone", NULL, NULL, 0) == STRATA_OK);

    CHECK(gguf_writer_add_tensor(w, "f32_1d", ST_F32, 1, (const int64_t[]){7}, t_f32_1d) == STRATA_OK);
    CHECK(gguf_writer_add_tensor(w, "f32_2d", ST_F32, 2, (const int64_t[]){8, 3}, t_f32_2d) == STRATA_OK);
    CHECK(gguf_writer_add_tensor(w, "f16_3d", ST_F16, 3, (const int64_t[]){4, 3, 2}, t_f16_3d) == STRATA_OK);
    CHECK(gguf_writer_add_tensor(w, "q8_0", ST_Q8_0, 2, (const int64_t[]){64, 5}, t_q8_0) == STRATA_OK);
    CHECK(gguf_writer_add_tensor(w, "f32_4d", ST_F32, 4, (const int64_t[]){2, 3, 2, 2}, t_f32_4d) == STRATA_OK);
    CHECK(gguf_writer_add_tensor_fill(w, "filled", ST_Q8_0, 2, (const int64_t[]){32, 3}, fill_pattern, fs) ==
          STRATA_OK);
    CHECK(gguf_writer_n_tensors(w) == 6);
    CHECK(gguf_writer_n_kv(w) == 29);
    return w;
}

static const uint8_t *arr_elem(const gguf_kv *kv, size_t esz, uint64_t i)
{
    return kv->v.arr.data + i * esz;
}

static void check_full(const gguf_file *f)
{
    CHECK(f->version == 3);
    CHECK(f->n_kv == 30); /* 29 + general.alignment */
    CHECK(f->n_tensors == 6);
    CHECK(f->alignment == 32);
    CHECK(f->data_offset % 32 == 0);
    uint64_t u;
    int64_t i;
    double d;
    bool b;
    char s[64];
    CHECK(gguf_get_u64(f, "general.alignment", &u) && u == 32);
    CHECK(gguf_find_kv(f, "general.alignment")->type == GGUF_T_UINT32);
    CHECK(gguf_get_str(f, "general.architecture", s, sizeof(s)) && strcmp(s, "llama") == 0);
    CHECK(gguf_get_u64(f, "t.u8", &u) && u == 200 && gguf_find_kv(f, "t.u8")->type == GGUF_T_UINT8);
    CHECK(gguf_get_i64(f, "t.i8", &i) && i == -100 && gguf_find_kv(f, "t.i8")->type == GGUF_T_INT8);
    CHECK(gguf_get_u64(f, "t.u16", &u) && u == 60000 && gguf_find_kv(f, "t.u16")->type == GGUF_T_UINT16);
    CHECK(gguf_get_i64(f, "t.i16", &i) && i == -30000 && gguf_find_kv(f, "t.i16")->type == GGUF_T_INT16);
    CHECK(gguf_get_u64(f, "t.u32", &u) && u == 4000000000u && gguf_find_kv(f, "t.u32")->type == GGUF_T_UINT32);
    CHECK(gguf_get_i64(f, "t.i32", &i) && i == -2000000000 && gguf_find_kv(f, "t.i32")->type == GGUF_T_INT32);
    CHECK(gguf_get_f64(f, "t.f32", &d) && d == 0.125 && gguf_find_kv(f, "t.f32")->type == GGUF_T_FLOAT32);
    CHECK(gguf_get_bool(f, "t.bool", &b) && b && gguf_find_kv(f, "t.bool")->type == GGUF_T_BOOL);
    CHECK(gguf_get_u64(f, "t.u64", &u) && u == UINT64_MAX - 1 && gguf_find_kv(f, "t.u64")->type == GGUF_T_UINT64);
    CHECK(gguf_get_i64(f, "t.i64", &i) && i == INT64_MIN + 1 && gguf_find_kv(f, "t.i64")->type == GGUF_T_INT64);
    CHECK(gguf_get_f64(f, "t.f64", &d) && d == -2.5e-300 && gguf_find_kv(f, "t.f64")->type == GGUF_T_FLOAT64);
    const gguf_kv *kv = gguf_find_kv(f, "t.strnul");
    CHECK(kv != NULL && kv->type == GGUF_T_STRING && kv->v.str.len == 3 && memcmp(kv->v.str.ptr, "a\0b", 3) == 0);
    CHECK(gguf_get_str(f, "t.empty", s, sizeof(s)) && s[0] == '\0');

    struct {
        const char *key;
        gguf_type t;
        const void *data;
        uint64_t n;
        size_t esz;
    } arrs[] = {
        {"a.u8", GGUF_T_UINT8, u8s, 3, 1},       {"a.i8", GGUF_T_INT8, i8s, 3, 1},
        {"a.u16", GGUF_T_UINT16, u16s, 2, 2},    {"a.i16", GGUF_T_INT16, i16s, 2, 2},
        {"a.u32", GGUF_T_UINT32, u32s, 3, 4},    {"a.i32", GGUF_T_INT32, i32s, 3, 4},
        {"a.f32", GGUF_T_FLOAT32, f32s, 3, 4},   {"a.bool", GGUF_T_BOOL, bools, 3, 1},
        {"a.u64", GGUF_T_UINT64, u64s, 2, 8},    {"a.i64", GGUF_T_INT64, i64s, 2, 8},
        {"a.f64", GGUF_T_FLOAT64, f64s, 2, 8},   {"a.none", GGUF_T_INT32, NULL, 0, 4},
    };
    for (size_t k = 0; k < sizeof(arrs) / sizeof(arrs[0]); k++) {
        const gguf_kv *a = gguf_get_arr(f, arrs[k].key, arrs[k].t);
        CHECK_MSG(a != NULL && a->v.arr.n == arrs[k].n, "%s", arrs[k].key);
        if (a != NULL && arrs[k].n > 0) {
            CHECK_MSG(memcmp(arr_elem(a, arrs[k].esz, 0), arrs[k].data, arrs[k].n * arrs[k].esz) == 0, "%s",
                      arrs[k].key);
        }
    }
    const gguf_kv *sa = gguf_get_arr(f, "a.str", GGUF_T_STRING);
    CHECK(sa != NULL && sa->v.arr.n == 4);
    if (sa != NULL && sa->v.arr.n == 4) {
        CHECK(gguf_str_eq(sa->v.arr.strs[0], "hello"));
        CHECK(gguf_str_eq(sa->v.arr.strs[1], ""));
        CHECK(gguf_str_eq(sa->v.arr.strs[2], "w\xc3\xb6rld"));
        CHECK(gguf_str_eq(sa->v.arr.strs[3], "x"));
    }
    sa = gguf_get_arr(f, "a.strnul", GGUF_T_STRING);
    CHECK(sa != NULL && sa->v.arr.n == 2 && sa->v.arr.strs[0].len == 5 &&
          memcmp(sa->v.arr.strs[0].ptr, "ab\0cd", 5) == 0);
    sa = gguf_get_arr(f, "a.strnone", GGUF_T_STRING);
    CHECK(sa != NULL && sa->v.arr.n == 0);

    struct {
        const char *name;
        uint32_t n_dims;
        int64_t ne[4];
        st_type type;
        const uint8_t *data;
        uint64_t nbytes;
    } ts[] = {
        {"f32_1d", 1, {7, 1, 1, 1}, ST_F32, t_f32_1d, sizeof(t_f32_1d)},
        {"f32_2d", 2, {8, 3, 1, 1}, ST_F32, t_f32_2d, sizeof(t_f32_2d)},
        {"f16_3d", 3, {4, 3, 2, 1}, ST_F16, t_f16_3d, sizeof(t_f16_3d)},
        {"q8_0", 2, {64, 5, 1, 1}, ST_Q8_0, t_q8_0, sizeof(t_q8_0)},
        {"f32_4d", 4, {2, 3, 2, 2}, ST_F32, t_f32_4d, sizeof(t_f32_4d)},
        {"filled", 2, {32, 3, 1, 1}, ST_Q8_0, NULL, 34 * 3},
    };
    for (size_t k = 0; k < sizeof(ts) / sizeof(ts[0]); k++) {
        const gguf_tensor *t = gguf_find_tensor(f, ts[k].name);
        CHECK_MSG(t != NULL, "%s", ts[k].name);
        if (t == NULL) {
            continue;
        }
        CHECK(t == &f->tensors[k]); /* kept in order */
        CHECK(t->n_dims == ts[k].n_dims);
        CHECK(memcmp(t->ne, ts[k].ne, sizeof(t->ne)) == 0);
        CHECK(t->type == ts[k].type);
        CHECK(t->nbytes == ts[k].nbytes);
        CHECK(t->offset % 32 == 0);
        CHECK((uint64_t)(t->data - f->image) % 32 == 0);
        if (ts[k].data != NULL) {
            CHECK_MSG(memcmp(t->data, ts[k].data, ts[k].nbytes) == 0, "%s", ts[k].name);
        } else {
            uint8_t want[34 * 3];
            fill_bytes(want, sizeof(want), (uint32_t)strlen("filled"));
            CHECK(memcmp(t->data, want, sizeof(want)) == 0);
        }
    }
}

static void test_roundtrip(void)
{
    fill_state fs = {0};
    gguf_writer *w = build_full(&fs);
    uint8_t *img = NULL;
    uint64_t size = 0;
    strata_error err = {0};
    CHECK(gguf_writer_to_buffer(w, &img, &size, &err) == STRATA_OK);
    CHECK(fs.calls == 1 && fs.last_nbytes == 34 * 3);
    CHECK(size % 32 == 0); /* the last tensor is padded too */
    gguf_file *f = NULL;
    CHECK(gguf_parse(img, size, &f, &err) == STRATA_OK);
    if (f != NULL) {
        check_full(f);
    }

    /* the same writer serializes to the same bytes again */
    uint8_t *img2 = NULL;
    uint64_t size2 = 0;
    CHECK(gguf_writer_to_buffer(w, &img2, &size2, &err) == STRATA_OK);
    CHECK(size2 == size && memcmp(img, img2, size) == 0);
    free(img2);

    /* copy_kv of every entry + the tensors rebuilds the identical file */
    if (f != NULL) {
        gguf_writer *w2 = gguf_writer_new();
        for (uint64_t k = 0; k < f->n_kv; k++) {
            CHECK(gguf_writer_copy_kv(w2, &f->kv[k]) == STRATA_OK);
        }
        for (uint64_t k = 0; k < f->n_tensors; k++) {
            const gguf_tensor *t = &f->tensors[k];
            char name[64];
            snprintf(name, sizeof(name), "%.*s", (int)t->name.len, t->name.ptr);
            CHECK(gguf_writer_add_tensor(w2, name, t->type, t->n_dims, t->ne, t->data) == STRATA_OK);
        }
        CHECK(gguf_writer_to_buffer(w2, &img2, &size2, &err) == STRATA_OK);
        CHECK_MSG(size2 == size && memcmp(img, img2, size) == 0, "copy differs (%llu vs %llu bytes)",
                  (unsigned long long)size2, (unsigned long long)size);
        free(img2);
        gguf_writer_free(w2);
    }
    gguf_close(f);
    free(img);
    gguf_writer_free(w);
}

static void test_alignment(void)
{
    gguf_writer *w = gguf_writer_new();
    CHECK(gguf_writer_set_alignment(w, 64) == STRATA_OK);
    float a[3] = {1, 2, 3};
    float b[5] = {4, 5, 6, 7, 8};
    CHECK(gguf_writer_add_tensor(w, "a", ST_F32, 1, (const int64_t[]){3}, a) == STRATA_OK);
    CHECK(gguf_writer_add_tensor(w, "b", ST_F32, 1, (const int64_t[]){5}, b) == STRATA_OK);
    uint8_t *img = NULL;
    uint64_t size = 0;
    strata_error err = {0};
    CHECK(gguf_writer_to_buffer(w, &img, &size, &err) == STRATA_OK);
    gguf_file *f = NULL;
    CHECK(gguf_parse(img, size, &f, &err) == STRATA_OK);
    if (f != NULL) {
        CHECK(f->alignment == 64);
        CHECK(f->data_offset % 64 == 0);
        CHECK(f->tensors[1].offset == 64);
        CHECK(memcmp(f->tensors[1].data, b, sizeof(b)) == 0);
    }
    gguf_close(f);
    free(img);
    gguf_writer_free(w);

    /* general.alignment added as metadata sets the alignment too */
    w = gguf_writer_new();
    CHECK(gguf_writer_add_u32(w, "general.alignment", 128) == STRATA_OK);
    CHECK(gguf_writer_add_tensor(w, "a", ST_F32, 1, (const int64_t[]){3}, a) == STRATA_OK);
    CHECK(gguf_writer_add_tensor(w, "b", ST_F32, 1, (const int64_t[]){5}, b) == STRATA_OK);
    CHECK(gguf_writer_to_buffer(w, &img, &size, &err) == STRATA_OK);
    CHECK(gguf_parse(img, size, &f, &err) == STRATA_OK);
    if (f != NULL) {
        CHECK(f->n_kv == 1);
        CHECK(f->alignment == 128 && f->tensors[1].offset == 128 && f->data_offset % 128 == 0);
    }
    gguf_close(f);
    free(img);
    gguf_writer_free(w);

    /* an empty file: header only */
    w = gguf_writer_new();
    CHECK(gguf_writer_to_buffer(w, &img, &size, &err) == STRATA_OK);
    CHECK(gguf_parse(img, size, &f, &err) == STRATA_OK);
    CHECK(f != NULL && f->n_tensors == 0 && f->n_kv == 1);
    gguf_close(f);
    free(img);
    gguf_writer_free(w);
}

/* Each bad call fails with STRATA_ERR_ARG, and the error sticks. */
static void test_refusals(void)
{
    float x[64] = {0};
    struct {
        const char *what;
        int step;
    } cases[] = {
        {"duplicate key", 0},          {"duplicate tensor", 1},     {"ragged block", 2},
        {"zero dims", 3},              {"five dims", 4},            {"unknown type", 5},
        {"bad alignment", 6},          {"string via add_arr", 7},   {"nested array", 8},
        {"zero dimension", 9},         {"empty key", 10},           {"alignment kv not pow2", 11},
        {"NULL tensor data", 12},      {"NULL fill", 13},           {"empty tensor name", 14},
        {"alignment as u64", 15},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        gguf_writer *w = gguf_writer_new();
        CHECK(gguf_writer_add_u32(w, "k", 1) == STRATA_OK);
        CHECK(gguf_writer_add_tensor(w, "t", ST_F32, 1, (const int64_t[]){4}, x) == STRATA_OK);
        strata_err rc = STRATA_OK;
        switch (cases[c].step) {
        case 0: rc = gguf_writer_add_str(w, "k", "again"); break;
        case 1: rc = gguf_writer_add_tensor(w, "t", ST_F32, 1, (const int64_t[]){4}, x); break;
        case 2: rc = gguf_writer_add_tensor(w, "q", ST_Q8_0, 1, (const int64_t[]){33}, x); break;
        case 3: rc = gguf_writer_add_tensor(w, "q", ST_F32, 0, (const int64_t[]){4}, x); break;
        case 4: rc = gguf_writer_add_tensor(w, "q", ST_F32, 5, (const int64_t[]){1, 1, 1, 1, 1}, x); break;
        case 5: rc = gguf_writer_add_tensor(w, "q", (st_type)99, 1, (const int64_t[]){4}, x); break;
        case 6: rc = gguf_writer_set_alignment(w, 48); break;
        case 7: rc = gguf_writer_add_arr(w, "a", GGUF_T_STRING, x, 1); break;
        case 8: rc = gguf_writer_add_arr(w, "a", GGUF_T_ARRAY, x, 1); break;
        case 9: rc = gguf_writer_add_tensor(w, "q", ST_F32, 2, (const int64_t[]){4, 0}, x); break;
        case 10: rc = gguf_writer_add_u8(w, "", 1); break;
        case 11: rc = gguf_writer_add_u32(w, "general.alignment", 24); break;
        case 12: rc = gguf_writer_add_tensor(w, "q", ST_F32, 1, (const int64_t[]){4}, NULL); break;
        case 13: rc = gguf_writer_add_tensor_fill(w, "q", ST_F32, 1, (const int64_t[]){4}, NULL, NULL); break;
        case 14: rc = gguf_writer_add_tensor(w, "", ST_F32, 1, (const int64_t[]){4}, x); break;
        case 15: rc = gguf_writer_add_u64(w, "general.alignment", 32); break;
        }
        CHECK_MSG(rc == STRATA_ERR_ARG, "%s: got %d", cases[c].what, (int)rc);
        /* sticky: later adds and the write report the first error */
        CHECK_MSG(gguf_writer_add_u8(w, "fresh", 1) == STRATA_ERR_ARG, "%s", cases[c].what);
        uint8_t *img = NULL;
        uint64_t size = 0;
        strata_error err = {0};
        CHECK_MSG(gguf_writer_to_buffer(w, &img, &size, &err) == STRATA_ERR_ARG && img == NULL, "%s", cases[c].what);
        CHECK_MSG(err.code == STRATA_ERR_ARG && err.msg[0] != '\0', "%s", cases[c].what);
        CHECK(gguf_writer_n_kv(w) == 1 && gguf_writer_n_tensors(w) == 1);
        gguf_writer_free(w);
    }
}

static uint8_t *slurp(const char *path, uint64_t *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
    if (p != NULL && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *size = (uint64_t)n;
    return p;
}

/* Entries in dir other than . and .. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static void test_files(void)
{
    char dir[] = "/tmp/strata-gguf-write-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof(path), "%s/model.gguf", dir);

    fill_state fs = {0};
    gguf_writer *w = build_full(&fs);
    strata_error err = {0};
    CHECK(gguf_writer_write(w, path, &err) == STRATA_OK);
    CHECK(count_entries(dir) == 1); /* no temp file left */
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);

    uint8_t *img = NULL;
    uint64_t size = 0;
    CHECK(gguf_writer_to_buffer(w, &img, &size, &err) == STRATA_OK);
    uint64_t fsize = 0;
    uint8_t *disk = slurp(path, &fsize);
    CHECK(disk != NULL && fsize == size && memcmp(disk, img, size) == 0);
    free(disk);

    for (int mm = 0; mm < 2; mm++) {
        gguf_file *f = NULL;
        CHECK(gguf_open(path, mm == 1, &f, &err) == STRATA_OK);
        if (f != NULL) {
            check_full(f);
        }
        gguf_close(f);
    }

    /* a failing fill leaves the old file untouched and no temp file */
    fs.fail = true;
    err = (strata_error){0};
    CHECK(gguf_writer_write(w, path, &err) == STRATA_ERR_INTERNAL);
    CHECK(strstr(err.msg, "filled") != NULL && strstr(err.msg, "asked to fail") != NULL);
    CHECK(count_entries(dir) == 1);
    disk = slurp(path, &fsize);
    CHECK(disk != NULL && fsize == size && memcmp(disk, img, size) == 0);
    free(disk);
    gguf_writer_free(w);

    /* rewriting replaces the file */
    w = gguf_writer_new();
    CHECK(gguf_writer_add_str(w, "general.name", "second") == STRATA_OK);
    CHECK(gguf_writer_write(w, path, &err) == STRATA_OK);
    gguf_file *f = NULL;
    CHECK(gguf_open(path, true, &f, &err) == STRATA_OK);
    char name[32];
    CHECK(f != NULL && gguf_get_str(f, "general.name", name, sizeof(name)) && strcmp(name, "second") == 0);
    gguf_close(f);
    CHECK(count_entries(dir) == 1);

    /* a missing folder is an IO error */
    char bad[300];
    snprintf(bad, sizeof(bad), "%s/missing/model.gguf", dir);
    err = (strata_error){0};
    CHECK(gguf_writer_write(w, bad, &err) == STRATA_ERR_IO && strstr(err.msg, "missing") != NULL);
    CHECK(gguf_writer_write(w, "", &err) == STRATA_ERR_ARG);
    gguf_writer_free(w);

    free(img);
    unlink(path);
    rmdir(dir);
}

/* Copying a real file's metadata (the stories260K vocabulary) keeps it. */
static void test_copy_real(void)
{
    const char *path = "../shared/models/stories260K.gguf";
    gguf_file *src = NULL;
    strata_error err = {0};
    if (gguf_open(path, true, &src, &err) != STRATA_OK) {
        printf("skip: %s\n", err.msg);
        return;
    }
    gguf_writer *w = gguf_writer_new();
    for (uint64_t k = 0; k < src->n_kv; k++) {
        CHECK(gguf_writer_copy_kv(w, &src->kv[k]) == STRATA_OK);
    }
    uint8_t *img = NULL;
    uint64_t size = 0;
    CHECK(gguf_writer_to_buffer(w, &img, &size, &err) == STRATA_OK);
    gguf_file *f = NULL;
    CHECK(gguf_parse(img, size, &f, &err) == STRATA_OK);
    const gguf_kv *a = f ? gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_T_STRING) : NULL;
    const gguf_kv *b = gguf_get_arr(src, "tokenizer.ggml.tokens", GGUF_T_STRING);
    CHECK(a != NULL && b != NULL && a->v.arr.n == b->v.arr.n);
    for (uint64_t k = 0; a && b && k < a->v.arr.n; k++) {
        CHECK(a->v.arr.strs[k].len == b->v.arr.strs[k].len &&
              memcmp(a->v.arr.strs[k].ptr, b->v.arr.strs[k].ptr, a->v.arr.strs[k].len) == 0);
    }
    uint64_t bos = 0;
    CHECK(f && gguf_get_u64(f, "tokenizer.ggml.bos_token_id", &bos) && bos == 1);
    gguf_close(f);
    free(img);
    gguf_writer_free(w);
    gguf_close(src);
}

int main(void)
{
    test_roundtrip();
    test_alignment();
    test_refusals();
    test_files();
    test_copy_real();
    TEST_MAIN_END();
}
