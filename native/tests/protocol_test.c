/* strata-worker protocol: a corpus of valid and invalid requests with the
 * error code each must get, random garbage (never crashes, always an
 * error), reply builders and the helpers. */
#include "protocol.h"
#include "test.h"

typedef struct {
    const char *json;
    const char *code; /* NULL: valid */
} case_t;

static const case_t CASES[] = {
    /* valid */
    {"{\"v\":1,\"op\":\"health\"}", NULL},
    {"{\"v\":1,\"op\":\"stats\",\"id\":\"x\",\"token\":\"s\"}", NULL},
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":\"hi\",\"max_tokens\":5,\"temperature\":0,\"stop\":\"\\n\"}", NULL},
    {"{\"v\":1,\"op\":\"generate\",\"tokens\":[1,2,3],\"stream\":true,\"top_k\":40,\"top_p\":0.9,\"seed\":7}", NULL},
    {"{\"v\":1,\"op\":\"embed\",\"input\":\"a\",\"async\":true,\"timeout_ms\":5}", NULL},
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":\"hi\",\"max_tokens\":5.0}", NULL},
    {"{\"v\":1,\"op\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"system\":\"s\"}", NULL},
    {"{\"v\":1,\"op\":\"chat\",\"messages\":[]}", NULL},
    {"{\"v\":1,\"op\":\"score\",\"prompt\":\"Match?\",\"options\":[\" yes\",\" no\"]}", NULL},
    {"{\"v\":1,\"op\":\"embed\",\"input\":\"text\",\"add_bos\":false}", NULL},
    {"{\"v\":1,\"op\":\"tokenize\",\"text\":\"\",\"special\":true}", NULL},
    {"{\"v\":1,\"op\":\"cancel\",\"rid\":3}", NULL},
    {"{\"v\":1,\"op\":\"poll\",\"rid\":3,\"offset\":10,\"wait_ms\":0}", NULL},
    {"{\"v\":1,\"op\":\"health\",\"unknown_field\":[1,2,{}]}", NULL},
    /* malformed / protocol */
    {"", "STRATA_ERR_PROTOCOL"},
    {"{", "STRATA_ERR_PROTOCOL"},
    {"[]", "STRATA_ERR_PROTOCOL"},
    {"null", "STRATA_ERR_PROTOCOL"},
    {"\"health\"", "STRATA_ERR_PROTOCOL"},
    {"{\"op\":\"health\"}", "STRATA_ERR_PROTOCOL"},
    {"{\"v\":2,\"op\":\"health\"}", "STRATA_ERR_PROTOCOL"},
    {"{\"v\":\"1\",\"op\":\"health\"}", "STRATA_ERR_PROTOCOL"},
    {"{\"v\":1}", "STRATA_ERR_PROTOCOL"},
    {"{\"v\":1,\"op\":7}", "STRATA_ERR_PROTOCOL"},
    {"{\"v\":1,\"op\":\"rm -rf\"}", "STRATA_ERR_PROTOCOL"},
    {"{\"v\":1,\"op\":\"health\",\"op\":\"stats\"}", "STRATA_ERR_PROTOCOL"},
    {"{\"v\":1,\"op\":\"health\"} trailing", "STRATA_ERR_PROTOCOL"},
    {"{\"v\":1,\"op\":\"health\",\"token\":5}", "STRATA_ERR_AUTH"},
    /* arguments */
    {"{\"v\":1,\"op\":\"generate\"}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":5}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":\"a\",\"tokens\":[1]}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"generate\",\"tokens\":[1,-2]}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"generate\",\"tokens\":\"1,2\"}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":\"a\",\"max_tokens\":0}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":\"a\",\"max_tokens\":1.5}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":\"a\",\"temperature\":\"hot\"}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":\"a\",\"top_p\":2}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":\"a\",\"stop\":[1]}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":\"a\",\"stream\":1}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"score\",\"prompt\":\"a\",\"options\":[\" b\"],\"async\":\"yes\"}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":\"a\",\"timeout_ms\":-1}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"chat\"}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"chat\",\"messages\":[{\"role\":\"user\"}]}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"chat\",\"messages\":[\"hi\"]}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"score\",\"prompt\":\"a\"}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"score\",\"prompt\":\"a\",\"options\":[]}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"score\",\"prompt\":\"a\",\"options\":[\"\"]}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"score\",\"prompt\":\"a\",\"options\":\" yes\"}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"score\",\"options\":[\" yes\"]}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"embed\"}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"tokenize\",\"text\":null}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"tokenize\",\"text\":\"a\",\"add_bos\":\"yes\"}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"poll\"}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"poll\",\"rid\":0}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"poll\",\"rid\":1,\"wait_ms\":999999}", "STRATA_ERR_ARG"},
    {"{\"v\":1,\"op\":\"cancel\",\"rid\":\"1\"}", "STRATA_ERR_ARG"},
    /* limits */
    {"{\"v\":1,\"op\":\"generate\",\"prompt\":\"a\",\"max_tokens\":100000}", "STRATA_ERR_LIMIT"},
    {"{\"v\":1,\"op\":\"score\",\"prompt\":\"a\",\"options\":[\"1\",\"2\",\"3\",\"4\",\"5\"]}", "STRATA_ERR_LIMIT"},
};

static void test_corpus(void)
{
    proto_limits lim;
    proto_limits_default(&lim);
    lim.max_new_tokens = 1000;
    lim.max_options = 4;
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        proto_req r;
        proto_error e;
        bool ok = proto_parse(CASES[i].json, strlen(CASES[i].json), &lim, &r, &e);
        if (CASES[i].code == NULL) {
            CHECK_MSG(ok, "case %zu (%s) should parse: %s %s", i, CASES[i].json, e.code, e.message);
        } else {
            CHECK_MSG(!ok && e.code != NULL && strcmp(e.code, CASES[i].code) == 0, "case %zu (%s): got %s (%s)", i,
                      CASES[i].json, ok ? "ok" : e.code, e.message);
            CHECK(e.message[0] != '\0');
            /* every error makes a valid reply */
            char *reply = proto_reply_error(r.id, e.code, "%s", e.message);
            json_error_t je;
            json_t *j = reply != NULL ? json_loads(reply, 0, &je) : NULL;
            CHECK(j != NULL && json_is_false(json_object_get(j, "ok")));
            json_decref(j);
            free(reply);
        }
        proto_req_free(&r);
    }
}

static void test_fields(void)
{
    proto_limits lim;
    proto_limits_default(&lim);
    proto_req r;
    proto_error e;
    const char *s = "{\"v\":1,\"op\":\"generate\",\"id\":{\"n\":[1]},\"token\":\"tk\",\"tokens\":[5,6],"
                    "\"max_tokens\":9,\"temperature\":0.5,\"top_k\":3,\"stop\":[\"a\",\"b\"],\"stream\":true,"
                    "\"add_bos\":false,\"timeout_ms\":100}";
    CHECK(proto_parse(s, strlen(s), &lim, &r, &e));
    CHECK(r.op == PROTO_GENERATE);
    CHECK(r.n_tokens == 2 && r.tokens[0] == 5 && r.tokens[1] == 6);
    CHECK(r.max_tokens == 9 && r.sampling.top_k == 3);
    CHECK_NEAR(r.sampling.temperature, 0.5, 1e-7);
    CHECK(r.n_stop == 2 && strcmp(r.stop[1], "b") == 0);
    CHECK(r.stream && r.has_add_bos && !r.add_bos && r.timeout_ms == 100);
    CHECK(r.token != NULL && strcmp(r.token, "tk") == 0);
    CHECK(!r.async);
    json_t *body = json_object();
    json_object_set_new(body, "x", json_integer(1));
    char *reply = proto_reply_ok(r.id, body);
    CHECK(reply != NULL && strstr(reply, "\"id\":{\"n\":[1]}") != NULL && strstr(reply, "\"ok\":true") != NULL &&
          strstr(reply, "\"x\":1") != NULL && strstr(reply, "\"v\":1") != NULL);
    free(reply);
    proto_req_free(&r);

    /* async: any model op answers with a rid at once */
    const char *as = "{\"v\":1,\"op\":\"score\",\"prompt\":\"p\",\"options\":[\" a\"],\"async\":true}";
    CHECK(proto_parse(as, strlen(as), &lim, &r, &e));
    CHECK(r.op == PROTO_SCORE && r.async && !r.stream);
    proto_req_free(&r);

    /* an id survives a later error so the reply can echo it */
    const char *bad = "{\"v\":1,\"op\":\"nope\",\"id\":42}";
    CHECK(!proto_parse(bad, strlen(bad), &lim, &r, &e));
    CHECK(r.id != NULL && json_integer_value(r.id) == 42);
    proto_req_free(&r);
}

static void test_helpers(void)
{
    CHECK(proto_token_equal("secret", "secret"));
    CHECK(!proto_token_equal("secret", "secreT"));
    CHECK(!proto_token_equal("secret", "secret2"));
    CHECK(!proto_token_equal("", "x"));
    CHECK(!proto_token_equal("x", ""));
    json_t *s = proto_string("a\xff" "b\xc3\xa9", 5);
    CHECK(s != NULL && strcmp(json_string_value(s), "a\xef\xbf\xbd" "b\xc3\xa9") == 0);
    json_decref(s);
    s = proto_string("\xe2\x82", 2); /* truncated sequence */
    CHECK(s != NULL && json_string_length(s) == 6);
    json_decref(s);
    CHECK(strcmp(strata_stop_name(STRATA_STOP_EOG), "eog") == 0);
    CHECK(strcmp(strata_err_name(STRATA_ERR_LIMIT), "STRATA_ERR_LIMIT") == 0);
    CHECK(strcmp(proto_op_name(PROTO_SCORE), "score") == 0);
    char *r = proto_reply_error(NULL, "STRATA_ERR_ARG", "bad \xff byte");
    CHECK(r != NULL && strstr(r, "\"id\":null") != NULL);
    free(r);
}

/* Random bytes and mutated valid requests: parse never crashes and every
 * failure names a code. */
static void test_garbage(void)
{
    proto_limits lim;
    proto_limits_default(&lim);
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    char buf[512];
    int parsed = 0;
    for (int it = 0; it < 20000; it++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t n = (size_t)(x % sizeof(buf));
        if (it % 2 == 0) {
            for (size_t i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[i] = (char)(x & 0xff);
            }
        } else {
            const char *base = CASES[x % (sizeof(CASES) / sizeof(CASES[0]))].json;
            size_t bl = strlen(base);
            memcpy(buf, base, bl);
            n = bl;
            for (int k = 0; k < 3 && n > 0; k++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf[(x >> 8) % n] = (char)(x & 0xff);
            }
        }
        proto_req r;
        proto_error e;
        if (proto_parse(buf, n, &lim, &r, &e)) {
            parsed++;
        } else {
            CHECK(e.code != NULL);
        }
        proto_req_free(&r);
    }
    CHECK(parsed < 20000);
}

int main(void)
{
    test_corpus();
    test_fields();
    test_helpers();
    test_garbage();
    TEST_MAIN_END();
}
