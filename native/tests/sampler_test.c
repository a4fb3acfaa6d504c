#include "gguf.h"
#include "json_constraint.h"
#include "sampler.h"
#include "test.h"
#include "tokenizer.h"

#include <float.h>
#include <stdint.h>

/* ---------------------------------------------------------- fake vocab -- */

typedef struct {
    const char *text; /* output bytes; "" for control tokens */
    bool eog;
} fake_tok;

typedef struct {
    const fake_tok *toks; /* (n) */
    int n;
} fake_vocab;

static const char *fake_bytes(const void *ctx, strata_token t, size_t *len)
{
    const fake_vocab *v = ctx;
    *len = strlen(v->toks[t].text);
    return v->toks[t].text;
}

static bool fake_eog(const void *ctx, strata_token t)
{
    const fake_vocab *v = ctx;
    return v->toks[t].eog;
}

static st_vocab_view fake_view(const fake_vocab *v)
{
    st_vocab_view view = {v, fake_bytes, fake_eog, v->n};
    return view;
}

/* JSON-ish pieces plus junk a chatty model likes to start with. */
static const fake_tok json_toks[] = {
    {"", true},   /* 0: </s> */
    {"", false},  /* 1: a control token */
    {"{", false}, {"}", false}, {"[", false}, {"]", false}, {"\"", false}, {":", false},
    {",", false}, {" ", false}, {"\n", false}, {"  ", false}, {"{\"", false}, {"\":", false},
    {"\",", false}, {"\"}", false}, {"}}", false}, {"]}", false}, {"},", false}, {"],", false},
    {", \"", false}, {"\": \"", false}, {"0", false}, {"1", false}, {"2", false}, {"9", false},
    {"-", false}, {".", false}, {"e", false}, {"E", false}, {"+", false}, {"12", false},
    {"3.14", false}, {"-0", false}, {"1e5", false}, {"true", false}, {"false", false},
    {"null", false}, {"tr", false}, {"ue", false}, {"nu", false}, {"ll", false}, {"a", false},
    {"b", false}, {"name", false}, {"value", false}, {" the", false}, {"\\", false},
    {"\\n", false}, {"\\\"", false}, {"\\u", false}, {"00", false}, {"e9", false}, {"u", false},
    {"x", false}, {"\xc3", false}, {"\xa9", false}, {"\xe2\x82\xac", false}, {"Sure", false},
    {" Here", false}, {"```", false}, {"json", false}, {"\n\n\n", false}, {"        ", false},
    {"\t", false}, {"{}", false}, {"[]", false}, {"}\n", false},
};

static const fake_vocab json_vocab = {json_toks, (int)(sizeof(json_toks) / sizeof(json_toks[0]))};

/* ------------------------------------------------------------- helpers -- */

static uint64_t lcg_state;

static double rnd(void)
{
    lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(lcg_state >> 11) * (1.0 / 9007199254740992.0);
}

static float rnd_logit(float scale)
{
    /* sum of uniforms: roughly normal */
    return (float)((rnd() + rnd() + rnd() - 1.5) * scale);
}

static strata_sampler *make(const st_vocab_view *v, const strata_sampler_params *p)
{
    strata_sampler *s = NULL;
    strata_error err = {0};
    strata_err rc = st_sampler_new_vocab(v, p, &s, &err);
    CHECK_MSG(rc == STRATA_OK, "%s", err.msg);
    return s;
}

static strata_sampler_params plain_params(void)
{
    strata_sampler_params p;
    strata_sampler_params_default(&p);
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.seed = 1234;
    return p;
}

/* A vocabulary of n plain tokens (no EOG) for logit-only tests. */
static const char *plain_bytes(const void *ctx, strata_token t, size_t *len)
{
    (void)ctx;
    (void)t;
    *len = 1;
    return "x";
}

static bool plain_eog(const void *ctx, strata_token t)
{
    (void)ctx;
    (void)t;
    return false;
}

static st_vocab_view plain_view(int n)
{
    st_vocab_view v = {NULL, plain_bytes, plain_eog, n};
    return v;
}

/* ------------------------------------------------------- plain sampling -- */

static void test_defaults(void)
{
    strata_sampler_params p;
    strata_sampler_params_default(&p);
    CHECK_NEAR(p.temperature, 0.8, 1e-6);
    CHECK(p.top_k == 40);
    CHECK_NEAR(p.top_p, 0.95, 1e-6);
    CHECK_NEAR(p.min_p, 0.05, 1e-6);
    CHECK_NEAR(p.repeat_penalty, 1.1, 1e-6);
    CHECK(p.repeat_last_n == 64);
    CHECK(p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f);
    CHECK(p.seed == 0xFFFFFFFFu);
    CHECK(!p.json);

    strata_sampler *s = NULL;
    strata_error err = {0};
    st_vocab_view v = plain_view(10);
    p.repeat_penalty = 0.0f;
    CHECK(st_sampler_new_vocab(&v, &p, &s, &err) == STRATA_ERR_ARG && s == NULL);
    CHECK(strstr(err.msg, "repeat_penalty") != NULL);
    strata_sampler_params_default(&p);
    p.temperature = NAN;
    CHECK(st_sampler_new_vocab(&v, &p, &s, &err) == STRATA_ERR_ARG);
    v.n_vocab = 0;
    CHECK(st_sampler_new_vocab(&v, NULL, &s, &err) == STRATA_ERR_ARG);
    CHECK(strata_sampler_new(NULL, NULL, &s, &err) == STRATA_ERR_ARG);
    strata_sampler_free(NULL);
}

static void test_greedy(void)
{
    st_vocab_view v = plain_view(1000);
    strata_sampler_params p = plain_params();
    p.temperature = 0.0f;
    p.top_k = 3; /* ignored by greedy */
    strata_sampler *s = make(&v, &p);
    float logits[1000];
    lcg_state = 7;
    for (int iter = 0; iter < 50; iter++) {
        int best = 0;
        for (int i = 0; i < 1000; i++) {
            logits[i] = rnd_logit(5.0f);
            if (logits[i] > logits[best]) {
                best = i;
            }
        }
        CHECK(strata_sampler_sample(s, logits) == best);
    }
    /* ties go to the lowest id; NaN and -inf never win */
    for (int i = 0; i < 1000; i++) {
        logits[i] = -INFINITY;
    }
    logits[3] = NAN;
    logits[500] = 2.0f;
    logits[700] = 2.0f;
    CHECK(strata_sampler_sample(s, logits) == 500);
    strata_sampler_free(s);
}

static void test_determinism(void)
{
    st_vocab_view v = plain_view(500);
    strata_sampler_params p;
    strata_sampler_params_default(&p);
    p.seed = 42;
    strata_token seq[3][100];
    uint64_t seeds[3] = {42, 42, 43};
    for (int r = 0; r < 3; r++) {
        p.seed = seeds[r];
        strata_sampler *s = make(&v, &p);
        lcg_state = 99;
        float logits[500];
        for (int step = 0; step < 100; step++) {
            for (int i = 0; i < 500; i++) {
                logits[i] = rnd_logit(2.0f);
            }
            seq[r][step] = strata_sampler_sample(s, logits);
            strata_sampler_accept(s, seq[r][step]);
        }
        strata_sampler_free(s);
    }
    CHECK(memcmp(seq[0], seq[1], sizeof(seq[0])) == 0);
    CHECK(memcmp(seq[0], seq[2], sizeof(seq[0])) != 0);

    /* reseeding restarts the stream */
    p = plain_params();
    p.seed = 5;
    strata_sampler *s = make(&v, &p);
    float flat[500];
    strata_token a[20];
    strata_token b[20];
    for (int i = 0; i < 500; i++) {
        flat[i] = 0.0f;
    }
    for (int i = 0; i < 20; i++) {
        a[i] = strata_sampler_sample(s, flat);
    }
    st_sampler_seed(s, 5);
    for (int i = 0; i < 20; i++) {
        b[i] = strata_sampler_sample(s, flat);
    }
    CHECK(memcmp(a, b, sizeof(a)) == 0);
    strata_sampler_free(s);
}

static void test_distribution(void)
{
    st_vocab_view v = plain_view(3);
    strata_sampler_params p = plain_params();
    strata_sampler *s = make(&v, &p);
    int hits[3] = {0, 0, 0};
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        float l[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
        hits[strata_sampler_sample(s, l)]++;
    }
    CHECK_NEAR(hits[0] / (double)n, 0.5, 0.02);
    CHECK_NEAR(hits[1] / (double)n, 0.3, 0.02);
    CHECK_NEAR(hits[2] / (double)n, 0.2, 0.02);
    strata_sampler_free(s);
}

/* Candidate sets on handmade logits. */
static size_t cands(const strata_sampler_params *p, const float *in, int n, strata_token *ids,
                    float *probs)
{
    st_vocab_view v = plain_view(n);
    strata_sampler *s = make(&v, p);
    float l[16];
    memcpy(l, in, (size_t)n * sizeof(float));
    size_t k = st_sampler_candidates(s, l, ids, probs, 16);
    strata_sampler_free(s);
    return k;
}

static void test_filters(void)
{
    /* probabilities (T=1): 0.4 0.25 0.15 0.1 0.06 0.04 */
    const float pr[6] = {0.25f, 0.4f, 0.1f, 0.15f, 0.04f, 0.06f};
    float l[6];
    for (int i = 0; i < 6; i++) {
        l[i] = logf(pr[i]);
    }
    strata_token ids[16];
    float probs[16];
    strata_sampler_params p = plain_params();

    size_t k = cands(&p, l, 6, ids, probs);
    CHECK(k == 6);
    CHECK(ids[0] == 1 && ids[1] == 0 && ids[2] == 3 && ids[3] == 2 && ids[4] == 5 && ids[5] == 4);
    CHECK_NEAR(probs[0], 0.4, 1e-5);

    p.top_k = 3;
    k = cands(&p, l, 6, ids, probs);
    CHECK(k == 3 && ids[0] == 1 && ids[1] == 0 && ids[2] == 3);
    CHECK_NEAR(probs[0], 0.4 / 0.8, 1e-5);

    p.top_k = 0;
    p.top_p = 0.7f; /* 0.4 + 0.25 = 0.65 < 0.7 -> three tokens */
    k = cands(&p, l, 6, ids, probs);
    CHECK(k == 3 && ids[2] == 3);
    p.top_p = 0.6f; /* 0.65 >= 0.6 -> two */
    k = cands(&p, l, 6, ids, probs);
    CHECK(k == 2 && ids[0] == 1 && ids[1] == 0);
    p.top_p = 0.0f; /* keeps at least one */
    k = cands(&p, l, 6, ids, probs);
    CHECK(k == 1 && ids[0] == 1);

    p.top_p = 1.0f;
    p.min_p = 0.3f; /* keep p >= 0.12: 0.4 0.25 0.15 */
    k = cands(&p, l, 6, ids, probs);
    CHECK(k == 3 && ids[0] == 1 && ids[1] == 0 && ids[2] == 3);
    p.min_p = 0.5f; /* p >= 0.2 */
    k = cands(&p, l, 6, ids, probs);
    CHECK(k == 2);

    /* top_p is computed on the top_k set: top 4 renormalised = .444 .278 .167 .111 */
    p.min_p = 0.0f;
    p.top_k = 4;
    p.top_p = 0.8f; /* .444+.278 = .722 < .8 -> 3 */
    k = cands(&p, l, 6, ids, probs);
    CHECK(k == 3);
    p.top_p = 0.7f; /* .722 >= .7 -> 2 */
    k = cands(&p, l, 6, ids, probs);
    CHECK(k == 2);

    /* min_p after top_p, relative to the best */
    p.top_k = 0;
    p.top_p = 0.95f; /* .4 .25 .15 .1 .06 = .96 -> 5 */
    p.min_p = 0.2f;  /* >= .08 -> .4 .25 .15 .1 */
    k = cands(&p, l, 6, ids, probs);
    CHECK(k == 4);

    /* temperature reshapes the final probabilities */
    p = plain_params();
    p.temperature = 0.5f;
    k = cands(&p, l, 6, ids, probs);
    double z = 0.0;
    for (int i = 0; i < 6; i++) {
        z += pow(pr[i], 2.0);
    }
    CHECK(k == 6);
    CHECK_NEAR(probs[0], pow(0.4, 2.0) / z, 1e-5);
    CHECK_NEAR(probs[5], pow(0.04, 2.0) / z, 1e-5);

    /* -inf and NaN are never candidates */
    float m[4] = {0.0f, -INFINITY, NAN, 1.0f};
    p = plain_params();
    k = cands(&p, m, 4, ids, probs);
    CHECK(k == 2 && ids[0] == 3 && ids[1] == 0);
}

/* The partial-selection chain against a plain full sort. */
static int ref_cmp(const void *pa, const void *pb)
{
    const float *la = pa; /* {logit, id} pairs */
    const float *lb = pb;
    if (la[0] != lb[0]) {
        return la[0] > lb[0] ? -1 : 1;
    }
    return la[1] < lb[1] ? -1 : (la[1] > lb[1] ? 1 : 0);
}

static size_t ref_chain(const float *logits, int n, const strata_sampler_params *p, int *out)
{
    float(*pairs)[2] = malloc((size_t)n * sizeof(*pairs));
    for (int i = 0; i < n; i++) {
        pairs[i][0] = logits[i];
        pairs[i][1] = (float)i;
    }
    qsort(pairs, (size_t)n, sizeof(*pairs), ref_cmp);
    size_t k = (size_t)n;
    if (p->top_k > 0 && (size_t)p->top_k < k) {
        k = (size_t)p->top_k;
    }
    if (p->top_p < 1.0f) {
        double z = 0.0;
        for (size_t i = 0; i < k; i++) {
            z += exp((double)pairs[i][0] - pairs[0][0]);
        }
        double cum = 0.0;
        for (size_t i = 0; i < k; i++) {
            cum += exp((double)pairs[i][0] - pairs[0][0]) / z;
            if (cum >= (double)p->top_p) {
                k = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        float thr = pairs[0][0] + logf(p->min_p);
        size_t i = 1;
        while (i < k && pairs[i][0] >= thr) {
            i++;
        }
        k = i;
    }
    for (size_t i = 0; i < k; i++) {
        out[i] = (int)pairs[i][1];
    }
    free(pairs);
    return k;
}

static void test_against_reference(void)
{
    const int sizes[2] = {1000, 150000};
    lcg_state = 2024;
    for (int si = 0; si < 2; si++) {
        int n = sizes[si];
        float *logits = malloc((size_t)n * sizeof(float));
        float *work = malloc((size_t)n * sizeof(float));
        int *ref = malloc((size_t)n * sizeof(int));
        strata_token *ids = malloc((size_t)n * sizeof(strata_token));
        float *probs = malloc((size_t)n * sizeof(float));
        st_vocab_view v = plain_view(n);
        int iters = si == 0 ? 40 : 6;
        for (int iter = 0; iter < iters; iter++) {
            strata_sampler_params p = plain_params();
            int cfg = iter % 4;
            p.top_k = cfg == 0 ? 40 : (cfg == 1 ? 0 : (cfg == 2 ? 200 : 5));
            p.top_p = cfg == 3 ? 1.0f : (float)(0.5 + 0.45 * rnd());
            p.min_p = cfg == 1 ? 0.0f : (float)(0.01 + 0.1 * rnd());
            if (cfg == 1 && si == 1) {
                p.min_p = 0.02f; /* keep the reference sort the only slow part */
            }
            for (int i = 0; i < n; i++) {
                /* quantized so that ties between logits occur */
                logits[i] = roundf(rnd_logit(6.0f) * 8.0f) / 8.0f;
            }
            memcpy(work, logits, (size_t)n * sizeof(float));
            strata_sampler *s = make(&v, &p);
            size_t k = st_sampler_candidates(s, work, ids, probs, (size_t)n);
            size_t rk = ref_chain(logits, n, &p, ref);
            CHECK_MSG(k == rk, "n %d cfg %d: %zu vs %zu", n, cfg, k, rk);
            bool same = k == rk;
            for (size_t i = 0; same && i < k; i++) {
                same = ids[i] == ref[i];
            }
            CHECK_MSG(same, "n %d cfg %d: different candidates", n, cfg);
            strata_sampler_free(s);
        }
        free(logits);
        free(work);
        free(ref);
        free(ids);
        free(probs);
    }
}

static void test_penalties(void)
{
    st_vocab_view v = plain_view(5);
    strata_sampler_params p = plain_params();
    p.temperature = 0.0f;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 3;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    strata_sampler *s = make(&v, &p);
    strata_token acc[4] = {1, 2, 2, 3};
    for (int i = 0; i < 4; i++) {
        strata_sampler_accept(s, acc[i]);
    }
    /* window [2 2 3]: token 1 fell out */
    float l[5] = {0.5f, 4.0f, 4.0f, -1.0f, 0.0f};
    CHECK(strata_sampler_sample(s, l) == 1);
    CHECK_NEAR(l[0], 0.5, 1e-6);
    CHECK_NEAR(l[1], 4.0, 1e-6);
    CHECK_NEAR(l[2], 4.0 / 2 - (2 * 0.25 + 0.5), 1e-6);
    CHECK_NEAR(l[3], -1.0 * 2 - (0.25 + 0.5), 1e-6);
    CHECK_NEAR(l[4], 0.0, 1e-6);
    /* one more token pushes a 2 out: the window [2 3 4] counts each once */
    strata_sampler_accept(s, 4);
    float l2[5] = {0.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    strata_sampler_sample(s, l2);
    CHECK_NEAR(l2[1], 1.0, 1e-6);
    CHECK_NEAR(l2[2], 0.5 - (0.25 + 0.5), 1e-6);
    CHECK_NEAR(l2[3], 0.5 - (0.25 + 0.5), 1e-6);
    CHECK_NEAR(l2[4], 0.5 - (0.25 + 0.5), 1e-6);
    st_sampler_reset(s);
    float l3[5] = {0.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    strata_sampler_sample(s, l3);
    CHECK(l3[2] == 1.0f && l3[4] == 1.0f);
    strata_sampler_free(s);

    /* repeat_last_n = -1: the whole history; 0: off */
    p.repeat_last_n = -1;
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.0f;
    s = make(&v, &p);
    st_sampler_accept_history(s, 0);
    for (int i = 0; i < 100; i++) {
        strata_sampler_accept(s, 4);
    }
    float l4[5] = {2.0f, 1.0f, 1.0f, 1.0f, 3.0f};
    CHECK(strata_sampler_sample(s, l4) == 4); /* 3/2 = 1.5 > 1 */
    CHECK_NEAR(l4[0], 1.0, 1e-6);
    strata_sampler_free(s);
    p.repeat_last_n = 0;
    s = make(&v, &p);
    strata_sampler_accept(s, 4);
    float l5[5] = {2.0f, 1.0f, 1.0f, 1.0f, 3.0f};
    strata_sampler_sample(s, l5);
    CHECK(l5[4] == 3.0f);
    strata_sampler_free(s);
}

/* ------------------------------------------------------------ JSON mode -- */

/* An independent strict recursive-descent JSON checker (top level: object
 * or array), to cross-check the automaton on generated documents. */
typedef struct {
    const unsigned char *s;
    size_t n;
    size_t i;
    int depth;
} rd;

static bool rd_value(rd *r);

static void rd_ws(rd *r)
{
    while (r->i < r->n && strchr(" \t\n\r", r->s[r->i]) != NULL && r->s[r->i] != 0) {
        r->i++;
    }
}

static bool rd_lit(rd *r, const char *lit)
{
    size_t n = strlen(lit);
    if (r->i + n > r->n || memcmp(r->s + r->i, lit, n) != 0) {
        return false;
    }
    r->i += n;
    return true;
}

static bool rd_digits(rd *r)
{
    size_t start = r->i;
    while (r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9') {
        r->i++;
    }
    return r->i > start;
}

static bool rd_number(rd *r)
{
    if (r->i < r->n && r->s[r->i] == '-') {
        r->i++;
    }
    if (r->i < r->n && r->s[r->i] == '0') {
        r->i++;
    } else if (!rd_digits(r)) {
        return false;
    }
    if (r->i < r->n && r->s[r->i] == '.') {
        r->i++;
        if (!rd_digits(r)) {
            return false;
        }
    }
    if (r->i < r->n && (r->s[r->i] == 'e' || r->s[r->i] == 'E')) {
        r->i++;
        if (r->i < r->n && (r->s[r->i] == '+' || r->s[r->i] == '-')) {
            r->i++;
        }
        if (!rd_digits(r)) {
            return false;
        }
    }
    return true;
}

static bool rd_string(rd *r)
{
    r->i++; /* opening quote */
    while (r->i < r->n) {
        unsigned c = r->s[r->i++];
        if (c == '"') {
            return true;
        }
        if (c < 0x20) {
            return false;
        }
        if (c == '\\') {
            if (r->i >= r->n) {
                return false;
            }
            unsigned e = r->s[r->i++];
            if (e == 'u') {
                for (int k = 0; k < 4; k++) {
                    if (r->i >= r->n || strchr("0123456789abcdefABCDEF", r->s[r->i]) == NULL ||
                        r->s[r->i] == 0) {
                        return false;
                    }
                    r->i++;
                }
            } else if (strchr("\"\\/bfnrt", (int)e) == NULL || e == 0) {
                return false;
            }
        } else if (c >= 0x80) {
            /* decode and check the code point */
            int need = c >= 0xF0 ? 3 : (c >= 0xE0 ? 2 : (c >= 0xC0 ? 1 : -1));
            if (need < 0 || c > 0xF4) {
                return false;
            }
            unsigned cp = c & (0x3Fu >> need);
            for (int k = 0; k < need; k++) {
                if (r->i >= r->n || (r->s[r->i] & 0xC0) != 0x80) {
                    return false;
                }
                cp = (cp << 6) | (r->s[r->i++] & 0x3Fu);
            }
            unsigned min = need == 1 ? 0x80 : (need == 2 ? 0x800 : 0x10000);
            if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
                return false;
            }
        }
    }
    return false;
}

static bool rd_container(rd *r, char open, char close)
{
    if (++r->depth > ST_JSON_MAX_DEPTH) {
        return false;
    }
    r->i++;
    rd_ws(r);
    if (r->i < r->n && r->s[r->i] == (unsigned char)close) {
        r->i++;
        r->depth--;
        return true;
    }
    for (;;) {
        if (open == '{') {
            if (r->i >= r->n || r->s[r->i] != '"' || !rd_string(r)) {
                return false;
            }
            rd_ws(r);
            if (r->i >= r->n || r->s[r->i] != ':') {
                return false;
            }
            r->i++;
            rd_ws(r);
        }
        if (!rd_value(r)) {
            return false;
        }
        rd_ws(r);
        if (r->i >= r->n) {
            return false;
        }
        if (r->s[r->i] == ',') {
            r->i++;
            rd_ws(r);
            continue;
        }
        if (r->s[r->i] == (unsigned char)close) {
            r->i++;
            r->depth--;
            return true;
        }
        return false;
    }
}

static bool rd_value(rd *r)
{
    if (r->i >= r->n) {
        return false;
    }
    switch (r->s[r->i]) {
    case '{':
        return rd_container(r, '{', '}');
    case '[':
        return rd_container(r, '[', ']');
    case '"':
        return rd_string(r);
    case 't':
        return rd_lit(r, "true");
    case 'f':
        return rd_lit(r, "false");
    case 'n':
        return rd_lit(r, "null");
    default:
        return rd_number(r);
    }
}

static bool rd_document(const char *text, size_t n)
{
    rd r = {(const unsigned char *)text, n, 0, 0};
    rd_ws(&r);
    if (r.i >= n || (text[r.i] != '{' && text[r.i] != '[')) {
        return false;
    }
    if (!rd_value(&r)) {
        return false;
    }
    rd_ws(&r);
    return r.i == n;
}

static void test_reference_checker(void)
{
    const char *good = "{\"a\":[1,-0.5e3,true,null,\"\\u00e9\"]}";
    CHECK(rd_document(good, strlen(good)));
    CHECK(!rd_document("[01]", 4));
    CHECK(!rd_document("1", 1));
    CHECK(!rd_document("[\"\xed\xa0\x80\"]", 7));
}

static bool has_closer(const char *t)
{
    return strpbrk(t, "}]\"") != NULL;
}

/* Generate one document with random logits; returns its text (malloc'd). */
static char *generate_json(const st_vocab_view *v, const strata_sampler_params *p, int max_steps,
                           bool *done, bool *prefix_ok)
{
    strata_sampler *s = make(v, p);
    size_t cap = 4096;
    size_t len = 0;
    char *text = malloc(cap);
    text[0] = '\0';
    float *logits = malloc((size_t)v->n_vocab * sizeof(float));
    *done = false;
    *prefix_ok = true;
    st_json_state check;
    st_json_init(&check);
    for (int step = 0; step < max_steps; step++) {
        for (int i = 0; i < v->n_vocab; i++) {
            size_t bl;
            const char *b = v->bytes(v->ctx, i, &bl);
            logits[i] = rnd_logit(3.0f);
            /* the junk is what the model "wants" */
            if (bl >= 3 && (b[0] == 'S' || b[0] == ' ' || b[0] == '`')) {
                logits[i] += 4.0f;
            }
            if (step > 40 && has_closer(b)) {
                logits[i] += 0.25f * (float)(step - 40);
            }
        }
        strata_token t = strata_sampler_sample(s, logits);
        if (v->is_eog(v->ctx, t)) {
            *done = strata_sampler_done(s);
            break;
        }
        size_t bl;
        const char *b = v->bytes(v->ctx, t, &bl);
        if (!st_json_feed(&check, b, bl)) {
            *prefix_ok = false;
        }
        if (len + bl + 1 > cap) {
            cap = 2 * (len + bl + 1);
            text = realloc(text, cap);
        }
        memcpy(text + len, b, bl);
        len += bl;
        text[len] = '\0';
        strata_sampler_accept(s, t);
    }
    free(logits);
    strata_sampler_free(s);
    return text;
}

static void test_json_mode_fake(void)
{
    st_vocab_view v = fake_view(&json_vocab);
    int n_done = 0;
    for (int seed = 0; seed < 200; seed++) {
        strata_sampler_params p;
        strata_sampler_params_default(&p);
        p.json = true;
        p.seed = (uint64_t)seed;
        p.temperature = 0.7f + 0.01f * (float)(seed % 50);
        if (seed % 4 == 1) {
            p.top_k = 0; /* the full-scan path */
        } else if (seed % 4 == 2) {
            p.temperature = 0.0f; /* greedy */
        } else if (seed % 4 == 3) {
            p.top_k = 3;
            p.min_p = 0.0f;
        }
        lcg_state = 1000 + (uint64_t)seed;
        bool done;
        bool prefix_ok;
        char *text = generate_json(&v, &p, 400, &done, &prefix_ok);
        size_t n = strlen(text);
        CHECK_MSG(prefix_ok, "seed %d: invalid prefix: %s", seed, text);
        CHECK_MSG(done, "seed %d: not finished: %s", seed, text);
        if (done) {
            n_done++;
            CHECK_MSG(st_json_valid(text, n), "seed %d: %s", seed, text);
            CHECK_MSG(rd_document(text, n), "seed %d (reference): %s", seed, text);
        }
        if (seed < 3) {
            /* hand checks: starts with a container, brackets balance
             * outside strings, no junk from the biased tokens */
            const char *q = text;
            while (*q == ' ' || *q == '\n' || *q == '\t') {
                q++;
            }
            CHECK(*q == '{' || *q == '[');
            int depth = 0;
            bool in_str = false;
            bool esc = false;
            for (const char *c = q; *c; c++) {
                if (in_str) {
                    if (esc) {
                        esc = false;
                    } else if (*c == '\\') {
                        esc = true;
                    } else if (*c == '"') {
                        in_str = false;
                    }
                } else if (*c == '"') {
                    in_str = true;
                } else if (*c == '{' || *c == '[') {
                    depth++;
                } else if (*c == '}' || *c == ']') {
                    depth--;
                }
            }
            CHECK(depth == 0 && !in_str);
            CHECK(strstr(text, "\n\n\n") == NULL);
        }
        free(text);
    }
    CHECK(n_done == 200);
}

static void test_json_greedy_and_done(void)
{
    st_vocab_view v = fake_view(&json_vocab);
    strata_sampler_params p = plain_params();
    p.json = true;
    p.temperature = 0.0f;
    strata_sampler *s = make(&v, &p);
    int n = json_vocab.n;
    float *l = malloc((size_t)n * sizeof(float));
    /* everything prefers "Sure"; "[" is the best valid start */
    for (int i = 0; i < n; i++) {
        l[i] = 0.0f;
    }
    int sure = -1;
    int open_arr = -1;
    int close_arr = -1;
    for (int i = 0; i < n; i++) {
        if (strcmp(json_toks[i].text, "Sure") == 0) {
            sure = i;
        } else if (strcmp(json_toks[i].text, "[") == 0) {
            open_arr = i;
        } else if (strcmp(json_toks[i].text, "]") == 0) {
            close_arr = i;
        }
    }
    l[sure] = 10.0f;
    l[0] = 9.0f; /* EOG: not allowed before the value is complete */
    l[1] = 9.5f; /* control token: never in JSON mode */
    l[open_arr] = 1.0f;
    strata_token t = strata_sampler_sample(s, l);
    CHECK(t == open_arr);
    CHECK(l[sure] == -INFINITY && l[0] == -INFINITY && l[1] == -INFINITY);
    strata_sampler_accept(s, t);
    CHECK(!strata_sampler_done(s));
    for (int i = 0; i < n; i++) {
        l[i] = 0.0f;
    }
    l[close_arr] = 5.0f;
    t = strata_sampler_sample(s, l);
    CHECK(t == close_arr);
    strata_sampler_accept(s, t);
    CHECK(strata_sampler_done(s));
    /* now only EOG */
    for (int i = 0; i < n; i++) {
        l[i] = 1.0f;
    }
    l[0] = -5.0f;
    CHECK(strata_sampler_sample(s, l) == 0);
    strata_sampler_free(s);
    free(l);
}

/* ------------------------------------------------------ a big vocabulary -- */

typedef struct {
    char *buf;       /* all token texts, NUL-separated */
    size_t *off;     /* (n) */
    int n;
} big_vocab;

static const char *big_bytes(const void *ctx, strata_token t, size_t *len)
{
    const big_vocab *v = ctx;
    const char *s = v->buf + v->off[t];
    *len = strlen(s);
    return s;
}

static bool big_eog(const void *ctx, strata_token t)
{
    (void)ctx;
    return t == 2;
}

static void test_big_vocab(void)
{
    big_vocab bv;
    bv.n = 150000;
    bv.buf = malloc((size_t)bv.n * 8);
    bv.off = malloc((size_t)bv.n * sizeof(size_t));
    static const char alpha[] = "abcdefghijklmnop {}[]\":,0123456789-.\\ne";
    size_t pos = 0;
    lcg_state = 77;
    for (int i = 0; i < bv.n; i++) {
        bv.off[i] = pos;
        int len = i == 2 ? 0 : 1 + (int)(rnd() * 6);
        for (int k = 0; k < len; k++) {
            bv.buf[pos++] = alpha[(int)(rnd() * (sizeof(alpha) - 1))];
        }
        bv.buf[pos++] = '\0';
    }
    st_vocab_view v = {&bv, big_bytes, big_eog, bv.n};
    float *l = malloc((size_t)bv.n * sizeof(float));
    double t_plain = 0.0;
    double t_json = 0.0;
    for (int mode = 0; mode < 2; mode++) {
        strata_sampler_params p;
        strata_sampler_params_default(&p);
        p.seed = 3;
        p.json = mode == 1;
        strata_sampler *s = make(&v, &p);
        st_json_state check;
        st_json_init(&check);
        bool ok = true;
        for (int step = 0; step < 30; step++) {
            for (int i = 0; i < bv.n; i++) {
                l[i] = rnd_logit(4.0f);
            }
            double t0 = st_now_ms();
            strata_token t = strata_sampler_sample(s, l);
            double dt = st_now_ms() - t0;
            if (mode == 0) {
                t_plain += dt;
            } else {
                t_json += dt;
                size_t bl;
                const char *b = big_bytes(&bv, t, &bl);
                if (t == 2) {
                    break;
                }
                ok = ok && st_json_feed(&check, b, bl);
            }
            strata_sampler_accept(s, t);
        }
        CHECK(ok);
        strata_sampler_free(s);
    }
    printf("150k vocab: %.3f ms/token plain, %.3f ms/token json (defaults)\n", t_plain / 30,
           t_json / 30);
    free(l);
    free(bv.buf);
    free(bv.off);
}

/* ---------------------------------------------- the real tokenizer -- */

static void test_stories_tokenizer(void)
{
    const char *path = "../shared/models/stories260K.gguf";
    gguf_file *f = NULL;
    strata_error err = {0};
    if (gguf_open(path, true, &f, &err) != STRATA_OK) {
        printf("skipping the tokenizer test: %s\n", err.msg);
        return;
    }
    st_tokenizer *tok = NULL;
    CHECK_MSG(st_tokenizer_load(f, &tok, &err) == STRATA_OK, "%s", err.msg);
    gguf_close(f);
    if (tok == NULL) {
        return;
    }
    st_vocab_view v;
    st_vocab_view_from_tokenizer(tok, &v);
    CHECK(v.n_vocab == st_tokenizer_n_vocab(tok) && v.n_vocab > 0);
    CHECK(st_token_is_eog(tok, st_tokenizer_eos(tok)));
    int n_done = 0;
    for (int seed = 0; seed < 20; seed++) {
        strata_sampler_params p;
        strata_sampler_params_default(&p);
        p.json = true;
        p.seed = (uint64_t)seed;
        lcg_state = 500 + (uint64_t)seed;
        bool done;
        bool prefix_ok;
        char *text = generate_json(&v, &p, 400, &done, &prefix_ok);
        CHECK_MSG(prefix_ok, "seed %d: %s", seed, text);
        if (done) {
            n_done++;
            CHECK_MSG(st_json_valid(text, strlen(text)), "seed %d: %s", seed, text);
            CHECK_MSG(rd_document(text, strlen(text)), "seed %d: %s", seed, text);
        }
        free(text);
    }
    printf("stories260K vocab: %d/20 JSON documents finished in 400 tokens\n", n_done);
    CHECK(n_done >= 15);
    st_tokenizer_free(tok);
}

/* The public constructor over a loaded model. */
static void test_model_sampler(void)
{
    strata_model_params mp;
    strata_model_params_default(&mp);
    strata_model *m = NULL;
    strata_error err = {0};
    strata_err rc = strata_model_load("../shared/models/stories260K.gguf", &mp, &m, &err);
    CHECK_MSG(rc == STRATA_OK, "%s", err.msg);
    if (rc != STRATA_OK) {
        return;
    }
    strata_model_info info;
    strata_model_get_info(m, &info);
    strata_sampler_params p;
    strata_sampler_params_default(&p);
    p.seed = 11;
    p.json = true;
    strata_sampler *s = NULL;
    CHECK(strata_sampler_new(m, &p, &s, &err) == STRATA_OK);
    float *l = malloc((size_t)info.n_vocab * sizeof(float));
    lcg_state = 8;
    for (int i = 0; i < info.n_vocab; i++) {
        l[i] = rnd_logit(3.0f);
    }
    strata_token t = strata_sampler_sample(s, l);
    CHECK(t >= 0 && t < info.n_vocab);
    char piece[64];
    int n = strata_token_to_piece(m, t, piece, sizeof(piece), false);
    CHECK(n > 0 && n < 64);
    /* the first JSON token opens a container (after optional spaces) */
    int k = 0;
    while (k < n && piece[k] == ' ') {
        k++;
    }
    CHECK(k < n && (piece[k] == '{' || piece[k] == '['));
    free(l);
    strata_sampler_free(s);
    strata_model_free(m);
}

int main(void)
{
    test_defaults();
    test_greedy();
    test_determinism();
    test_distribution();
    test_filters();
    test_against_reference();
    test_penalties();
    test_reference_checker();
    test_json_mode_fake();
    test_json_greedy_and_done();
    test_big_vocab();
    test_stories_tokenizer();
    test_model_sampler();
    TEST_MAIN_END();
}
