/* Forward pass on the real stories260K model: greedy decoding must follow
 * llama.cpp token for token; context limits and bad tokens are errors. */
#include "forward.h"
#include "test.h"

#define MODEL "../shared/models/stories260K.gguf"

/* llama.cpp (node-llama-cpp 3.22.1, F32 KV cache) greedy continuation of
 * BOS + "Once upon a time": ", there was a little girl named Lily. She loved
 * to play outside in the park. One day, she saw a big, red ball. ..." */
static const strata_token expected[48] = {
    432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267, 337,
    410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432, 358, 394,
    261, 370, 432, 352, 266, 268, 388, 426, 338, 391, 266, 267, 337, 335, 312, 432};

static strata_token argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++) {
        if (x[i] > x[best]) {
            best = i;
        }
    }
    return best;
}

static void greedy_matches_llama_cpp(strata_model *m, bool kv_f32, int n_threads, int n_batch)
{
    strata_error err = {0};
    strata_ctx_params cp;
    strata_ctx_params_default(&cp);
    cp.n_ctx = 128;
    cp.kv_f32 = kv_f32;
    cp.n_threads = n_threads;
    cp.n_batch = n_batch;
    strata_ctx *ctx = NULL;
    CHECK(strata_ctx_new(m, &cp, &ctx, &err) == STRATA_OK);
    if (ctx == NULL) {
        return;
    }
    strata_token prompt[16];
    size_t n = 0;
    CHECK(strata_tokenize(m, "Once upon a time", 16, true, false, prompt, 16, &n, &err) == STRATA_OK);
    CHECK(n == 5 && prompt[0] == 1 && prompt[1] == 403 && prompt[4] == 378);
    float *logits = malloc(sizeof(float) * 512);
    CHECK(strata_eval(ctx, prompt, n, logits, &err) == STRATA_OK);
    int matched = 0;
    for (int i = 0; i < 48; i++) {
        strata_token t = argmax(logits, 512);
        if (t != expected[i]) {
            fprintf(stderr, "kv_f32=%d threads=%d batch=%d: token %d is %d, llama.cpp has %d\n", kv_f32, n_threads,
                    n_batch, i, t, expected[i]);
            break;
        }
        matched++;
        CHECK(strata_eval(ctx, &t, 1, logits, &err) == STRATA_OK);
    }
    CHECK_MSG(matched == 48, "matched %d of 48 tokens", matched);
    CHECK(strata_ctx_n_past(ctx) == 5 + 48);
    free(logits);
    strata_ctx_free(ctx);
}

static void limits_are_errors(strata_model *m)
{
    strata_error err = {0};
    strata_ctx_params cp;
    strata_ctx_params_default(&cp);
    cp.n_ctx = 8;
    strata_ctx *ctx = NULL;
    CHECK(strata_ctx_new(m, &cp, &ctx, &err) == STRATA_OK);
    strata_token toks[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    CHECK(strata_eval(ctx, toks, 9, NULL, &err) == STRATA_ERR_LIMIT);
    CHECK(strstr(err.msg, "context size") != NULL);
    strata_token bad = 512;
    CHECK(strata_eval(ctx, &bad, 1, NULL, &err) == STRATA_ERR_ARG);
    CHECK(strstr(err.msg, "out of range") != NULL);
    bad = -1;
    CHECK(strata_eval(ctx, &bad, 1, NULL, &err) == STRATA_ERR_ARG);
    CHECK(strata_eval(ctx, toks, 8, NULL, &err) == STRATA_OK);
    CHECK(strata_eval(ctx, toks, 1, NULL, &err) == STRATA_ERR_LIMIT);
    strata_ctx_truncate(ctx, 2);
    CHECK(strata_ctx_n_past(ctx) == 2);
    strata_ctx_free(ctx);
}

int main(void)
{
    strata_error err = {0};
    strata_model *m = NULL;
    strata_model_params mp;
    strata_model_params_default(&mp);
    if (strata_model_load(MODEL, &mp, &m, &err) != STRATA_OK) {
        fprintf(stderr, "cannot load %s: %s\n", MODEL, err.msg);
        return 1;
    }
    strata_model_info info;
    strata_model_get_info(m, &info);
    CHECK(strcmp(info.arch, "llama") == 0);
    CHECK(info.n_vocab == 512 && info.n_layers == 5 && info.n_embd == 64);
    greedy_matches_llama_cpp(m, true, 1, 512);
    greedy_matches_llama_cpp(m, true, 2, 512);
    greedy_matches_llama_cpp(m, true, 2, 2);   /* prompt in chunks of 2 */
    greedy_matches_llama_cpp(m, false, 2, 512); /* F16 cache: same greedy path here */
    limits_are_errors(m);
    strata_model_free(m);

    /* non-mmap load path */
    mp.use_mmap = false;
    CHECK(strata_model_load(MODEL, &mp, &m, &err) == STRATA_OK);
    strata_model_free(m);
    CHECK(strata_model_load("/nonexistent/model.gguf", &mp, &m, &err) == STRATA_ERR_IO);
    CHECK(strstr(err.msg, "/nonexistent/model.gguf") != NULL);
    TEST_MAIN_END();
}
