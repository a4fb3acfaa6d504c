/* Layer-major batching: several sequences in one step give the same logits
 * as running each alone, and each weight part is acquired once per step. */
#include "batch.h"
#include "test.h"

#define MODEL "../shared/models/stories260K.gguf"
#define NV 512

typedef struct {
    st_part_source inner;
    int acquires[64];
    int releases[64];
} counting_source;

static strata_err count_acquire(void *user, int part, st_part_view *view, strata_error *err)
{
    counting_source *c = user;
    c->acquires[part + 1]++;
    return c->inner.acquire(c->inner.user, part, view, err);
}

static void count_release(void *user, int part)
{
    counting_source *c = user;
    c->releases[part + 1]++;
    c->inner.release(c->inner.user, part);
}

static strata_token argmax(const float *x)
{
    int best = 0;
    for (int i = 1; i < NV; i++) {
        if (x[i] > x[best]) {
            best = i;
        }
    }
    return best;
}

int main(void)
{
    strata_error err = {0};
    strata_model *m = NULL;
    if (strata_model_load(MODEL, NULL, &m, &err) != STRATA_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    static const char *prompts[3] = {"Once upon a time", "The cat sat", "Lily and Tom went to the park and"};
    strata_token toks[3][32];
    size_t n[3];
    for (int s = 0; s < 3; s++) {
        CHECK(strata_tokenize(m, prompts[s], strlen(prompts[s]), true, false, toks[s], 32, &n[s], &err) == STRATA_OK);
    }

    /* reference: each sequence alone through its own context */
    float ref[3][NV];
    strata_ctx *alone[3];
    for (int s = 0; s < 3; s++) {
        strata_ctx_params cp;
        strata_ctx_params_default(&cp);
        cp.n_ctx = 128;
        cp.kv_f32 = true;
        cp.n_threads = 2;
        CHECK(strata_ctx_new(m, &cp, &alone[s], &err) == STRATA_OK);
        CHECK(strata_eval(alone[s], toks[s], n[s], ref[s], &err) == STRATA_OK);
    }

    /* batched: three KV-only contexts sharing one runner */
    st_pool *pool = NULL;
    st_runner *runner = NULL;
    CHECK(st_pool_new(2, &pool, &err) == STRATA_OK);
    CHECK(st_runner_new(m, 64, 128, pool, &runner, &err) == STRATA_OK);
    strata_ctx *seq[3];
    float got[3][NV];
    st_batch_seq batch[3];
    for (int s = 0; s < 3; s++) {
        CHECK(st_ctx_new_kv(m, 128, true, &seq[s], &err) == STRATA_OK);
        batch[s] = (st_batch_seq){.ctx = seq[s], .toks = toks[s], .n = (int)n[s], .logits = got[s]};
    }
    counting_source cs = {0};
    st_part_source_resident(m, &cs.inner);
    st_part_source src = {.user = &cs, .acquire = count_acquire, .release = count_release};
    CHECK(st_forward_batch(runner, &src, batch, 3, &err) == STRATA_OK);
    for (int p = 0; p < 5 + 2; p++) {
        CHECK_MSG(cs.acquires[p] == 1 && cs.releases[p] == 1, "part %d acquired %d times", p - 1, cs.acquires[p]);
    }
    for (int s = 0; s < 3; s++) {
        double maxd = 0;
        for (int i = 0; i < NV; i++) {
            maxd = fmax(maxd, fabs(got[s][i] - ref[s][i]));
        }
        CHECK_MSG(maxd < 1e-4, "prefill seq %d: max logit diff %g", s, maxd);
        CHECK(strata_ctx_n_past(seq[s]) == (int)n[s]);
    }

    /* 24 decode steps: batched greedy == alone greedy, token for token */
    strata_token next[3];
    for (int s = 0; s < 3; s++) {
        next[s] = argmax(got[s]);
        CHECK(next[s] == argmax(ref[s]));
    }
    int mismatches = 0;
    for (int step = 0; step < 24; step++) {
        for (int s = 0; s < 3; s++) {
            batch[s] = (st_batch_seq){.ctx = seq[s], .toks = &next[s], .n = 1, .logits = got[s]};
            CHECK(strata_eval(alone[s], &next[s], 1, ref[s], &err) == STRATA_OK);
        }
        CHECK(st_forward_batch(runner, &m->source, batch, 3, &err) == STRATA_OK);
        for (int s = 0; s < 3; s++) {
            strata_token a = argmax(got[s]), b = argmax(ref[s]);
            mismatches += a != b;
            next[s] = a;
        }
    }
    CHECK_MSG(mismatches == 0, "%d greedy mismatches between batched and alone", mismatches);

    /* all_logits and embeddings for a scoring-style request */
    float *all = malloc(sizeof(float) * NV * n[0]);
    float *embd = malloc(sizeof(float) * 64 * n[0]);
    strata_ctx_truncate(seq[0], 0);
    batch[0] = (st_batch_seq){.ctx = seq[0], .toks = toks[0], .n = (int)n[0], .logits = all, .all_logits = true, .embd = embd};
    CHECK(st_forward_batch(runner, &m->source, batch, 1, &err) == STRATA_OK);
    double sumsq = 0;
    for (int i = 0; i < 64; i++) {
        sumsq += embd[(n[0] - 1) * 64 + i] * embd[(n[0] - 1) * 64 + i];
    }
    CHECK(sumsq > 0 && isfinite(sumsq));
    float ref0[NV];
    strata_ctx_truncate(alone[0], 0);
    CHECK(strata_eval(alone[0], toks[0], n[0], ref0, &err) == STRATA_OK);
    double maxd = 0;
    for (int i = 0; i < NV; i++) {
        maxd = fmax(maxd, fabs(all[(n[0] - 1) * NV + i] - ref0[i]));
    }
    CHECK_MSG(maxd < 1e-4, "all_logits last row differs by %g", maxd);
    free(all);
    free(embd);

    /* errors before anything runs */
    batch[0] = (st_batch_seq){.ctx = seq[1], .toks = toks[0], .n = 1};
    batch[1] = (st_batch_seq){.ctx = seq[1], .toks = toks[1], .n = 1};
    CHECK(st_forward_batch(runner, &m->source, batch, 2, &err) == STRATA_ERR_ARG);
    strata_token many[65] = {0};
    batch[0] = (st_batch_seq){.ctx = seq[2], .toks = many, .n = 65};
    CHECK(st_forward_batch(runner, &m->source, batch, 1, &err) == STRATA_ERR_LIMIT);

    for (int s = 0; s < 3; s++) {
        strata_ctx_free(alone[s]);
        strata_ctx_free(seq[s]);
    }
    st_runner_free(runner);
    st_pool_free(pool);
    strata_model_free(m);
    TEST_MAIN_END();
}
