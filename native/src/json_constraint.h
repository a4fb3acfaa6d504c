/* Byte-level incremental JSON validator: a pushdown automaton that says
 * whether a byte string is still a prefix of one valid JSON text (RFC 8259),
 * so the sampler can mask tokens that would break the document.
 *
 * Like Ollama's format:"json", the top-level value must be an object or an
 * array. Whitespace runs are bounded (ST_JSON_MAX_WS_RUN bytes, at most
 * ST_JSON_MAX_WS_NEWLINES newlines) so a model cannot pad forever, and
 * nesting is limited to ST_JSON_MAX_DEPTH. Strings must be valid UTF-8 (no
 * overlongs, no encoded surrogates); \uXXXX escapes are checked for four hex
 * digits only, as JSON.parse does.
 *
 * The state is a small plain struct: copy it to try bytes without committing.
 */
#ifndef ST_JSON_CONSTRAINT_H
#define ST_JSON_CONSTRAINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_JSON_MAX_DEPTH 64
#define ST_JSON_MAX_WS_RUN 48
#define ST_JSON_MAX_WS_NEWLINES 2

typedef struct st_json_state {
    uint64_t stack;      /* bit i set: the container at depth i+1 is an object */
    uint8_t depth;       /* open containers, 0..ST_JSON_MAX_DEPTH */
    uint8_t mode;        /* where we are (enum in json_constraint.c) */
    uint8_t in_key;      /* the string being read is an object key */
    uint8_t aux;         /* hex digits / UTF-8 bytes left, or literal position */
    uint8_t lit;         /* which literal: 0 true, 1 false, 2 null */
    uint8_t utf8_lo;     /* allowed range of the next UTF-8 continuation byte */
    uint8_t utf8_hi;
    uint8_t ws_run;      /* consecutive whitespace bytes */
    uint8_t ws_newlines; /* newlines in that run */
} st_json_state;

void st_json_init(st_json_state *s);
static inline void st_json_reset(st_json_state *s) { st_json_init(s); }

/* Would s, fed these bytes, still be a valid prefix? (s is not changed.) */
bool st_json_accepts(const st_json_state *s, const char *bytes, size_t n);

/* Feed bytes; returns false (and the state stays failed) on the first byte
 * that cannot continue a valid document. */
bool st_json_feed(st_json_state *s, const char *bytes, size_t n);
static inline void st_json_advance(st_json_state *s, const char *bytes, size_t n)
{
    (void)st_json_feed(s, bytes, n);
}

/* A full top-level value has been read (trailing whitespace allowed). */
bool st_json_complete(const st_json_state *s);
bool st_json_failed(const st_json_state *s);

/* Whole-document check: text is exactly one complete top-level object or
 * array (with bounded surrounding whitespace). */
bool st_json_valid(const char *text, size_t n);

#endif
