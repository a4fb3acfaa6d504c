/* Micro-benchmark of st_matmul: GFLOP/s and weight GB/s per type and shape,
 * 1 and 2 threads (pthreads spinning on a shared generation counter, like a
 * real pool). GEMV (n_tok = 1) cycles through enough copies of the weights
 * to defeat the caches, so it measures streaming from DRAM.
 *
 *   matmul_bench                                  default sweep
 *   matmul_bench TYPE N_OUT N_IN N_TOK NTH [LEVEL [COPIES]]  one configuration
 *   (COPIES = 1 keeps a small GEMV in cache: kernel speed without DRAM)
 */
#include "matmul.h"

#include "common.h"
#include "quant.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    int level;
    st_type type;
    int64_t n_out, n_in, n_tok;
    const uint8_t *const *W; /* n_copies weight matrices */
    int n_copies;
    const void *X;
    float *Y;
    int nth;
    atomic_int generation; /* bumped by the main thread to start a run */
    atomic_int done;       /* workers finished in this generation */
    atomic_int quit;
    int copy; /* which weight copy this generation uses */
} bench;

typedef struct {
    bench *b;
    int ith;
} worker_arg;

static void run_share(bench *b, int ith)
{
    st_matmul(b->level, b->type, b->W[b->copy], b->n_out, b->n_in, b->X, b->n_tok, b->Y, ith, b->nth);
}

static void *worker(void *p)
{
    worker_arg *wa = p;
    bench *b = wa->b;
    int seen = 0;
    for (;;) {
        int g;
        while ((g = atomic_load_explicit(&b->generation, memory_order_acquire)) == seen) {
            if (atomic_load_explicit(&b->quit, memory_order_relaxed)) {
                return NULL;
            }
        }
        seen = g;
        run_share(b, wa->ith);
        atomic_fetch_add_explicit(&b->done, 1, memory_order_acq_rel);
    }
}

/* One matmul with all threads; the main thread is thread 0. */
static void run_once(bench *b)
{
    atomic_store_explicit(&b->done, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->generation, 1, memory_order_release);
    run_share(b, 0);
    while (atomic_load_explicit(&b->done, memory_order_acquire) != b->nth - 1) {
    }
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static double clock_ms(int nth);

/* Single-threaded runs are timed in thread CPU time: on a shared machine that
 * leaves out the time other processes hold the core. */
static double clock_ms(int nth)
{
    struct timespec ts;
    clock_gettime(nth == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void bench_one(st_type type, int64_t n_out, int64_t n_in, int64_t n_tok, int nth, int level, int copies)
{
    const size_t wrow = st_row_bytes(type, n_in);
    const size_t wbytes = wrow * (size_t)n_out;
    /* GEMV streams ~512 MB of distinct weights; batches reuse one copy */
    int n_copies = copies > 0 ? copies : n_tok == 1 ? (int)ST_MAX(1, (512u << 20) / wbytes) : 1;
    uint8_t **W = malloc(sizeof(uint8_t *) * (size_t)n_copies);
    float *row = malloc((size_t)n_in * sizeof(float));
    W[0] = st_aligned_alloc(64, wbytes);
    for (int64_t r = 0; r < n_out; r++) {
        for (int64_t k = 0; k < n_in; k++) {
            row[k] = frand();
        }
        st_quantize_row(type, row, W[0] + (size_t)r * wrow, n_in);
    }
    for (int c = 1; c < n_copies; c++) {
        W[c] = st_aligned_alloc(64, wbytes);
        memcpy(W[c], W[0], wbytes);
    }
    float *xf = malloc((size_t)(n_tok * n_in) * sizeof(float));
    for (int64_t i = 0; i < n_tok * n_in; i++) {
        xf[i] = frand();
    }
    void *X = st_aligned_alloc(64, st_activation_bytes(type, n_tok, n_in));
    st_quantize_activations(type, xf, n_tok, n_in, X); /* first touch */
    double tq = clock_ms(1);
    st_quantize_activations(type, xf, n_tok, n_in, X);
    tq = clock_ms(1) - tq;
    float *Y = st_aligned_alloc(64, (size_t)(n_tok * n_out) * sizeof(float));

    bench b = {.level = level, .type = type, .n_out = n_out, .n_in = n_in, .n_tok = n_tok,
               .W = (const uint8_t *const *)W, .n_copies = n_copies, .X = X, .Y = Y, .nth = nth};
    atomic_init(&b.generation, 0);
    atomic_init(&b.done, 0);
    atomic_init(&b.quit, 0);
    pthread_t th[16];
    worker_arg wa[16];
    for (int i = 1; i < nth; i++) {
        wa[i] = (worker_arg){&b, i};
        pthread_create(&th[i], NULL, worker, &wa[i]);
    }
    /* Timed unit: one pass over all weight copies (like one token through
     * every layer), repeated for ~0.4 s; reported per matrix. */
    run_once(&b);
    double t0 = clock_ms(nth);
    for (int c = 0; c < n_copies; c++) {
        b.copy = c;
        run_once(&b);
    }
    double one = clock_ms(nth) - t0;
    int iters = (int)ST_MIN(2000, ST_MAX(5, 400.0 / (one > 0.001 ? one : 0.001)));
    double *times = malloc(sizeof(double) * (size_t)iters);
    for (int it = 0; it < iters; it++) {
        const double s = clock_ms(nth);
        for (int c = 0; c < n_copies; c++) {
            b.copy = c;
            run_once(&b);
        }
        times[it] = (clock_ms(nth) - s) / n_copies;
    }
    atomic_store(&b.quit, 1);
    atomic_fetch_add(&b.generation, 1);
    for (int i = 1; i < nth; i++) {
        pthread_join(th[i], NULL);
    }
    qsort(times, (size_t)iters, sizeof(double), cmp_double);
    const double med = times[iters / 2];
    const double best = times[0];
    const double flops = 2.0 * (double)n_out * (double)n_in * (double)n_tok;
    printf("%-5s %5lldx%-5lld n_tok=%-4lld nth=%d %-6s: median %8.3f ms  best %8.3f ms  %7.1f GFLOP/s  %6.1f GB/s"
           "  (best; act quant %.3f ms)\n",
           st_type_name(type), (long long)n_out, (long long)n_in, (long long)n_tok, nth,
           st_simd_name(level < 0 ? st_simd_level() : level), med, best, flops / best / 1e6, (double)wbytes / best / 1e6,
           tq);
    fflush(stdout);
    free(times);
    for (int c = 0; c < n_copies; c++) {
        st_aligned_free(W[c]);
    }
    free(W);
    free(row);
    free(xf);
    st_aligned_free(X);
    st_aligned_free(Y);
}

static st_type parse_type(const char *s)
{
    for (int t = 0; t < ST_TYPE_COUNT; t++) {
        if (st_type_supported((st_type)t) && strcmp(st_type_name((st_type)t), s) == 0) {
            return (st_type)t;
        }
    }
    fprintf(stderr, "unknown type %s\n", s);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc >= 6) {
        const int level = argc > 6 ? atoi(argv[6]) : -1;
        const int copies = argc > 7 ? atoi(argv[7]) : 0;
        bench_one(parse_type(argv[1]), atoll(argv[2]), atoll(argv[3]), atoll(argv[4]), atoi(argv[5]), level, copies);
        return 0;
    }
    const st_type types[] = {ST_Q8_0, ST_Q4_K, ST_Q4_0, ST_F16};
    const int64_t shapes[][2] = {{2048, 2048}, {5632, 2048}};
    const int64_t toks[] = {1, 64, 512};
    for (size_t ti = 0; ti < sizeof(types) / sizeof(types[0]); ti++) {
        for (size_t si = 0; si < 2; si++) {
            for (size_t k = 0; k < 3; k++) {
                for (int nth = 1; nth <= 2; nth++) {
                    bench_one(types[ti], shapes[si][0], shapes[si][1], toks[k], nth, -1, 0);
                }
            }
        }
    }
    return 0;
}
