/* GPU parity (needs a CUDA device; prints "SKIP: ..." and passes elsewhere).
 *
 *  1. stories260K: the greedy continuation on CUDA equals the CPU's, token
 *     for token (F32 and F16 KV cache).
 *  2. Random-weight models (tools/mkmodel) of each architecture and several
 *     weight types: CUDA logits vs CPU logits after a 12-token prefill and
 *     4 single-token steps, within REL_TOL relative RMS (the CPU quantizes
 *     activations to the weight's dot type, the GPU keeps them F32) and
 *     the same top token unless the CPU's top two are within TOP_GAP.
 *  3. Batched == one at a time: three sequences in one GPU step vs each
 *     alone, within BATCH_TOL relative RMS.
 *  4. Streamed == resident: vram_budget = 1 byte (every part streams
 *     through the pinned buffers) and half the weights, and a model
 *     streamed from disk (split store) on the GPU, equal to the resident
 *     GPU run within STREAM_TOL.
 *
 * Env CUDA_PARITY_KEEP=1 keeps the generated models in /tmp. Built with
 * cuda/runner_mock.c (cuda_mock_parity_test) it runs on the CPU stand-in, and the
 * streaming checks run again with the mock's eager copies (STRATA_MOCK_EAGER). */
#include "batch.h"
#include "test.h"

#define MODEL "../shared/models/stories260K.gguf"
#define REL_TOL 0.05
#define TOP_GAP 0.1
#define BATCH_TOL 1e-3
#define STREAM_TOL 1e-5

static char mkmodel_bin[512];

/* mkmodel beside this test's build (../tools/mkmodel), else test.h's. */
static bool make_model(const char *args, const char *out)
{
    if (mkmodel_bin[0] != '\0' && access(mkmodel_bin, X_OK) == 0) {
        char cmd[1024];
        snprintf(cmd, sizeof(cmd), "%s %s -o %s > /dev/null 2>&1", mkmodel_bin, args, out);
        return system(cmd) == 0;
    }
    return test_mkmodel(args, out);
}

static strata_model *load(const char *path, int backend, uint64_t vram_budget)
{
    strata_model_params p;
    strata_model_params_default(&p);
    p.backend = backend;
    p.vram_budget = vram_budget;
    p.n_threads = 4;
    strata_error err = {0};
    strata_model *m = NULL;
    if (strata_model_load(path, &p, &m, &err) != STRATA_OK) {
        fprintf(stderr, "load %s (backend %d): %s\n", path, backend, err.msg);
        return NULL;
    }
    return m;
}

static strata_ctx *new_ctx(strata_model *m, bool kv_f32)
{
    strata_ctx_params cp;
    strata_ctx_params_default(&cp);
    cp.n_ctx = 256;
    cp.kv_f32 = kv_f32;
    cp.n_threads = 4;
    strata_error err = {0};
    strata_ctx *ctx = NULL;
    if (strata_ctx_new(m, &cp, &ctx, &err) != STRATA_OK) {
        fprintf(stderr, "ctx: %s\n", err.msg);
    }
    return ctx;
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++) {
        b = x[i] > x[b] ? i : b;
    }
    return b;
}

static double rel_rms(const float *ref, const float *got, int n)
{
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) {
        d += ((double)ref[i] - got[i]) * ((double)ref[i] - got[i]);
        s += (double)ref[i] * ref[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d);
}

/* Greedy continuation of 48 tokens. */
static bool greedy(strata_model *m, bool kv_f32, strata_token *out)
{
    strata_ctx *ctx = new_ctx(m, kv_f32);
    if (ctx == NULL) {
        return false;
    }
    strata_error err = {0};
    const strata_token prompt[5] = {1, 403, 407, 261, 378};
    float *logits = malloc(512 * sizeof(float));
    bool ok = strata_eval(ctx, prompt, 5, logits, &err) == STRATA_OK;
    for (int i = 0; ok && i < 48; i++) {
        out[i] = argmax(logits, 512);
        ok = strata_eval(ctx, &out[i], 1, logits, &err) == STRATA_OK;
    }
    if (!ok) {
        fprintf(stderr, "eval: %s\n", err.msg);
    }
    free(logits);
    strata_ctx_free(ctx);
    return ok;
}

static void stories_greedy(void)
{
    strata_model *cpu = load(MODEL, STRATA_BACKEND_CPU, 0);
    strata_model *gpu = load(MODEL, STRATA_BACKEND_CUDA, 0);
    CHECK(cpu && gpu);
    for (int f32 = 0; cpu && gpu && f32 <= 1; f32++) {
        strata_token a[48], b[48];
        CHECK(greedy(cpu, f32, a));
        CHECK(greedy(gpu, f32, b));
        int same = 0;
        while (same < 48 && a[same] == b[same]) {
            same++;
        }
        CHECK_MSG(same == 48, "stories260K kv_f32=%d: GPU follows the CPU for %d of 48 tokens", f32, same);
        printf("stories260K greedy kv_f32=%d: %d/48 tokens equal\n", f32, same);
    }
    strata_model_free(cpu);
    strata_model_free(gpu);
}

/* Logits of a 12-token prefill then 4 single tokens: 5 * n_vocab floats. */
static bool trace(strata_model *m, float *out, int n_vocab)
{
    strata_ctx *ctx = new_ctx(m, false);
    if (ctx == NULL) {
        return false;
    }
    strata_error err = {0};
    strata_token toks[16];
    for (int i = 0; i < 16; i++) {
        toks[i] = (strata_token)((i * 37 + 11) % n_vocab);
    }
    bool ok = strata_eval(ctx, toks, 12, out, &err) == STRATA_OK;
    for (int i = 0; ok && i < 4; i++) {
        ok = strata_eval(ctx, &toks[12 + i], 1, out + (size_t)(i + 1) * n_vocab, &err) == STRATA_OK;
    }
    if (!ok) {
        fprintf(stderr, "eval: %s\n", err.msg);
    }
    strata_ctx_free(ctx);
    return ok;
}

/* Three sequences in one step vs each alone (GPU model). */
static void batched_vs_single(strata_model *m, int n_vocab)
{
    strata_error err = {0};
    st_pool *pool = NULL;
    st_runner *run = NULL;
    CHECK(st_pool_new(4, &pool, &err) == STRATA_OK);
    CHECK(st_runner_new(m, 64, 256, pool, &run, &err) == STRATA_OK);
    strata_ctx *c[3] = {0};
    for (int s = 0; s < 3; s++) {
        CHECK(st_ctx_new_kv(m, 256, false, &c[s], &err) == STRATA_OK);
    }
    const int lens[3] = {7, 1, 12};
    strata_token toks[3][12];
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < 12; i++) {
            toks[s][i] = (strata_token)((s * 101 + i * 13 + 5) % n_vocab);
        }
    }
    float *batch = malloc(3 * (size_t)n_vocab * sizeof(float));
    float *alone = malloc((size_t)n_vocab * sizeof(float));
    if (run != NULL && c[0] && c[1] && c[2]) {
        st_batch_seq seqs[3];
        for (int s = 0; s < 3; s++) {
            seqs[s] = (st_batch_seq){.ctx = c[s], .toks = toks[s], .n = lens[s], .logits = batch + (size_t)s * n_vocab};
        }
        CHECK_MSG(st_forward_batch(run, &m->source, seqs, 3, &err) == STRATA_OK, "%s", err.msg);
        /* a decode step of all three */
        strata_token next[3] = {3, 4, 5};
        for (int s = 0; s < 3; s++) {
            seqs[s] = (st_batch_seq){.ctx = c[s], .toks = &next[s], .n = 1, .logits = batch + (size_t)s * n_vocab};
        }
        CHECK_MSG(st_forward_batch(run, &m->source, seqs, 3, &err) == STRATA_OK, "%s", err.msg);
        for (int s = 0; s < 3; s++) {
            strata_ctx *one = new_ctx(m, false);
            CHECK(one != NULL);
            if (one == NULL) {
                continue;
            }
            CHECK(strata_eval(one, toks[s], (size_t)lens[s], alone, &err) == STRATA_OK);
            CHECK(strata_eval(one, &next[s], 1, alone, &err) == STRATA_OK);
            double e = rel_rms(alone, batch + (size_t)s * n_vocab, n_vocab);
            CHECK_MSG(e <= BATCH_TOL, "sequence %d: batched vs alone rel rms %g", s, e);
            printf("  batched vs alone seq %d: rel rms %.2e\n", s, e);
            strata_ctx_free(one);
        }
    }
    free(batch);
    free(alone);
    for (int s = 0; s < 3; s++) {
        strata_ctx_free(c[s]);
    }
    st_runner_free(run);
    st_pool_free(pool);
}

static void compare_traces(const char *what, const float *ref, const float *got, int n_vocab, double tol,
                           bool check_top)
{
    for (int step = 0; step < 5; step++) {
        const float *a = ref + (size_t)step * n_vocab, *b = got + (size_t)step * n_vocab;
        double e = rel_rms(a, b, n_vocab);
        CHECK_MSG(e <= tol, "%s step %d: rel rms %g > %g", what, step, e, tol);
        if (check_top) {
            int ta = argmax(a, n_vocab), tb = argmax(b, n_vocab);
            CHECK_MSG(ta == tb || a[ta] - a[tb] <= TOP_GAP, "%s step %d: top token %d vs %d (gap %g)", what, step,
                      ta, tb, a[ta] - a[tb]);
        }
        if (step == 0 || step == 4) {
            printf("  %s step %d: rel rms %.2e\n", what, step, e);
        }
    }
}

static void random_model(const char *arch, const char *type, bool extra)
{
    char path[128], args[256];
    snprintf(path, sizeof(path), "/tmp/strata-cuda-parity-%s-%s.gguf", arch, type);
    snprintf(args, sizeof(args),
             "--arch %s --type %s --dim 512 --layers 3 --heads 8 --kv-heads 2 --ff 1024 --vocab-size 2000 --seed 7",
             arch, type);
    if (!make_model(args, path)) {
        CHECK_MSG(false, "mkmodel %s", args);
        return;
    }
    printf("%s %s:\n", arch, type);
    strata_model *cpu = load(path, STRATA_BACKEND_CPU, 0);
    strata_model *gpu = load(path, STRATA_BACKEND_CUDA, 0);
    CHECK(cpu && gpu);
    if (cpu && gpu) {
        strata_model_info info;
        strata_model_get_info(gpu, &info);
        const int nv = info.n_vocab;
        float *a = malloc(5 * (size_t)nv * sizeof(float));
        float *b = malloc(5 * (size_t)nv * sizeof(float));
        float *c = malloc(5 * (size_t)nv * sizeof(float));
        CHECK(trace(cpu, a, nv));
        CHECK(trace(gpu, b, nv));
        compare_traces("GPU vs CPU", a, b, nv, REL_TOL, true);
        if (extra) {
            batched_vs_single(gpu, nv);
            const uint64_t budgets[2] = {1, info.file_bytes / 2};
            for (int i = 0; i < 2; i++) {
                strata_model *st = load(path, STRATA_BACKEND_CUDA, budgets[i]);
                CHECK(st != NULL);
                if (st != NULL) {
                    CHECK(trace(st, c, nv));
                    compare_traces(i == 0 ? "vram_budget=1 (all streamed)" : "vram_budget=half", b, c, nv,
                                   STREAM_TOL, false);
                    strata_model_free(st);
                }
            }
            /* streamed from disk (split store, 1-part memory budget) on the GPU */
            strata_model_params p;
            strata_model_params_default(&p);
            p.backend = STRATA_BACKEND_CUDA;
            p.vram_budget = 1;
            p.n_threads = 4;
            strata_stream_params sp;
            strata_stream_params_default(&sp);
            char store[160];
            snprintf(store, sizeof(store), "%s.store", path);
            sp.store_path = store;
            sp.memory_budget = 1;
            strata_error err = {0};
            strata_model *ds = NULL;
            CHECK_MSG(strata_model_load_streamed(path, &p, &sp, &ds, &err) == STRATA_OK, "%s", err.msg);
            if (ds != NULL) {
                CHECK(trace(ds, c, nv));
                compare_traces("disk-streamed GPU", b, c, nv, STREAM_TOL, false);
                strata_model_free(ds);
            }
            /* disk-streamed with room in VRAM: once a layer is on the GPU
             * the streamer stops reading it (hold), so later steps read
             * nothing from disk and give the same logits */
            p.vram_budget = 0;
            ds = NULL;
            CHECK_MSG(strata_model_load_streamed(path, &p, &sp, &ds, &err) == STRATA_OK, "%s", err.msg);
            if (ds != NULL) {
                CHECK(trace(ds, c, nv));
                compare_traces("disk-streamed GPU, all in VRAM", b, c, nv, STREAM_TOL, false);
                strata_stream_stats st1[64], st2[64];
                const size_t np = strata_model_stream_stats(ds, st1, 64, false);
                CHECK(trace(ds, c, nv));
                compare_traces("disk-streamed GPU, all in VRAM, again", b, c, nv, STREAM_TOL, false);
                CHECK(strata_model_stream_stats(ds, st2, 64, false) == np);
                uint64_t again = 0;
                for (size_t i = 0; i < np && i < 64; i++) {
                    if (st2[i].part >= 0) { /* blocks and head (the embedding is read on the host) */
                        again += st2[i].bytes_read - st1[i].bytes_read;
                    }
                }
                CHECK_MSG(again == 0, "second pass re-read %llu bytes of GPU-resident layers",
                          (unsigned long long)again);
                strata_model_free(ds);
            }
            char cmd[256];
            snprintf(cmd, sizeof(cmd), "rm -rf '%s'", store);
            CHECK(system(cmd) == 0);
        }
        free(a);
        free(b);
        free(c);
    }
    strata_model_free(cpu);
    strata_model_free(gpu);
    const char *keep = getenv("CUDA_PARITY_KEEP");
    if (keep == NULL || strcmp(keep, "1") != 0) {
        unlink(path);
    }
}

#ifdef STRATA_CUDA_MOCK
/* A weight type the GPU lacks: AUTO falls back to the CPU and says why,
 * CUDA is STRATA_ERR_UNSUPPORTED naming the tensor. */
static void lacking_type(void)
{
    const char *path = "/tmp/strata-cuda-parity-notype.gguf";
    if (!make_model("--arch llama --type Q6_K --dim 256 --layers 1 --heads 4 --kv-heads 2 --ff 512 --vocab-size 300",
                    path)) {
        CHECK_MSG(false, "mkmodel");
        return;
    }
    const char *q6k = st_type_name(ST_Q6_K);
    char want[128];
    setenv("STRATA_MOCK_NO_TYPE", q6k, 1);
    strata_model_params p;
    strata_model_params_default(&p);
    strata_error err = {0};
    strata_model *m = NULL;
    char logf[] = "/tmp/strata-cuda-notype-log-XXXXXX";
    int fd = mkstemp(logf);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    unsetenv("STRATA_LOG");
    CHECK(strata_model_load(path, &p, &m, &err) == STRATA_OK);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char buf[1024] = "";
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(logf);
    if (m != NULL) {
        strata_model_info info;
        strata_model_get_info(m, &info);
        CHECK(strcmp(info.backend, "cpu") == 0);
        strata_model_free(m);
    }
    snprintf(want, sizeof(want), "strata: backend cpu (auto: the GPU kernels lack weight type %s (blk.0.", q6k);
    CHECK_MSG(strstr(buf, want) != NULL, "log: %s", buf);
    p.backend = STRATA_BACKEND_CUDA;
    m = NULL;
    CHECK(strata_model_load(path, &p, &m, &err) == STRATA_ERR_UNSUPPORTED && m == NULL);
    snprintf(want, sizeof(want), "lack weight type %s (blk.0.", q6k);
    CHECK_MSG(strstr(err.msg, want) != NULL, "message: %s", err.msg);
    printf("a type the GPU lacks: %s", buf);
    unsetenv("STRATA_MOCK_NO_TYPE");
    unlink(path);
}
#endif

int main(int argc, char **argv)
{
    (void)argc;
    const char *slash = strrchr(argv[0], '/');
    if (slash != NULL) {
        snprintf(mkmodel_bin, sizeof(mkmodel_bin), "%.*s/../tools/mkmodel", (int)(slash - argv[0]), argv[0]);
    }
    strata_model *probe = NULL;
    strata_model_params p;
    strata_model_params_default(&p);
    p.backend = STRATA_BACKEND_CUDA;
    strata_error err = {0};
    unsetenv("STRATA_BACKEND"); /* make test sets cpu for the other tests */
    setenv("STRATA_LOG", "0", 1);
    if (strata_model_load(MODEL, &p, &probe, &err) != STRATA_OK) {
        printf("SKIP: %s\n", err.msg);
        return 0;
    }
    strata_model_free(probe);
    unsetenv("STRATA_LOG");

    stories_greedy();
    random_model("llama", "Q8_0", true);
    random_model("llama", "Q4_K_M", false);
    random_model("qwen2", "Q4_K", false);
    random_model("qwen3", "F16", false);
    random_model("qwen3", "Q6_K", false);
    random_model("llama", "Q4_0", false);
#ifdef STRATA_CUDA_MOCK
    lacking_type();
    printf("again with eager copies:\n");
    setenv("STRATA_MOCK_EAGER", "1", 1);
    random_model("llama", "Q8_0", true);
    unsetenv("STRATA_MOCK_EAGER");
#endif
    TEST_MAIN_END();
}
