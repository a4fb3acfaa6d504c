#include "textout.h"

#include <stdlib.h>
#include <string.h>

strata_err st_textout_init(st_textout *t, const char *const *stops, size_t n_stops,
                           strata_error *err)
{
    memset(t, 0, sizeof(*t));
    if (n_stops > 0 && stops == NULL) {
        return st_error(err, STRATA_ERR_ARG, "stop strings: array is NULL");
    }
    for (size_t i = 0; i < n_stops; i++) {
        if (stops[i] == NULL) {
            return st_error(err, STRATA_ERR_ARG, "stop strings: entry %zu is NULL", i);
        }
    }
    t->text = malloc(64);
    t->stops = st_calloc(n_stops, sizeof(*t->stops));
    t->stop_len = st_calloc(n_stops, sizeof(*t->stop_len));
    if (t->text == NULL || t->stops == NULL || t->stop_len == NULL) {
        st_textout_free(t);
        return st_error(err, STRATA_ERR_NOMEM, "stop strings: out of memory");
    }
    t->cap = 64;
    t->text[0] = '\0';
    for (size_t i = 0; i < n_stops; i++) {
        size_t len = strlen(stops[i]);
        if (len == 0) {
            continue;
        }
        char *copy = malloc(len + 1);
        if (copy == NULL) {
            st_textout_free(t);
            return st_error(err, STRATA_ERR_NOMEM, "stop strings: out of memory");
        }
        memcpy(copy, stops[i], len + 1);
        t->stops[t->n_stops] = copy;
        t->stop_len[t->n_stops] = len;
        t->n_stops++;
        t->max_stop = ST_MAX(t->max_stop, len);
    }
    return STRATA_OK;
}

void st_textout_free(st_textout *t)
{
    if (t->stops != NULL) {
        for (size_t i = 0; i < t->n_stops; i++) {
            free(t->stops[i]);
        }
    }
    free(t->stops);
    free(t->stop_len);
    free(t->text);
    memset(t, 0, sizeof(*t));
}

/* Length of an incomplete UTF-8 sequence at the end of s[0..n), one that
 * more bytes could still complete; 0 if the tail is complete (or invalid:
 * invalid bytes can never become valid, so they are not held back). */
static size_t utf8_incomplete_tail(const char *s, size_t n)
{
    size_t back = 0;
    while (back < 3 && back < n) {
        uint8_t c = (uint8_t)s[n - 1 - back];
        if ((c & 0xC0) != 0x80) {
            size_t need;
            if (c >= 0xC2 && c <= 0xDF) {
                need = 2;
            } else if (c >= 0xE0 && c <= 0xEF) {
                need = 3;
            } else if (c >= 0xF0 && c <= 0xF4) {
                need = 4;
            } else {
                return 0;
            }
            return back + 1 < need ? back + 1 : 0;
        }
        back++;
    }
    return 0;
}

/* Longest suffix of the text that is a proper prefix of some stop string. */
static size_t stop_prefix_tail(const st_textout *t)
{
    size_t best = 0;
    for (size_t i = 0; i < t->n_stops; i++) {
        size_t max = ST_MIN(t->stop_len[i] - 1, t->len);
        for (size_t k = max; k > best; k--) {
            if (memcmp(t->text + t->len - k, t->stops[i], k) == 0) {
                best = k;
                break;
            }
        }
    }
    return best;
}

static void emit_to(st_textout *t, size_t end, strata_piece_cb emit, void *user)
{
    if (end <= t->emitted) {
        return;
    }
    size_t start = t->emitted;
    t->emitted = end;
    if (emit != NULL && !t->emit_refused && !emit(t->text + start, end - start, user)) {
        t->emit_refused = true;
    }
}

bool st_textout_push(st_textout *t, const char *bytes, size_t n, strata_piece_cb emit, void *user)
{
    if (t->stopped || t->oom) {
        return true;
    }
    if (n == 0) {
        return false;
    }
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap > 0 ? t->cap : 64;
        while (cap < t->len + n + 1) {
            cap *= 2;
        }
        char *nt = realloc(t->text, cap);
        if (nt == NULL) {
            t->oom = true;
            return true;
        }
        t->text = nt;
        t->cap = cap;
    }
    size_t old_len = t->len;
    memcpy(t->text + t->len, bytes, n);
    t->len += n;
    t->text[t->len] = '\0';

    /* Earliest stop string that ends in the new bytes. Anything that began
     * earlier was held back, so the search starts max_stop - 1 bytes back. */
    if (t->n_stops > 0) {
        size_t from = old_len >= t->max_stop - 1 ? old_len - (t->max_stop - 1) : 0;
        for (size_t pos = from; pos < t->len; pos++) {
            for (size_t i = 0; i < t->n_stops; i++) {
                size_t sl = t->stop_len[i];
                if (pos + sl <= t->len && memcmp(t->text + pos, t->stops[i], sl) == 0) {
                    t->len = pos;
                    t->text[pos] = '\0';
                    emit_to(t, pos, emit, user);
                    t->stopped = true;
                    return true;
                }
            }
        }
    }

    size_t hold = stop_prefix_tail(t);
    size_t end = t->len - hold;
    end -= utf8_incomplete_tail(t->text, end);
    emit_to(t, end, emit, user);
    return false;
}

void st_textout_finish(st_textout *t, strata_piece_cb emit, void *user)
{
    if (t->stopped || t->oom) {
        return;
    }
    emit_to(t, t->len, emit, user);
}

const char *st_textout_text(const st_textout *t, size_t *len)
{
    if (len != NULL) {
        *len = t->len;
    }
    return t->text != NULL ? t->text : "";
}

char *st_textout_take(st_textout *t)
{
    char *text = t->oom ? NULL : t->text;
    if (t->oom) {
        free(t->text);
    }
    t->text = NULL;
    t->cap = 0;
    t->len = 0;
    t->emitted = 0;
    return text;
}
