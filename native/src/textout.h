/* Streaming text assembly for generation. Token bytes go in; pieces come
 * out through the emit callback only when they are complete UTF-8 and cannot
 * be the beginning of a stop string. Stop strings are found across token
 * boundaries; the text kept (st_textout_text) ends just before the stop.
 *
 *   st_textout t;
 *   st_textout_init(&t, stops, n_stops, &err);
 *   for each token: if (st_textout_push(&t, bytes, len, emit, user)) break;  stop string
 *   st_textout_finish(&t, emit, user);   end of generation: flush what was held back
 *   char *text = st_textout_take(&t);    NULL only when memory ran out
 *   st_textout_free(&t);
 *
 * Once emit returns false it is not called again (the text still grows).
 */
#ifndef ST_TEXTOUT_H
#define ST_TEXTOUT_H

#include "common.h"

typedef struct st_textout {
    char **stops;         /* (n_stops) owned copies, non-empty */
    size_t *stop_len;     /* (n_stops) */
    size_t n_stops;
    size_t max_stop;      /* longest stop string */
    char *text;           /* (cap) everything accepted, NUL-terminated at len */
    size_t len;
    size_t cap;
    size_t emitted;       /* text[0..emitted) has been offered to emit */
    bool stopped;         /* a stop string was found: nothing more is accepted */
    bool emit_refused;    /* emit returned false: no more calls */
    bool oom;             /* an allocation failed: take gives NULL */
} st_textout;

/* Copies the stop strings (NULL entries are an error, empty ones ignored).
 * On error t is left empty and st_textout_free is still safe. */
strata_err st_textout_init(st_textout *t, const char *const *stops, size_t n_stops,
                           strata_error *err);
void st_textout_free(st_textout *t);

/* Append a token's bytes and emit what is safe. Returns true when generation
 * must stop: a stop string appeared (the text is cut before it), or memory
 * ran out (then st_textout_take returns NULL). Later pushes do nothing and
 * return true again. emit may be NULL. */
bool st_textout_push(st_textout *t, const char *bytes, size_t n, strata_piece_cb emit, void *user);

/* End of generation: emit whatever was held back (a partial stop string,
 * an incomplete UTF-8 tail). Does nothing after a stop string. */
void st_textout_finish(st_textout *t, strata_piece_cb emit, void *user);

/* The text so far, stop string excluded (NUL-terminated, owned by t). */
const char *st_textout_text(const st_textout *t, size_t *len);

/* Hand the text over (malloc'd, NUL-terminated; NULL if memory ran out at
 * any point); t is left with an empty text. */
char *st_textout_take(st_textout *t);

#endif
