/* Backend selection (cuda/backend.h) on stories260K: explicit CPU, AUTO,
 * explicit CUDA, the STRATA_BACKEND override, the one log line and
 * STRATA_LOG=0. Without a usable GPU (or a build without CUDA), AUTO must
 * fall back to the CPU with the reason and give the CPU's logits bit for bit,
 * and CUDA must be STRATA_ERR_UNSUPPORTED. With a GPU, AUTO and CUDA must
 * pick it (GPU numerics are checked by cuda_parity_test). */
#include "model.h"
#include "test.h"

#include <fcntl.h>

#define MODEL "../shared/models/stories260K.gguf"

static char logbuf[4096];

/* Load with stderr captured into logbuf. */
static strata_err load_logged(const strata_model_params *p, strata_model **m, strata_error *err)
{
    char path[] = "/tmp/strata-cuda-fallback-XXXXXX";
    int fd = mkstemp(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    strata_err rc = strata_model_load(MODEL, p, m, err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, logbuf, sizeof(logbuf) - 1);
    logbuf[n > 0 ? n : 0] = '\0';
    close(fd);
    unlink(path);
    return rc;
}

static int count_lines(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)) != NULL; p++) {
        n++;
    }
    return n;
}

static bool logits_of(strata_model *m, float *out)
{
    strata_error err = {0};
    strata_ctx_params cp;
    strata_ctx_params_default(&cp);
    cp.n_ctx = 64;
    cp.n_threads = 2;
    strata_ctx *ctx = NULL;
    if (strata_ctx_new(m, &cp, &ctx, &err) != STRATA_OK) {
        fprintf(stderr, "ctx: %s\n", err.msg);
        return false;
    }
    const strata_token toks[6] = {1, 403, 407, 261, 378, 432};
    bool ok = strata_eval(ctx, toks, 6, out, &err) == STRATA_OK;
    strata_ctx_free(ctx);
    return ok;
}

int main(void)
{
    strata_error err = {0};
    strata_model_params p;
    strata_model_params_default(&p);
    CHECK(p.backend == STRATA_BACKEND_AUTO && p.vram_budget == 0);
    unsetenv("STRATA_BACKEND");
    unsetenv("STRATA_LOG");

    /* explicit CPU */
    p.backend = STRATA_BACKEND_CPU;
    strata_model *cpu = NULL;
    CHECK(load_logged(&p, &cpu, &err) == STRATA_OK);
    if (cpu == NULL) {
        fprintf(stderr, "load: %s\n", err.msg);
        TEST_MAIN_END();
    }
    strata_model_info info;
    strata_model_get_info(cpu, &info);
    CHECK(strcmp(info.backend, "cpu") == 0 && info.device[0] == '\0');
    CHECK_MSG(strstr(logbuf, "strata: backend cpu (requested)") != NULL, "log: %s", logbuf);
    CHECK(count_lines(logbuf, "strata: backend") == 1);
    float *ref = malloc(512 * sizeof(float));
    float *got = malloc(512 * sizeof(float));
    CHECK(logits_of(cpu, ref));

    /* explicit CUDA: decides whether this machine has a usable GPU */
    p.backend = STRATA_BACKEND_CUDA;
    strata_model *cu = NULL;
    strata_err rc = load_logged(&p, &cu, &err);
    const bool gpu = rc == STRATA_OK;
    if (gpu) {
        printf("a CUDA device is usable: checking that AUTO picks it\n");
        strata_model_get_info(cu, &info);
        CHECK(strcmp(info.backend, "cuda") == 0 && info.device[0] != '\0');
        CHECK_MSG(strstr(logbuf, "strata: backend cuda on ") != NULL, "log: %s", logbuf);
        strata_model_free(cu);
    } else {
        printf("no usable CUDA device: %s\n", err.msg);
        CHECK(rc == STRATA_ERR_UNSUPPORTED && cu == NULL);
        CHECK_MSG(strstr(err.msg, "CUDA backend unavailable: ") != NULL &&
                      (strstr(err.msg, "no CUDA driver") || strstr(err.msg, "no CUDA device") ||
                       strstr(err.msg, "CUDA driver too old") || strstr(err.msg, "no CUDA support") ||
                       strstr(err.msg, "CUDA unavailable")),
                  "message: %s", err.msg);
    }

    /* AUTO */
    p.backend = STRATA_BACKEND_AUTO;
    strata_model *au = NULL;
    CHECK(load_logged(&p, &au, &err) == STRATA_OK);
    if (au != NULL) {
        strata_model_get_info(au, &info);
        CHECK(count_lines(logbuf, "strata: backend") == 1);
        if (gpu) {
            CHECK(strcmp(info.backend, "cuda") == 0);
        } else {
            CHECK(strcmp(info.backend, "cpu") == 0);
            /* the reason is in the line */
            CHECK_MSG(strstr(logbuf, "strata: backend cpu (auto: ") != NULL &&
                          (strstr(logbuf, "no CUDA") || strstr(logbuf, "CUDA driver too old") ||
                           strstr(logbuf, "CUDA unavailable")),
                      "log: %s", logbuf);
            CHECK(logits_of(au, got));
            CHECK_MSG(memcmp(ref, got, 512 * sizeof(float)) == 0, "AUTO (CPU fallback) logits differ from CPU");
        }
        strata_model_free(au);
    }

    /* STRATA_BACKEND overrides the parameter */
    setenv("STRATA_BACKEND", "cpu", 1);
    p.backend = STRATA_BACKEND_CUDA;
    strata_model *ov = NULL;
    CHECK(load_logged(&p, &ov, &err) == STRATA_OK);
    if (ov != NULL) {
        strata_model_get_info(ov, &info);
        CHECK(strcmp(info.backend, "cpu") == 0);
        CHECK_MSG(strstr(logbuf, "strata: backend cpu (STRATA_BACKEND)") != NULL, "log: %s", logbuf);
        strata_model_free(ov);
    }
    setenv("STRATA_BACKEND", "cuda", 1);
    p.backend = STRATA_BACKEND_CPU;
    ov = NULL;
    rc = load_logged(&p, &ov, &err);
    CHECK(gpu ? rc == STRATA_OK : (rc == STRATA_ERR_UNSUPPORTED && ov == NULL));
    strata_model_free(ov);
    setenv("STRATA_BACKEND", "tpu", 1);
    ov = NULL;
    CHECK(load_logged(&p, &ov, &err) == STRATA_ERR_ARG && ov == NULL);
    CHECK_MSG(strstr(err.msg, "STRATA_BACKEND='tpu'") != NULL, "message: %s", err.msg);
    unsetenv("STRATA_BACKEND");

    /* bad parameter */
    p.backend = 7;
    ov = NULL;
    CHECK(load_logged(&p, &ov, &err) == STRATA_ERR_ARG && ov == NULL);
    p.backend = STRATA_BACKEND_CPU;

    /* STRATA_LOG=0 silences the line */
    setenv("STRATA_LOG", "0", 1);
    ov = NULL;
    CHECK(load_logged(&p, &ov, &err) == STRATA_OK);
    CHECK_MSG(strstr(logbuf, "strata: backend") == NULL, "log: %s", logbuf);
    strata_model_free(ov);
    unsetenv("STRATA_LOG");

    /* a streamed model (split store) goes through the same selection */
    strata_stream_params sp;
    strata_stream_params_default(&sp);
    char store[] = "/tmp/strata-cuda-fallback-store-XXXXXX";
    CHECK(mkdtemp(store) != NULL);
    char store_path[128];
    snprintf(store_path, sizeof(store_path), "%s/s", store);
    sp.store_path = store_path;
    p.backend = STRATA_BACKEND_AUTO;
    strata_model *st = NULL;
    CHECK(strata_model_load_streamed(MODEL, &p, &sp, &st, &err) == STRATA_OK);
    if (st != NULL) {
        strata_model_get_info(st, &info);
        CHECK(strcmp(info.backend, gpu ? "cuda" : "cpu") == 0);
        if (!gpu) {
            CHECK(logits_of(st, got));
            CHECK_MSG(memcmp(ref, got, 512 * sizeof(float)) == 0, "streamed logits differ");
        }
        strata_model_free(st);
    }
    p.backend = STRATA_BACKEND_CUDA;
    st = NULL;
    rc = strata_model_load_streamed(MODEL, &p, &sp, &st, &err);
    CHECK(gpu ? rc == STRATA_OK : (rc == STRATA_ERR_UNSUPPORTED && st == NULL));
    strata_model_free(st);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", store);
    CHECK(system(cmd) == 0);

    free(ref);
    free(got);
    strata_model_free(cpu);
    TEST_MAIN_END();
}
