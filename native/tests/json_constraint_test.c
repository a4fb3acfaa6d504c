#include "json_constraint.h"
#include "test.h"

#include <stdint.h>

/* Complete documents. */
static const char *const valid_docs[] = {
    "{}",
    "[]",
    " \n{}\n ",
    "{\"a\":1}",
    "{ \"a\" : 1 , \"b\" : [ true , false , null ] }",
    "[0]",
    "[-0]",
    "[0.5]",
    "[-0.0e0]",
    "[1e5, 1E5, 1e+5, 1e-5, 1.25E-10]",
    "[123456789012345678901234567890]",
    "[-12.5e+300]",
    "[\"\"]",
    "[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]",
    "[\"\\u0041\\u00e9\\uD83D\\uDE00\\uFFFF\"]",
    "[\"\\uabcd\\uABCD\"]",
    "[\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"]",
    "[\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\"]",
    "{\"nested\":{\"deeper\":{\"list\":[[],[{}],[[1,2],[3]]]}}}",
    "[true,false,null]",
    "{\"\":\"\"}",
    "[{\"a\":[1,{\"b\":null}]},\"x\",-1]",
    "{\n  \"name\": \"Strata\",\n  \"tags\": [\"a\", \"b\"]\n}",
    "[1,\t2,\r\n3]",
};

/* Not valid prefixes at some point (or not complete). */
static const char *const invalid_docs[] = {
    "",                  /* incomplete */
    "1",                 /* top level must be a container */
    "\"str\"",
    "true",
    "{",                 /* incomplete */
    "[1,]",
    "[,1]",
    "{\"a\"}",
    "{\"a\":}",
    "{\"a\" 1}",
    "{a:1}",
    "{'a':1}",
    "{\"a\":1,}",
    "[01]",
    "[-01]",
    "[1.]",
    "[.5]",
    "[+1]",
    "[1e]",
    "[1e+]",
    "[1.e5]",
    "[-]",
    "[--1]",
    "[0x10]",
    "[NaN]",
    "[Infinity]",
    "[tru]",
    "[truex]",
    "[True]",
    "[nul]",
    "[\"\\x\"]",
    "[\"\\u12\"]",
    "[\"\\u12G4\"]",
    "[\"\\U0041\"]",
    "[\"a\nb\"]",           /* raw control character in a string */
    "[\"a\tb\"]",
    "[\"\x80\"]",          /* lone continuation byte */
    "[\"\xc0\xaf\"]",      /* overlong */
    "[\"\xe0\x80\xaf\"]",  /* overlong */
    "[\"\xed\xa0\x80\"]",  /* encoded surrogate */
    "[\"\xf4\x90\x80\x80\"]", /* > U+10FFFF */
    "[\"\xff\"]",
    "[\"\xc3\"]",          /* truncated sequence */
    "[1]]",
    "[1]x",
    "{}{}",
    "[}",
    "{]",
    "[1 2]",
    "[\"a\" \"b\"]",
    "{\"a\":1 \"b\":2}",
    "[\"unterminated]",
};

static bool feed_str(st_json_state *s, const char *text)
{
    return st_json_feed(s, text, strlen(text));
}

static void test_corpus(void)
{
    for (size_t i = 0; i < sizeof(valid_docs) / sizeof(valid_docs[0]); i++) {
        const char *d = valid_docs[i];
        CHECK_MSG(st_json_valid(d, strlen(d)), "should be valid: %s", d);
        /* byte by byte gives the same answer, and every prefix is accepted */
        st_json_state s;
        st_json_init(&s);
        bool ok = true;
        for (size_t j = 0; d[j] != '\0'; j++) {
            ok = ok && st_json_accepts(&s, d + j, 1);
            st_json_advance(&s, d + j, 1);
        }
        CHECK_MSG(ok && st_json_complete(&s), "byte-wise: %s", d);
    }
    for (size_t i = 0; i < sizeof(invalid_docs) / sizeof(invalid_docs[0]); i++) {
        const char *d = invalid_docs[i];
        CHECK_MSG(!st_json_valid(d, strlen(d)), "should be invalid: %s", d);
    }
}

/* Prefixes that must stay acceptable though not complete. */
static void test_prefixes(void)
{
    static const char *const prefixes[] = {
        "{", "[", "{\"", "{\"a", "{\"a\"", "{\"a\":", "{\"a\": -", "[1", "[1.", "[1.5e",
        "[1.5e-", "[tr", "[\"\\", "[\"\\u", "[\"\\u00", "[\"\xe2", "[\"\xe2\x82", "[[[",
        "{\"a\":[{\"b\":", "  ",
    };
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        st_json_state s;
        st_json_init(&s);
        CHECK_MSG(feed_str(&s, prefixes[i]), "prefix rejected: %s", prefixes[i]);
        CHECK_MSG(!st_json_complete(&s), "prefix complete: %s", prefixes[i]);
    }
}

static void test_accepts_is_pure(void)
{
    st_json_state s;
    st_json_init(&s);
    CHECK(feed_str(&s, "{\"k\":"));
    st_json_state before = s;
    CHECK(st_json_accepts(&s, "12", 2));
    CHECK(!st_json_accepts(&s, "}", 1));
    CHECK(memcmp(&before, &s, sizeof(s)) == 0);
    /* failure is sticky */
    CHECK(!feed_str(&s, "}"));
    CHECK(st_json_failed(&s));
    CHECK(!feed_str(&s, "1}"));
    CHECK(!st_json_complete(&s));
    st_json_reset(&s);
    CHECK(feed_str(&s, "[]"));
    CHECK(st_json_complete(&s));
}

static void test_completion(void)
{
    st_json_state s;
    st_json_init(&s);
    CHECK(feed_str(&s, "{\"a\":[1,2]"));
    CHECK(!st_json_complete(&s));
    CHECK(feed_str(&s, "}"));
    CHECK(st_json_complete(&s));
    CHECK(st_json_accepts(&s, "\n", 1)); /* trailing whitespace is fine */
    CHECK(!st_json_accepts(&s, ",", 1));
    CHECK(!st_json_accepts(&s, "{}", 2));
    /* a number is only complete once something ends it */
    st_json_init(&s);
    CHECK(feed_str(&s, "[12"));
    CHECK(st_json_accepts(&s, "3", 1));
    CHECK(st_json_accepts(&s, "]", 1));
    CHECK(feed_str(&s, "]"));
    CHECK(st_json_complete(&s));
}

static void test_depth(void)
{
    char buf[2 * ST_JSON_MAX_DEPTH + 4];
    size_t n = 0;
    for (int i = 0; i < ST_JSON_MAX_DEPTH; i++) {
        buf[n++] = '[';
    }
    for (int i = 0; i < ST_JSON_MAX_DEPTH; i++) {
        buf[n++] = ']';
    }
    CHECK(st_json_valid(buf, n));
    st_json_state s;
    st_json_init(&s);
    CHECK(st_json_feed(&s, buf, ST_JSON_MAX_DEPTH));
    CHECK(!st_json_accepts(&s, "[", 1));
    CHECK(!st_json_accepts(&s, "{", 1));
    CHECK(st_json_accepts(&s, "1", 1));
    /* mixed objects and arrays close in the right order */
    st_json_init(&s);
    for (int i = 0; i < ST_JSON_MAX_DEPTH / 2; i++) {
        CHECK(feed_str(&s, "{\"k\":["));
    }
    CHECK(!st_json_accepts(&s, "{", 1));
    for (int i = 0; i < ST_JSON_MAX_DEPTH / 2; i++) {
        CHECK(!st_json_accepts(&s, "}", 1));
        CHECK(feed_str(&s, "]"));
        CHECK(!st_json_accepts(&s, "]", 1));
        CHECK(feed_str(&s, "}"));
    }
    CHECK(st_json_complete(&s));
}

static void test_whitespace_limit(void)
{
    st_json_state s;
    st_json_init(&s);
    CHECK(feed_str(&s, "["));
    char spaces[ST_JSON_MAX_WS_RUN + 1];
    memset(spaces, ' ', sizeof(spaces));
    CHECK(st_json_accepts(&s, spaces, ST_JSON_MAX_WS_RUN));
    CHECK(!st_json_accepts(&s, spaces, ST_JSON_MAX_WS_RUN + 1));
    CHECK(st_json_accepts(&s, "\n\n", 2));
    CHECK(!st_json_accepts(&s, "\n\n\n", 3));
    CHECK(!st_json_accepts(&s, "\n \n \n", 5));
    /* the run restarts after a structural byte */
    CHECK(feed_str(&s, "\n\n1,\n\n2\n\n]\n\n"));
    CHECK(st_json_complete(&s));
    CHECK(!st_json_accepts(&s, "\n", 1));
    /* whitespace inside strings is content, not counted */
    st_json_init(&s);
    CHECK(feed_str(&s, "[\""));
    char many[200];
    memset(many, ' ', sizeof(many));
    CHECK(st_json_feed(&s, many, sizeof(many)));
    CHECK(feed_str(&s, "\"]"));
    CHECK(st_json_complete(&s));
}

/* Every split of each valid document into two feeds agrees with one feed. */
static void test_splits(void)
{
    for (size_t i = 0; i < sizeof(valid_docs) / sizeof(valid_docs[0]); i++) {
        const char *d = valid_docs[i];
        size_t n = strlen(d);
        for (size_t cut = 0; cut <= n; cut++) {
            st_json_state s;
            st_json_init(&s);
            bool ok = st_json_feed(&s, d, cut) && st_json_feed(&s, d + cut, n - cut);
            CHECK_MSG(ok && st_json_complete(&s), "split %zu of %s", cut, d);
        }
    }
}

/* Random byte soup never crashes and agrees with itself byte-wise. */
static void test_random(void)
{
    uint64_t x = 12345;
    static const char alphabet[] = "{}[]\",:0123456789-+.eEtrufalsn \n\\u\xc3\xa9";
    for (int iter = 0; iter < 2000; iter++) {
        char buf[32];
        size_t n = 1 + (size_t)(iter % 31);
        for (size_t j = 0; j < n; j++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            buf[j] = alphabet[(x >> 33) % (sizeof(alphabet) - 1)];
        }
        st_json_state a;
        st_json_state b;
        st_json_init(&a);
        st_json_init(&b);
        bool whole = st_json_feed(&a, buf, n);
        bool bytes = true;
        for (size_t j = 0; j < n && bytes; j++) {
            bytes = st_json_feed(&b, buf + j, 1);
        }
        CHECK(whole == bytes);
        CHECK(st_json_complete(&a) == st_json_complete(&b));
    }
}

int main(void)
{
    test_corpus();
    test_prefixes();
    test_accepts_is_pure();
    test_completion();
    test_depth();
    test_whitespace_limit();
    test_splits();
    test_random();
    TEST_MAIN_END();
}
