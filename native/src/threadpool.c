#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* Iterations a worker spins waiting for the next job before sleeping. */
#define SPIN_ITERS 20000

typedef struct worker {
    st_pool *pool;
    pthread_t thread;
    int ith;
} worker;

struct st_pool {
    int nth;
    worker *workers;          /* nth - 1 workers; the caller is thread 0 */
    st_pool_fn fn;            /* current job */
    void *arg;
    atomic_uint generation;   /* bumped for each job */
    atomic_int pending;       /* workers still running the current job */
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    atomic_int sleepers;
};

static void *worker_main(void *p)
{
    worker *w = p;
    st_pool *pool = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        int spins = 0;
        while (gen == seen && !atomic_load(&pool->stop)) {
            if (++spins < SPIN_ITERS) {
                CPU_RELAX();
            } else {
                pthread_mutex_lock(&pool->mu);
                atomic_fetch_add(&pool->sleepers, 1);
                while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop)) {
                    pthread_cond_wait(&pool->wake, &pool->mu);
                }
                atomic_fetch_sub(&pool->sleepers, 1);
                pthread_mutex_unlock(&pool->mu);
                spins = 0;
            }
            gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        }
        if (atomic_load(&pool->stop)) {
            return NULL;
        }
        seen = gen;
        pool->fn(pool->arg, w->ith, pool->nth);
        atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_release);
    }
}

int st_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

strata_err st_pool_new(int n_threads, st_pool **out, strata_error *err)
{
    *out = NULL;
    if (n_threads <= 0) {
        n_threads = st_cpu_count();
    }
    if (n_threads > 256) {
        return st_error(err, STRATA_ERR_ARG, "too many threads: %d (256 at most)", n_threads);
    }
    st_pool *pool = st_calloc(1, sizeof(*pool));
    if (pool == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    pool->nth = n_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->workers = st_calloc((size_t)n_threads, sizeof(worker));
    if (pool->workers == NULL) {
        st_pool_free(pool);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker *w = &pool->workers[i];
        w->pool = pool;
        w->ith = i;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            pool->nth = i; /* only join those started */
            st_pool_free(pool);
            return st_error(err, STRATA_ERR_NOMEM, "cannot start worker thread %d", i);
        }
    }
    *out = pool;
    return STRATA_OK;
}

void st_pool_free(st_pool *pool)
{
    if (pool == NULL) {
        return;
    }
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->stop, true);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 1; i < pool->nth; i++) {
        pthread_join(pool->workers[i].thread, NULL);
    }
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->wake);
    free(pool->workers);
    free(pool);
}

int st_pool_size(const st_pool *pool)
{
    return pool->nth;
}

void st_pool_run(st_pool *pool, st_pool_fn fn, void *arg)
{
    if (pool->nth == 1) {
        fn(arg, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    atomic_store_explicit(&pool->pending, pool->nth - 1, memory_order_relaxed);
    atomic_fetch_add(&pool->generation, 1); /* seq_cst: pairs with the sleepers check */
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mu);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mu);
    }
    fn(arg, 0, pool->nth);
    while (atomic_load_explicit(&pool->pending, memory_order_acquire) > 0) {
        CPU_RELAX();
    }
}

void st_split_range(int64_t n, int ith, int nth, int64_t *start, int64_t *end)
{
    int64_t per = n / nth;
    int64_t rem = n % nth;
    *start = ith * per + (ith < rem ? ith : rem);
    *end = *start + per + (ith < rem ? 1 : 0);
}
