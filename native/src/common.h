/* Internal helpers shared by every module: error reporting, small utils. */
#ifndef ST_COMMON_H
#define ST_COMMON_H

#include "strata.h"
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

/* Fill err (if not NULL) with code and a printf-style message; returns code. */
strata_err st_error(strata_error *err, strata_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Monotonic clock in milliseconds. */
double st_now_ms(void);

/* malloc/calloc that never return NULL for n == 0 and check overflow of n*size. */
void *st_calloc(size_t n, size_t size);
void *st_malloc_array(size_t n, size_t size);

/* Aligned allocation (align must be a power of two >= sizeof(void*)). */
void *st_aligned_alloc(size_t align, size_t size);
void st_aligned_free(void *p);

/* IEEE half and bfloat16 conversions (exact, scalar). */
float st_fp16_to_fp32(uint16_t h);
uint16_t st_fp32_to_fp16(float f);
float st_bf16_to_fp32(uint16_t h);
uint16_t st_fp32_to_bf16(float f);

/* True for an nng TLS URL: tls+tcp://, tls+tcp4:// or tls+tcp6:// (the
 * worker's listener and the addon's client both configure TLS for these). */
bool st_url_is_tls(const char *url);

#define ST_MIN(a, b) ((a) < (b) ? (a) : (b))
#define ST_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
