/* GGUF v3 writer: metadata (every scalar type, strings, arrays, string
 * arrays) and tensors, written atomically (temp file in the same folder,
 * fsync, rename) with every tensor aligned to general.alignment (32).
 *
 * Used by the random-model generator (tools/mkmodel.c) and by the tests that
 * build valid and broken files for the reader. The writer only writes valid
 * files: the corrupt ones are made by editing its output.
 *
 * Errors are sticky: the first failing add_* is remembered and returned again
 * by gguf_writer_write / gguf_writer_to_buffer, so a caller may make a run of
 * adds and check once.
 */
#ifndef ST_GGUF_WRITE_H
#define ST_GGUF_WRITE_H

#include "gguf.h"

typedef struct gguf_writer gguf_writer;

/* Produces a tensor's bytes at write time, so big tensors never all sit in
 * memory together. dst has nbytes (the tensor's full size). Returns STRATA_OK
 * or an error filled into err. */
typedef strata_err (*gguf_fill_fn)(void *user, const char *name, void *dst, uint64_t nbytes,
                                   strata_error *err);

/* NULL when out of memory. */
gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);

/* Alignment of the data section and of every tensor (power of two; 32 by
 * default). Written as general.alignment (uint32). */
strata_err gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment);

/* Scalars. Keys must be unique (STRATA_ERR_ARG otherwise). */
strata_err gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v);
strata_err gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v);
strata_err gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v);
strata_err gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v);
strata_err gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v);
strata_err gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v);
strata_err gguf_writer_add_f32(gguf_writer *w, const char *key, float v);
strata_err gguf_writer_add_bool(gguf_writer *w, const char *key, bool v);
strata_err gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v);
strata_err gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v);
strata_err gguf_writer_add_f64(gguf_writer *w, const char *key, double v);
strata_err gguf_writer_add_str(gguf_writer *w, const char *key, const char *s);
/* A string of len bytes (may hold NULs). */
strata_err gguf_writer_add_strn(gguf_writer *w, const char *key, const char *s, uint64_t len);

/* Array of n scalars of type elem (not STRING/ARRAY), data in the machine's
 * (little-endian) layout; copied. */
strata_err gguf_writer_add_arr(gguf_writer *w, const char *key, gguf_type elem, const void *data,
                               uint64_t n);
/* Array of n strings; lens may be NULL (then strlen). Copied. */
strata_err gguf_writer_add_str_arr(gguf_writer *w, const char *key, const char *const *strs,
                                   const uint64_t *lens, uint64_t n);
/* Copy a metadata entry from a parsed file (any type, arrays included),
 * under its own key. */
strata_err gguf_writer_copy_kv(gguf_writer *w, const gguf_kv *kv);

/* Tensors: ne[0] is the row length (innermost) and must be a multiple of
 * the type's block size; names unique. add_tensor copies data (its size is
 * implied by type and shape); add_tensor_fill calls fill at write time. */
strata_err gguf_writer_add_tensor(gguf_writer *w, const char *name, st_type type, uint32_t n_dims,
                                  const int64_t *ne, const void *data);
strata_err gguf_writer_add_tensor_fill(gguf_writer *w, const char *name, st_type type, uint32_t n_dims,
                                       const int64_t *ne, gguf_fill_fn fill, void *user);

uint64_t gguf_writer_n_kv(const gguf_writer *w);
uint64_t gguf_writer_n_tensors(const gguf_writer *w);

/* Write to path atomically: either the complete file appears under path or
 * path is left as it was. */
strata_err gguf_writer_write(gguf_writer *w, const char *path, strata_error *err);
/* Build the whole file in memory (malloc'd, caller frees). */
strata_err gguf_writer_to_buffer(gguf_writer *w, uint8_t **out, uint64_t *size, strata_error *err);

#endif
