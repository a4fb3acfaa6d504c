/* A tiny test harness: CHECK records a failure and continues; main returns
 * the failure count. Each module's test is one executable. Tests run from the
 * repository root. */
#ifndef ST_TEST_H
#define ST_TEST_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int st_test_failures = 0;
static int st_test_checks = 0;

#define CHECK(cond)                                                              \
    do {                                                                         \
        st_test_checks++;                                                        \
        if (!(cond)) {                                                           \
            st_test_failures++;                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                     \
    do {                                                                         \
        st_test_checks++;                                                        \
        if (!(cond)) {                                                           \
            st_test_failures++;                                                  \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                        \
            fprintf(stderr, "\n");                                               \
        }                                                                        \
    } while (0)

#define CHECK_NEAR(a, b, tol) CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%g vs %g (tol %g)", (double)(a), (double)(b), (double)(tol))

#define TEST_MAIN_END()                                                          \
    do {                                                                         \
        printf("%d checks, %d failed\n", st_test_checks, st_test_failures);      \
        return st_test_failures == 0 ? 0 : 1;                                    \
    } while (0)

/* Run native/build/tools/mkmodel (or the ASan build's) with args, writing a
 * random model to out; its chatter is dropped. Tests run from the repo root. */
static inline bool test_mkmodel(const char *args, const char *out)
{
    static const char *const cands[] = {"native/build/tools/mkmodel", "native/build-asan/tools/mkmodel"};
    for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
        if (access(cands[i], X_OK) == 0) {
            char cmd[1024];
            snprintf(cmd, sizeof(cmd), "%s %s -o %s > /dev/null 2>&1", cands[i], args, out);
            return system(cmd) == 0;
        }
    }
    fprintf(stderr, "mkmodel not built (run make first)\n");
    return false;
}

#endif
