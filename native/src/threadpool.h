/* A fixed pool of worker threads for data-parallel kernels.
 *
 * st_pool_run(pool, fn, arg) calls fn(arg, ith, nth) once on each of nth
 * threads (the caller is thread 0) and returns when all are done. Workers
 * spin briefly between jobs (a forward pass dispatches hundreds of small
 * jobs per token) and then sleep on a condition variable. */
#ifndef ST_THREADPOOL_H
#define ST_THREADPOOL_H

#include "common.h"

typedef struct st_pool st_pool;
typedef void (*st_pool_fn)(void *arg, int ith, int nth);

strata_err st_pool_new(int n_threads, st_pool **out, strata_error *err);
void st_pool_free(st_pool *pool);
int st_pool_size(const st_pool *pool);
void st_pool_run(st_pool *pool, st_pool_fn fn, void *arg);
/* Split [0, n) evenly: thread ith gets [*start, *end). */
void st_split_range(int64_t n, int ith, int nth, int64_t *start, int64_t *end);
/* Online CPU cores. */
int st_cpu_count(void);

#endif
