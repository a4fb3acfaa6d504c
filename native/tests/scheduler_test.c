/* The layer-wise batching scheduler on stories260K: batched results equal
 * one-at-a-time results bit for bit (logits, greedy tokens), prefix reuse,
 * score/embed ops, cancel and limits; plus the prefix-copy and score helpers. */
#include "prefix_cache.h"
#include "scheduler.h"
#include "score.h"
#include "test.h"

#define MODEL "../shared/models/stories260K.gguf"
#define N_CTX 256

static const char *PROMPTS[] = {
    "Once upon a time",
    "Once upon a time, there was a little girl named Lily.",
    "The cat sat on the mat and",
    "Tom and his dog went to the park. They",
    "One day",
    "Once upon a time, there was a little girl named Lily. She liked to play",
};
#define N_PROMPTS ((int)(sizeof(PROMPTS) / sizeof(PROMPTS[0])))

typedef struct {
    strata_token toks[128];
    int n;
} prompt;

static void tokenize(strata_model *m, const char *text, prompt *p)
{
    size_t n = 0;
    strata_err rc = strata_tokenize(m, text, strlen(text), true, false, p->toks, 128, &n, NULL);
    CHECK(rc == STRATA_OK);
    p->n = (int)n;
}

static strata_ctx *new_ctx(strata_model *m)
{
    strata_ctx_params cp;
    strata_ctx_params_default(&cp);
    cp.n_ctx = N_CTX;
    cp.n_threads = 1;
    strata_ctx *ctx = NULL;
    CHECK(strata_ctx_new(m, &cp, &ctx, NULL) == STRATA_OK);
    return ctx;
}

static st_sched *new_sched(strata_model *m, int max_batch, int step_tokens)
{
    st_sched_params sp;
    st_sched_params_default(&sp);
    sp.max_batch = max_batch;
    sp.step_tokens = step_tokens;
    sp.n_ctx = N_CTX;
    sp.n_threads = 1;
    st_sched *s = NULL;
    strata_error e = {0};
    strata_err rc = st_sched_new(m, &sp, &s, &e);
    CHECK_MSG(rc == STRATA_OK, "%s", e.msg);
    return s;
}

static void run_all(st_sched *s)
{
    int pending = 1;
    int guard = 0;
    while (pending > 0 && guard++ < 100000) {
        strata_error e = {0};
        CHECK_MSG(st_sched_step(s, &pending, &e) == STRATA_OK, "%s", e.msg);
    }
}

/* Prompt logits: the scheduler (all prompts in one batch, small chunks) vs
 * strata_eval on a fresh context per prompt. */
static void test_logits(strata_model *m, prompt *ps)
{
    const int nv = m->hp.n_vocab;
    st_sched *s = new_sched(m, 8, 7); /* 7-token steps: prompts are split and interleaved */
    st_req *reqs[N_PROMPTS];
    strata_token opt = 5;
    const strata_token *opts[1] = {&opt};
    int opt_len[1] = {1};
    for (int i = 0; i < N_PROMPTS; i++) {
        st_req_desc d = {.kind = ST_REQ_SCORE, .prompt = ps[i].toks, .n_prompt = ps[i].n, .options = opts,
                         .option_len = opt_len, .n_options = 1, .keep_logits = true};
        CHECK(st_sched_submit(s, &d, &reqs[i], NULL) == STRATA_OK);
    }
    run_all(s);
    st_sched_stats st;
    st_sched_get_stats(s, &st);
    CHECK(st.max_seqs_in_step >= 2);
    float *ref = malloc((size_t)nv * sizeof(float));
    for (int i = 0; i < N_PROMPTS; i++) {
        strata_ctx *ctx = new_ctx(m);
        CHECK(strata_eval(ctx, ps[i].toks, (size_t)ps[i].n, ref, NULL) == STRATA_OK);
        const st_req_result *r = st_req_get_result(reqs[i]);
        CHECK(st_req_done(reqs[i]));
        CHECK_MSG(r->rc == STRATA_OK, "%s", r->err.msg);
        CHECK(r->logits != NULL);
        if (r->logits != NULL) {
            CHECK_MSG(memcmp(r->logits, ref, (size_t)nv * sizeof(float)) == 0, "prompt %d logits differ", i);
        }
        strata_ctx_free(ctx);
        st_req_free(reqs[i]);
    }
    free(ref);
    st_sched_free(s);
}

typedef struct {
    char text[4096];
    size_t len;
    int done_calls;
} collect;

static bool on_piece(st_req *r, const char *piece, size_t len, void *user)
{
    collect *c = user;
    if (c->len + len < sizeof(c->text)) {
        memcpy(c->text + c->len, piece, len);
        c->len += len;
        c->text[c->len] = '\0';
    }
    return true;
}

static void on_done(st_req *r, void *user)
{
    collect *c = user;
    c->done_calls++;
}

/* Greedy generation: every prompt at once through the scheduler vs
 * strata_generate alone. */
static void test_generate(strata_model *m, prompt *ps)
{
    st_sched *s = new_sched(m, 4, 16); /* fewer slots than prompts: some wait and join later */
    st_req *reqs[N_PROMPTS];
    collect col[N_PROMPTS];
    memset(col, 0, sizeof(col));
    const char *stops[1] = {"park"};
    for (int i = 0; i < N_PROMPTS; i++) {
        st_req_desc d = {.kind = ST_REQ_GENERATE, .prompt = ps[i].toks, .n_prompt = ps[i].n, .max_tokens = 40,
                         .on_piece = on_piece, .on_done = on_done, .user = &col[i]};
        strata_sampler_params_default(&d.sampling);
        d.sampling.temperature = 0;
        if (i == 3) {
            d.stop = stops;
            d.n_stop = 1;
        }
        CHECK(st_sched_submit(s, &d, &reqs[i], NULL) == STRATA_OK);
    }
    run_all(s);
    for (int i = 0; i < N_PROMPTS; i++) {
        strata_ctx *ctx = new_ctx(m);
        strata_generate_params gp;
        strata_generate_params_default(&gp);
        gp.sampling.temperature = 0;
        gp.max_tokens = 40;
        if (i == 3) {
            gp.stop = stops;
            gp.n_stop = 1;
        }
        strata_generate_result ref;
        CHECK(strata_generate(ctx, ps[i].toks, (size_t)ps[i].n, &gp, &ref, NULL) == STRATA_OK);
        const st_req_result *r = st_req_get_result(reqs[i]);
        CHECK(col[i].done_calls == 1);
        CHECK_MSG(r->rc == STRATA_OK, "%s", r->err.msg);
        CHECK(r->text != NULL && ref.text != NULL);
        if (r->text != NULL && ref.text != NULL) {
            CHECK_MSG(strcmp(r->text, ref.text) == 0, "prompt %d: batched '%s' vs alone '%s'", i, r->text, ref.text);
            CHECK_MSG(strcmp(col[i].text, ref.text) == 0, "prompt %d: streamed '%s'", i, col[i].text);
        }
        CHECK(r->n_gen_tokens == ref.n_gen_tokens);
        CHECK(r->stop == ref.stop);
        strata_generate_result_free(&ref);
        strata_ctx_free(ctx);
        st_req_free(reqs[i]);
    }
    st_sched_free(s);
}

/* A prompt that extends a finished one reuses its KV prefix, and one that
 * shares a running sequence's prefix gets a copy; logits stay identical. */
static void test_prefix(strata_model *m, prompt *ps)
{
    const int nv = m->hp.n_vocab;
    st_sched *s = new_sched(m, 8, 64);
    strata_token opt = 5;
    const strata_token *opts[1] = {&opt};
    int opt_len[1] = {1};
    st_req_desc d = {.kind = ST_REQ_SCORE, .options = opts, .option_len = opt_len, .n_options = 1,
                     .keep_logits = true};
    /* 1 then 5 (which starts with 1's tokens) */
    st_req *a = NULL, *b = NULL;
    d.prompt = ps[1].toks;
    d.n_prompt = ps[1].n;
    CHECK(st_sched_submit(s, &d, &a, NULL) == STRATA_OK);
    run_all(s);
    d.prompt = ps[5].toks;
    d.n_prompt = ps[5].n;
    CHECK(st_sched_submit(s, &d, &b, NULL) == STRATA_OK);
    run_all(s);
    const st_req_result *rb = st_req_get_result(b);
    CHECK_MSG(rb->n_prefix_reused == (size_t)ps[1].n, "reused %zu of %d", rb->n_prefix_reused, ps[1].n);
    float *ref = malloc((size_t)nv * sizeof(float));
    strata_ctx *ctx = new_ctx(m);
    CHECK(strata_eval(ctx, ps[5].toks, (size_t)ps[5].n, ref, NULL) == STRATA_OK);
    CHECK(rb->logits != NULL && memcmp(rb->logits, ref, (size_t)nv * sizeof(float)) == 0);
    strata_ctx_free(ctx);
    st_req_free(a);
    st_req_free(b);

    /* the KV copy helper itself */
    strata_ctx *c1 = new_ctx(m), *c2 = new_ctx(m);
    CHECK(strata_eval(c1, ps[5].toks, (size_t)ps[5].n, NULL, NULL) == STRATA_OK);
    CHECK(st_prefix_common(c1, ps[1].toks, ps[1].n) == ps[1].n);
    CHECK(st_kv_copy_prefix(c2, c1, ps[5].n - 1, NULL) == STRATA_OK);
    CHECK(strata_ctx_n_past(c2) == ps[5].n - 1);
    float *out = malloc((size_t)nv * sizeof(float));
    CHECK(strata_eval(c2, ps[5].toks + ps[5].n - 1, 1, out, NULL) == STRATA_OK);
    CHECK(memcmp(out, ref, (size_t)nv * sizeof(float)) == 0);
    CHECK(st_kv_copy_prefix(c2, c1, ps[5].n + 1, NULL) == STRATA_ERR_ARG);
    CHECK(st_kv_copy_prefix(c1, c1, 1, NULL) == STRATA_ERR_ARG);
    strata_ctx_free(c1);
    strata_ctx_free(c2);
    free(out);
    free(ref);
    st_sched_free(s);
}

/* Options of one and several tokens: log-probs as a chain of strata_eval. */
static void test_score(strata_model *m, prompt *ps)
{
    const int nv = m->hp.n_vocab;
    st_sched *s = new_sched(m, 8, 32);
    /* o4 feeds what o3 feeds, o5 what o2 feeds: they share children */
    strata_token o1[1] = {100}, o2[3] = {200, 31, 7}, o3[2] = {100, 9}, o4[2] = {100, 11}, o5[3] = {200, 31, 8};
    const strata_token *opts[5] = {o1, o2, o3, o4, o5};
    int lens[5] = {1, 3, 2, 2, 3};
    st_req *r = NULL;
    st_req_desc d = {.kind = ST_REQ_SCORE, .prompt = ps[2].toks, .n_prompt = ps[2].n, .options = opts,
                     .option_len = lens, .n_options = 5};
    CHECK(st_sched_submit(s, &d, &r, NULL) == STRATA_OK);
    /* a second request in the same steps */
    st_req *r2 = NULL;
    d.prompt = ps[0].toks;
    d.n_prompt = ps[0].n;
    CHECK(st_sched_submit(s, &d, &r2, NULL) == STRATA_OK);
    run_all(s);
    const st_req_result *res = st_req_get_result(r);
    CHECK_MSG(res->rc == STRATA_OK, "%s", res->err.msg);
    float *lg = malloc((size_t)nv * sizeof(float));
    double psum = 0;
    for (int i = 0; i < 5; i++) {
        strata_ctx *ctx = new_ctx(m);
        CHECK(strata_eval(ctx, ps[2].toks, (size_t)ps[2].n, lg, NULL) == STRATA_OK);
        double lp = st_log_prob(lg, nv, opts[i][0], st_logsumexp(lg, nv));
        for (int j = 1; j < lens[i]; j++) {
            CHECK(strata_eval(ctx, &opts[i][j - 1], 1, lg, NULL) == STRATA_OK);
            lp += st_log_prob(lg, nv, opts[i][j], st_logsumexp(lg, nv));
        }
        CHECK_NEAR(res->logprob[i], lp, 1e-9);
        psum += res->prob[i];
        strata_ctx_free(ctx);
    }
    CHECK_NEAR(psum, 1.0, 1e-12);
    CHECK(res->prob[0] > res->prob[2]); /* option 3 extends option 1 */
    CHECK(st_req_get_result(r2)->rc == STRATA_OK);
    free(lg);
    st_req_free(r);
    st_req_free(r2);
    st_sched_free(s);
}

static void test_embed(strata_model *m, prompt *ps)
{
    st_sched *s = new_sched(m, 8, 16);
    st_req *a = NULL, *b = NULL, *c = NULL;
    st_req_desc d = {.kind = ST_REQ_EMBED, .prompt = ps[1].toks, .n_prompt = ps[1].n};
    CHECK(st_sched_submit(s, &d, &a, NULL) == STRATA_OK);
    d.prompt = ps[2].toks;
    d.n_prompt = ps[2].n;
    CHECK(st_sched_submit(s, &d, &b, NULL) == STRATA_OK);
    run_all(s);
    d.prompt = ps[1].toks;
    d.n_prompt = ps[1].n;
    CHECK(st_sched_submit(s, &d, &c, NULL) == STRATA_OK); /* alone, after a cache exists */
    run_all(s);
    const st_req_result *ra = st_req_get_result(a), *rc = st_req_get_result(c);
    CHECK_MSG(ra->rc == STRATA_OK, "%s", ra->err.msg);
    if (ra->rc == STRATA_OK && rc->rc == STRATA_OK) {
        double n2 = 0;
        for (int i = 0; i < ra->n_embd; i++) {
            n2 += (double)ra->embd[i] * ra->embd[i];
        }
        CHECK(ra->n_embd == m->hp.n_embd);
        CHECK_NEAR(n2, 1.0, 1e-5);
        CHECK(memcmp(ra->embd, rc->embd, (size_t)ra->n_embd * sizeof(float)) == 0);
    }
    st_req_free(a);
    st_req_free(b);
    st_req_free(c);
    st_sched_free(s);
}

/* Submits a score request (one option, token 5) that keeps its prompt's
 * last logits. */
static void submit_score(st_sched *s, const prompt *p, st_req **out)
{
    const strata_token opt = 5;
    const strata_token *opts[1] = {&opt};
    int opt_len[1] = {1};
    st_req_desc d = {.kind = ST_REQ_SCORE, .prompt = p->toks, .n_prompt = p->n, .options = opts,
                     .option_len = opt_len, .n_options = 1, .keep_logits = true};
    CHECK(st_sched_submit(s, &d, out, NULL) == STRATA_OK);
}

/* Requests that arrive together compute their shared prefix once. */
static void test_wave_prefix(strata_model *m)
{
    const int nv = m->hp.n_vocab;
    const char *texts[3] = {"Once upon a time, there was a little girl named Lily. She liked to play with her dog",
                            "Once upon a time, there was a little girl named Lily. She liked to eat cake",
                            "Once upon a time, there was a little girl named Lily. She was sad"};
    prompt ps[3];
    st_sched *s = new_sched(m, 8, 64);
    st_req *reqs[3];
    for (int i = 0; i < 3; i++) {
        tokenize(m, texts[i], &ps[i]);
        submit_score(s, &ps[i], &reqs[i]);
    }
    run_all(s);
    st_sched_stats st;
    st_sched_get_stats(s, &st);
    float *ref = malloc((size_t)nv * sizeof(float));
    size_t reused = 0;
    for (int i = 0; i < 3; i++) {
        strata_ctx *ctx = new_ctx(m);
        CHECK(strata_eval(ctx, ps[i].toks, (size_t)ps[i].n, ref, NULL) == STRATA_OK);
        const st_req_result *r = st_req_get_result(reqs[i]);
        CHECK(r->rc == STRATA_OK && r->logits != NULL);
        if (r->logits != NULL) {
            CHECK_MSG(memcmp(r->logits, ref, (size_t)nv * sizeof(float)) == 0, "wave prompt %d logits differ", i);
        }
        reused += r->n_prefix_reused;
        strata_ctx_free(ctx);
        st_req_free(reqs[i]);
    }
    CHECK_MSG(reused >= 2 * 14, "the later requests reused %zu prefix tokens", reused);
    CHECK(st.prefix_tokens >= reused);
    free(ref);
    st_sched_free(s);
}

/* A few shared leading tokens are not worth a step: two prompts that share
 * a short start and then differ for longer run in the same first step (no
 * waiting); the results still match one-at-a-time. */
static void test_short_shared_prefix(strata_model *m)
{
    const char *texts[2] = {"Once upon a time, the big cat ran far away into the green forest to play",
                            "Once upon a sunny day Tom found a shiny red ball under the old tree"};
    prompt ps[2];
    st_sched *s = new_sched(m, 8, 256);
    st_req *reqs[2];
    for (int i = 0; i < 2; i++) {
        tokenize(m, texts[i], &ps[i]);
    }
    int c = 0;
    while (c < ps[0].n && c < ps[1].n && ps[0].toks[c] == ps[1].toks[c]) {
        c++;
    }
    CHECK_MSG(c >= 4 && 2 * c < ps[1].n, "shared %d of %d tokens: not the case under test", c, ps[1].n);
    for (int i = 0; i < 2; i++) {
        submit_score(s, &ps[i], &reqs[i]);
    }
    int pending = 0;
    CHECK(st_sched_step(s, &pending, NULL) == STRATA_OK);
    st_sched_stats st;
    st_sched_get_stats(s, &st);
    CHECK_MSG(st.max_seqs_in_step == 2, "the first step ran %d sequences: one waited for %d shared tokens",
              st.max_seqs_in_step, c);
    run_all(s);
    float *ref = malloc((size_t)m->hp.n_vocab * sizeof(float));
    for (int i = 0; i < 2; i++) {
        strata_ctx *ctx = new_ctx(m);
        CHECK(strata_eval(ctx, ps[i].toks, (size_t)ps[i].n, ref, NULL) == STRATA_OK);
        const st_req_result *r = st_req_get_result(reqs[i]);
        CHECK(r->rc == STRATA_OK && r->logits != NULL &&
              memcmp(r->logits, ref, (size_t)m->hp.n_vocab * sizeof(float)) == 0);
        strata_ctx_free(ctx);
        st_req_free(reqs[i]);
    }
    free(ref);
    st_sched_free(s);
}

static void test_cancel_limits(strata_model *m, prompt *ps)
{
    st_sched *s = new_sched(m, 1, 16);
    volatile int cancel = 0;
    st_req *g = NULL, *w = NULL;
    st_req_desc d = {.kind = ST_REQ_GENERATE, .prompt = ps[0].toks, .n_prompt = ps[0].n, .max_tokens = 100,
                     .cancel = &cancel};
    strata_sampler_params_default(&d.sampling);
    CHECK(st_sched_submit(s, &d, &g, NULL) == STRATA_OK);
    d.kind = ST_REQ_SCORE;
    strata_token o = 1;
    const strata_token *opts[1] = {&o};
    int len = 1;
    d.options = opts;
    d.option_len = &len;
    d.n_options = 1;
    CHECK(st_sched_submit(s, &d, &w, NULL) == STRATA_OK); /* waits: max_batch 1 */
    int pending = 0;
    CHECK(st_sched_step(s, &pending, NULL) == STRATA_OK);
    CHECK(st_sched_step(s, &pending, NULL) == STRATA_OK);
    CHECK(pending == 2);
    cancel = 1;
    run_all(s);
    CHECK(st_req_done(g) && st_req_get_result(g)->rc == STRATA_OK);
    CHECK(st_req_get_result(g)->stop == STRATA_STOP_CANCELLED);
    CHECK(st_req_done(w) && st_req_get_result(w)->rc == STRATA_ERR_CANCELLED);
    st_req_free(g);
    st_req_free(w);

    /* deadline in the past */
    st_req *t = NULL;
    d.cancel = NULL;
    d.deadline_ms = st_now_ms() - 1;
    CHECK(st_sched_submit(s, &d, &t, NULL) == STRATA_OK);
    run_all(s);
    CHECK(st_req_get_result(t)->rc == STRATA_ERR_LIMIT);
    st_req_free(t);

    /* limits and bad arguments are refused at submit */
    strata_token big[N_CTX + 1];
    memset(big, 0, sizeof(big));
    d.deadline_ms = 0;
    d.prompt = big;
    d.n_prompt = N_CTX + 1;
    CHECK(st_sched_submit(s, &d, &t, NULL) == STRATA_ERR_LIMIT);
    d.n_prompt = 0;
    CHECK(st_sched_submit(s, &d, &t, NULL) == STRATA_ERR_ARG);
    strata_token bad = 1 << 20;
    d.prompt = &bad;
    d.n_prompt = 1;
    CHECK(st_sched_submit(s, &d, &t, NULL) == STRATA_ERR_ARG);
    d.prompt = ps[0].toks;
    d.n_prompt = ps[0].n;
    d.n_options = 0;
    CHECK(st_sched_submit(s, &d, &t, NULL) == STRATA_ERR_ARG);

    /* freeing with work left finishes it as cancelled */
    collect col = {0};
    d.kind = ST_REQ_GENERATE;
    d.on_done = on_done;
    d.user = &col;
    st_req *left = NULL;
    CHECK(st_sched_submit(s, &d, &left, NULL) == STRATA_OK);
    st_sched_free(s);
    CHECK(col.done_calls == 1);
    CHECK(st_req_get_result(left)->rc == STRATA_ERR_CANCELLED);
    st_req_free(left);
}

static void test_score_math(void)
{
    float lg[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    double lse = st_logsumexp(lg, 4);
    double s = 0;
    for (int i = 0; i < 4; i++) {
        s += exp(st_log_prob(lg, 4, i, lse));
    }
    CHECK_NEAR(s, 1.0, 1e-12);
    CHECK(isinf(st_log_prob(lg, 4, 9, lse)));
    double lp[2] = {log(0.2), log(0.6)}, p[2];
    st_options_normalize(lp, 2, p);
    CHECK_NEAR(p[0], 0.25, 1e-12);
    CHECK_NEAR(p[1], 0.75, 1e-12);
    float rows[4] = {3, 0, 1, 0}, out[2];
    st_embed_pool_mean(rows, 2, 2, out);
    CHECK_NEAR(out[0], 1.0, 1e-7);
    CHECK_NEAR(out[1], 0.0, 1e-7);
}

int main(void)
{
    test_score_math();
    strata_model_params mp;
    strata_model_params_default(&mp);
    mp.n_threads = 1;
    strata_model *m = NULL;
    strata_error e = {0};
    if (strata_model_load(MODEL, &mp, &m, &e) != STRATA_OK) {
        fprintf(stderr, "cannot load %s: %s\n", MODEL, e.msg);
        return 1;
    }
    prompt ps[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) {
        tokenize(m, PROMPTS[i], &ps[i]);
    }
    test_logits(m, ps);
    test_generate(m, ps);
    test_prefix(m, ps);
    test_score(m, ps);
    test_embed(m, ps);
    test_wave_prefix(m);
    test_short_shared_prefix(m);
    test_cancel_limits(m, ps);
    strata_model_free(m);
    TEST_MAIN_END();
}
