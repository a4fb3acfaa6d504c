#include "textout.h"
#include "test.h"

#include <stdint.h>

/* Collects emitted pieces; each piece must be valid, complete UTF-8 unless
 * it is the final flush. */
typedef struct {
    char buf[4096];
    size_t len;
    int n_pieces;
    int stop_after; /* return false on this piece (1-based); 0: never */
    bool all_utf8;
} sink;

static bool utf8_complete(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = (uint8_t)s[i];
        size_t need = c < 0x80 ? 1 : (c >= 0xF0 ? 4 : (c >= 0xE0 ? 3 : (c >= 0xC0 ? 2 : 0)));
        if (need == 0 || i + need > n) {
            return false;
        }
        for (size_t k = 1; k < need; k++) {
            if (((uint8_t)s[i + k] & 0xC0) != 0x80) {
                return false;
            }
        }
        i += need;
    }
    return true;
}

static bool on_piece(const char *piece, size_t len, void *user)
{
    sink *s = user;
    CHECK(len > 0);
    if (!utf8_complete(piece, len)) {
        s->all_utf8 = false;
    }
    memcpy(s->buf + s->len, piece, len);
    s->len += len;
    s->buf[s->len] = '\0';
    s->n_pieces++;
    return s->stop_after == 0 || s->n_pieces < s->stop_after;
}

static void sink_init(sink *s)
{
    memset(s, 0, sizeof(*s));
    s->all_utf8 = true;
}

/* Push tokens; true if a stop string ended it, else finish. */
static bool run(st_textout *t, const char *const *toks, size_t n, sink *s)
{
    for (size_t i = 0; i < n; i++) {
        if (st_textout_push(t, toks[i], strlen(toks[i]), on_piece, s)) {
            return true;
        }
    }
    st_textout_finish(t, on_piece, s);
    return false;
}

static void test_no_stops(void)
{
    sink s;
    sink_init(&s);
    st_textout t;
    CHECK(st_textout_init(&t, NULL, 0, NULL) == STRATA_OK);
    const char *toks[] = {"Hello", ",", " world", "!"};
    CHECK(!run(&t, toks, 4, &s));
    CHECK(strcmp(s.buf, "Hello, world!") == 0);
    CHECK(s.n_pieces == 4); /* nothing to hold back: one piece per token */
    size_t len = 0;
    CHECK(strcmp(st_textout_text(&t, &len), "Hello, world!") == 0 && len == 13);
    st_textout_free(&t);
}

static void test_stop_across_tokens(void)
{
    const char *stops[] = {"</answer>", "STOP"};
    sink s;
    sink_init(&s);
    st_textout t;
    CHECK(st_textout_init(&t, stops, 2, NULL) == STRATA_OK);
    const char *toks[] = {"The result", " is 4", "</", "ans", "wer", ">ignored", "more"};
    CHECK(!st_textout_push(&t, toks[0], strlen(toks[0]), on_piece, &s));
    CHECK(!st_textout_push(&t, toks[1], strlen(toks[1]), on_piece, &s));
    CHECK(strcmp(s.buf, "The result is 4") == 0);
    CHECK(!st_textout_push(&t, toks[2], 2, on_piece, &s));
    CHECK(strcmp(s.buf, "The result is 4") == 0); /* "</" held back */
    CHECK(!st_textout_push(&t, toks[3], 3, on_piece, &s));
    CHECK(!st_textout_push(&t, toks[4], 3, on_piece, &s));
    CHECK(strcmp(s.buf, "The result is 4") == 0);
    CHECK(st_textout_push(&t, toks[5], strlen(toks[5]), on_piece, &s));
    CHECK(st_textout_push(&t, toks[6], 4, on_piece, &s));
    st_textout_finish(&t, on_piece, &s);
    CHECK(strcmp(s.buf, "The result is 4") == 0);
    CHECK(strcmp(st_textout_text(&t, NULL), "The result is 4") == 0);
    st_textout_free(&t);
}

static void test_false_alarm(void)
{
    /* A partial match that turns out not to be a stop is released. */
    const char *stops[] = {"\nUser:"};
    sink s;
    sink_init(&s);
    st_textout t;
    CHECK(st_textout_init(&t, stops, 1, NULL) == STRATA_OK);
    CHECK(!st_textout_push(&t, "line one\n", 9, on_piece, &s));
    CHECK(strcmp(s.buf, "line one") == 0);
    CHECK(!st_textout_push(&t, "Use", 3, on_piece, &s));
    CHECK(strcmp(s.buf, "line one") == 0);
    CHECK(!st_textout_push(&t, "ful", 3, on_piece, &s));
    CHECK(strcmp(s.buf, "line one\nUseful") == 0);
    /* held back at the end, then flushed by finish */
    CHECK(!st_textout_push(&t, "\nUs", 3, on_piece, &s));
    CHECK(strcmp(s.buf, "line one\nUseful") == 0);
    st_textout_finish(&t, on_piece, &s);
    CHECK(strcmp(s.buf, "line one\nUseful\nUs") == 0);
    CHECK(strcmp(st_textout_text(&t, NULL), "line one\nUseful\nUs") == 0);
    st_textout_free(&t);
}

static void test_stop_inside_token(void)
{
    /* Stop in the middle of one token; an overlapping stop "abab" in
     * "ababab" must match at the first place. */
    const char *stops[] = {"abab", "##"};
    sink s;
    sink_init(&s);
    st_textout t;
    CHECK(st_textout_init(&t, stops, 2, NULL) == STRATA_OK);
    CHECK(!st_textout_push(&t, "xa", 2, on_piece, &s));
    CHECK(strcmp(s.buf, "x") == 0);
    CHECK(!st_textout_push(&t, "ba", 2, on_piece, &s));
    CHECK(strcmp(s.buf, "x") == 0);
    CHECK(st_textout_push(&t, "bab", 3, on_piece, &s));
    CHECK(strcmp(st_textout_text(&t, NULL), "x") == 0);
    CHECK(strcmp(s.buf, "x") == 0);
    st_textout_free(&t);

    sink_init(&s);
    CHECK(st_textout_init(&t, stops, 2, NULL) == STRATA_OK);
    CHECK(st_textout_push(&t, "one # two ## three", 18, on_piece, &s));
    CHECK(strcmp(s.buf, "one # two ") == 0);
    CHECK(strcmp(st_textout_text(&t, NULL), "one # two ") == 0);
    st_textout_free(&t);
}

static void test_utf8_split(void)
{
    /* "é" = C3 A9, "€" = E2 82 AC, "😀" = F0 9F 98 80, split over tokens
     * as byte-fallback tokens do. */
    sink s;
    sink_init(&s);
    st_textout t;
    CHECK(st_textout_init(&t, NULL, 0, NULL) == STRATA_OK);
    const char *toks[] = {"caf", "\xc3", "\xa9 ", "\xe2", "\x82", "\xac", "\xf0\x9f", "\x98", "\x80!"};
    for (size_t i = 0; i < 9; i++) {
        CHECK(!st_textout_push(&t, toks[i], strlen(toks[i]), on_piece, &s));
        CHECK(utf8_complete(s.buf, s.len));
    }
    st_textout_finish(&t, on_piece, &s);
    CHECK(s.all_utf8);
    CHECK(strcmp(s.buf, "caf\xc3\xa9 \xe2\x82\xac\xf0\x9f\x98\x80!") == 0);
    st_textout_free(&t);

    /* An incomplete tail at the end is still flushed by finish. */
    sink_init(&s);
    CHECK(st_textout_init(&t, NULL, 0, NULL) == STRATA_OK);
    CHECK(!st_textout_push(&t, "ab\xe2\x82", 4, on_piece, &s));
    CHECK(strcmp(s.buf, "ab") == 0);
    st_textout_finish(&t, on_piece, &s);
    CHECK(s.len == 4);
    st_textout_free(&t);

    /* Invalid bytes cannot become valid: not held back. */
    sink_init(&s);
    CHECK(st_textout_init(&t, NULL, 0, NULL) == STRATA_OK);
    CHECK(!st_textout_push(&t, "a\xff", 2, on_piece, &s));
    CHECK(s.len == 2);
    st_textout_free(&t);
}

static void test_utf8_stop(void)
{
    /* A multibyte stop string split inside a character. */
    const char *stops[] = {"\xe2\x80\x94" "END"}; /* "—END" */
    sink s;
    sink_init(&s);
    st_textout t;
    CHECK(st_textout_init(&t, stops, 1, NULL) == STRATA_OK);
    const char *toks[] = {"x\xe2\x80\x94", "E", "N", "D", "tail"};
    CHECK(run(&t, toks, 5, &s));
    CHECK(strcmp(s.buf, "x") == 0);
    CHECK(strcmp(st_textout_text(&t, NULL), "x") == 0);
    st_textout_free(&t);

    /* "—" followed by something else is released whole. */
    sink_init(&s);
    CHECK(st_textout_init(&t, stops, 1, NULL) == STRATA_OK);
    const char *toks2[] = {"x\xe2", "\x80", "\x94", "EN", "!"};
    for (size_t i = 0; i < 5; i++) {
        CHECK(!st_textout_push(&t, toks2[i], strlen(toks2[i]), on_piece, &s));
    }
    CHECK(strcmp(s.buf, "x\xe2\x80\x94" "EN!") == 0);
    CHECK(s.all_utf8);
    st_textout_free(&t);
}

/* Every way of cutting a text into tokens gives the same result. */
static void test_all_splits(void)
{
    const char *stops[] = {"<|end|>", "\n\n"};
    const char *text = "R\xc3\xa9sum\xc3\xa9: <|en <| ok\n done\n\nafter<|end|>";
    size_t n = strlen(text);
    for (size_t a = 0; a <= n; a++) {
        for (size_t b = a; b <= n; b++) {
            sink s;
            sink_init(&s);
            st_textout t;
            CHECK(st_textout_init(&t, stops, 2, NULL) == STRATA_OK);
            bool stop = st_textout_push(&t, text, a, on_piece, &s);
            if (!stop) {
                stop = st_textout_push(&t, text + a, b - a, on_piece, &s);
            }
            if (!stop) {
                stop = st_textout_push(&t, text + b, n - b, on_piece, &s);
            }
            CHECK(stop);
            CHECK(strcmp(s.buf, "R\xc3\xa9sum\xc3\xa9: <|en <| ok\n done") == 0);
            CHECK(strcmp(st_textout_text(&t, NULL), s.buf) == 0);
            CHECK(s.all_utf8);
            st_textout_free(&t);
        }
    }
}

static void test_callback_stop_and_take(void)
{
    sink s;
    sink_init(&s);
    s.stop_after = 2;
    st_textout t;
    CHECK(st_textout_init(&t, NULL, 0, NULL) == STRATA_OK);
    CHECK(!st_textout_push(&t, "a", 1, on_piece, &s));
    CHECK(!st_textout_push(&t, "b", 1, on_piece, &s)); /* refused: not a stop string */
    CHECK(!st_textout_push(&t, "c", 1, on_piece, &s));
    st_textout_finish(&t, on_piece, &s);
    CHECK(s.n_pieces == 2 && strcmp(s.buf, "ab") == 0); /* never called again */
    size_t len = 0;
    CHECK(strcmp(st_textout_text(&t, &len), "abc") == 0 && len == 3);
    char *text = st_textout_take(&t);
    CHECK(text != NULL && strcmp(text, "abc") == 0);
    free(text);
    CHECK(strcmp(st_textout_text(&t, NULL), "") == 0);
    /* usable after take */
    CHECK(!st_textout_push(&t, "d", 1, NULL, NULL));
    CHECK(strcmp(st_textout_text(&t, NULL), "d") == 0);
    st_textout_free(&t);

    /* no callback at all; NULL stop entries are refused; "" is ignored */
    CHECK(st_textout_init(&t, NULL, 0, NULL) == STRATA_OK);
    char big[1000];
    memset(big, 'z', sizeof(big));
    for (int i = 0; i < 10; i++) {
        CHECK(!st_textout_push(&t, big, sizeof(big), NULL, NULL));
    }
    st_textout_finish(&t, NULL, NULL);
    CHECK(strlen(st_textout_text(&t, NULL)) == 10000);
    st_textout_free(&t);
    const char *bad[] = {"ok", NULL};
    strata_error err = {0};
    CHECK(st_textout_init(&t, bad, 2, &err) == STRATA_ERR_ARG);
    CHECK(strstr(err.msg, "entry 1") != NULL);
    st_textout_free(&t);
    const char *empty[] = {""};
    CHECK(st_textout_init(&t, empty, 1, NULL) == STRATA_OK);
    CHECK(!st_textout_push(&t, "abc", 3, NULL, NULL));
    st_textout_free(&t);
}

int main(void)
{
    test_no_stops();
    test_stop_across_tokens();
    test_false_alarm();
    test_stop_inside_token();
    test_utf8_split();
    test_utf8_stop();
    test_all_splits();
    test_callback_stop_and_take();
    TEST_MAIN_END();
}
