/* GGUF reader: header, metadata, tensor infos; zero-copy tensor views into
 * a read-only mapping (or a malloc'd copy when mmap is off).
 *
 * Every count, length and offset is checked against the file size before it
 * is used, so truncated or hostile files give STRATA_ERR_FORMAT, never a crash.
 */
#ifndef ST_GGUF_H
#define ST_GGUF_H

#include "common.h"
#include "quant.h"

typedef enum {
    GGUF_T_UINT8 = 0,
    GGUF_T_INT8 = 1,
    GGUF_T_UINT16 = 2,
    GGUF_T_INT16 = 3,
    GGUF_T_UINT32 = 4,
    GGUF_T_INT32 = 5,
    GGUF_T_FLOAT32 = 6,
    GGUF_T_BOOL = 7,
    GGUF_T_STRING = 8,
    GGUF_T_ARRAY = 9,
    GGUF_T_UINT64 = 10,
    GGUF_T_INT64 = 11,
    GGUF_T_FLOAT64 = 12,
    GGUF_T_COUNT
} gguf_type;

typedef struct {
    const char *ptr;  /* into the file image; NOT NUL-terminated */
    uint64_t len;
} gguf_str;

typedef struct {
    gguf_str key;
    gguf_type type;
    union {
        uint64_t u64;   /* any unsigned int, bool */
        int64_t i64;    /* any signed int */
        double f64;     /* float32/float64 */
        gguf_str str;
        struct {
            gguf_type type;         /* element type (never ARRAY: nested arrays rejected) */
            uint64_t n;
            const uint8_t *data;    /* raw little-endian elements (non-string arrays) */
            gguf_str *strs;         /* string arrays: n entries (owned by gguf_file) */
        } arr;
    } v;
} gguf_kv;

#define GGUF_MAX_DIMS 4

typedef struct {
    gguf_str name;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];  /* ne[0] = elements per row (innermost) */
    st_type type;
    uint64_t offset;            /* relative to the data section */
    uint64_t nbytes;
    const uint8_t *data;        /* view into the image */
} gguf_tensor;

typedef struct gguf_file {
    uint32_t version;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset;       /* file offset of the tensor data section */
    const uint8_t *image;       /* whole file */
    uint64_t size;
    bool mapped;
    int fd;
} gguf_file;

/* Open and parse. use_mmap=false reads the file into memory. */
strata_err gguf_open(const char *path, bool use_mmap, gguf_file **out, strata_error *err);
/* Parse an in-memory image (not copied; must outlive the gguf_file). Used by
 * tests and the fuzzer. */
strata_err gguf_parse(const uint8_t *image, uint64_t size, gguf_file **out, strata_error *err);
void gguf_close(gguf_file *f);

const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Typed getters: return false if missing or of an incompatible type. */
bool gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out);
bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
bool gguf_get_f64(const gguf_file *f, const char *key, double *out);
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
/* Copies into buf (NUL-terminated, truncated); false if missing/not a string. */
bool gguf_get_str(const gguf_file *f, const char *key, char *buf, size_t cap);
const gguf_kv *gguf_get_arr(const gguf_file *f, const char *key, gguf_type elem_type);

bool gguf_str_eq(gguf_str s, const char *c);

/* Bytes of one scalar of type t; 0 for STRING, ARRAY and unknown types. */
uint64_t gguf_type_size(gguf_type t);

#endif
