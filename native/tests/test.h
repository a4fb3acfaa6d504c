/* A tiny test harness: CHECK records a failure and continues; main returns
 * the failure count. Each module's test is one executable. Tests run from the
 * repository root. */
#ifndef ST_TEST_H
#define ST_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

#endif
