/* safetensors reader: an 8-byte little-endian header length, a JSON header
 * ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
 * {...}}), then the tensor bytes. The header is parsed with jansson; every
 * offset, shape and size is checked against the file before use, so a
 * truncated or hostile file gives STRATA_ERR_FORMAT, never a crash.
 * Tensor data are zero-copy views into a read-only mapping.
 */
#ifndef ST_SAFETENSORS_H
#define ST_SAFETENSORS_H

#include "common.h"
#include "quant.h"

#define ST_SAFE_MAX_DIMS 8
/* Headers above this are refused (the format's own reference limit). */
#define ST_SAFE_MAX_HEADER (100u << 20)

typedef struct {
    char *name;                     /* owned, NUL-terminated */
    char dtype[8];                  /* "BF16", "F16", "F32", "I64"... as stored */
    int type;                       /* ST_F32 / ST_F16 / ST_BF16, or -1 for other dtypes */
    size_t elem_size;               /* bytes per element */
    int n_dims;
    int64_t shape[ST_SAFE_MAX_DIMS];/* HF order: shape[0] outermost (rows) */
    uint64_t n_elems;
    uint64_t begin, end;            /* byte range relative to the data section */
    const uint8_t *data;            /* view: end - begin bytes */
} st_safetensor;

typedef struct {
    st_safetensor *tensors;         /* (n_tensors), in header order */
    size_t n_tensors;
    const uint8_t *image;           /* whole file */
    uint64_t size;
    uint64_t data_start;            /* 8 + header length */
    bool mapped;
} st_safetensors;

/* Map and parse a file. */
strata_err st_safetensors_open(const char *path, st_safetensors **out, strata_error *err);
/* Parse an in-memory image (not copied; must outlive the result). */
strata_err st_safetensors_parse(const uint8_t *image, uint64_t size, st_safetensors **out, strata_error *err);
void st_safetensors_close(st_safetensors *s);

const st_safetensor *st_safetensors_find(const st_safetensors *s, const char *name);

/* Converts n elements of a F32/F16/BF16 tensor starting at element `first`
 * to float. The caller keeps first + n <= t->n_elems. */
void st_safetensor_to_f32(const st_safetensor *t, uint64_t first, uint64_t n, float *dst);

#endif
