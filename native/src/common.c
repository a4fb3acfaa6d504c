#include "common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const error_names[] = {
    [STRATA_OK] = "ok",
    [STRATA_ERR_IO] = "I/O error",
    [STRATA_ERR_FORMAT] = "malformed input",
    [STRATA_ERR_UNSUPPORTED] = "unsupported",
    [STRATA_ERR_NOMEM] = "out of memory",
    [STRATA_ERR_ARG] = "invalid argument",
    [STRATA_ERR_LIMIT] = "limit exceeded",
    [STRATA_ERR_CANCELLED] = "cancelled",
    [STRATA_ERR_INTERNAL] = "internal error",
};

const char *strata_strerror(strata_err code)
{
    if ((unsigned)code >= sizeof(error_names) / sizeof(error_names[0])) {
        return "unknown error";
    }
    return error_names[code];
}

const char *strata_err_name(strata_err code)
{
    switch (code) {
    case STRATA_OK: return "STRATA_OK";
    case STRATA_ERR_IO: return "STRATA_ERR_IO";
    case STRATA_ERR_FORMAT: return "STRATA_ERR_FORMAT";
    case STRATA_ERR_UNSUPPORTED: return "STRATA_ERR_UNSUPPORTED";
    case STRATA_ERR_NOMEM: return "STRATA_ERR_NOMEM";
    case STRATA_ERR_ARG: return "STRATA_ERR_ARG";
    case STRATA_ERR_LIMIT: return "STRATA_ERR_LIMIT";
    case STRATA_ERR_CANCELLED: return "STRATA_ERR_CANCELLED";
    case STRATA_ERR_INTERNAL: return "STRATA_ERR_INTERNAL";
    }
    return "STRATA_ERR_INTERNAL";
}

const char *strata_stop_name(strata_stop_reason r)
{
    switch (r) {
    case STRATA_STOP_EOG: return "eog";
    case STRATA_STOP_MAX_TOKENS: return "maxTokens";
    case STRATA_STOP_STRING: return "stop";
    case STRATA_STOP_CONTEXT: return "context";
    case STRATA_STOP_JSON: return "json";
    case STRATA_STOP_CALLBACK: return "callback";
    case STRATA_STOP_CANCELLED: return "cancelled";
    case STRATA_STOP_NONE: break;
    }
    return "none";
}

strata_err st_error(strata_error *err, strata_err code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

double st_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void *st_calloc(size_t n, size_t size)
{
    if (n == 0 || size == 0) {
        n = 1;
        size = 1;
    }
    return calloc(n, size);
}

void *st_malloc_array(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) {
        return NULL;
    }
    size_t total = n * size;
    return malloc(total == 0 ? 1 : total);
}

void *st_aligned_alloc(size_t align, size_t size)
{
    void *p = NULL;
    if (size == 0) {
        size = align;
    }
    if (posix_memalign(&p, align, size) != 0) {
        return NULL;
    }
    return p;
}

void st_aligned_free(void *p)
{
    free(p);
}

float st_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {
            /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while ((mant & 0x400) == 0) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

uint16_t st_fp32_to_fp16(float f)
{
    /* round-to-nearest-even, same results as F16C's _cvtss_sh(x, 0) */
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000u) {
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    }
    if (absx >= 0x477ff000u) { /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00);
    }
    if (absx < 0x38800000u) { /* below smallest normal half: subnormal or zero */
        if (absx < 0x33000000u) {
            return (uint16_t)sign;
        }
        uint32_t e = absx >> 23;
        uint32_t m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* value = m * 2^(e-150) = half * 2^-24 */
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) {
            half++;
        }
        return (uint16_t)(sign | half);
    }
    uint32_t e = (absx >> 23) - 127 + 15;
    uint32_t m = absx & 0x7fffff;
    uint32_t half = (e << 10) | (m >> 13);
    uint32_t rem = m & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) {
        half++;
    }
    return (uint16_t)(sign | half);
}

float st_bf16_to_fp32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

uint16_t st_fp32_to_bf16(float f)
{
    /* same rounding as ggml_compute_fp32_to_bf16 */
    uint32_t x;
    memcpy(&x, &f, sizeof(x));
    if ((x & 0x7fffffff) > 0x7f800000u) {
        return (uint16_t)((x >> 16) | 64); /* quiet NaN */
    }
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

bool st_url_is_tls(const char *url)
{
    return strncmp(url, "tls+tcp://", 10) == 0 || strncmp(url, "tls+tcp4://", 11) == 0 ||
           strncmp(url, "tls+tcp6://", 11) == 0;
}
