/* Prefix reuse between sequences: shared prompt prefixes are computed once.
 *
 * The KV rows of positions [0, n) depend only on the tokens at those
 * positions, so a sequence whose prompt starts with another sequence's
 * history can take a copy of those rows instead of recomputing them. The
 * scheduler keeps finished contexts (with their KV caches) as the cache and
 * also copies from sequences that are still running. */
#ifndef ST_PREFIX_CACHE_H
#define ST_PREFIX_CACHE_H

#include "forward.h"

/* Length of the common prefix of a context's cached history and toks. */
int st_prefix_common(const strata_ctx *ctx, const strata_token *toks, int n);

/* Copy positions [0, n) (K and V rows of every layer, and the history) from
 * src into dst and set dst->n_past = n. Both contexts must be of the same
 * model and KV type, n <= src->n_past and n <= dst->n_ctx. */
strata_err st_kv_copy_prefix(strata_ctx *dst, const strata_ctx *src, int n, strata_error *err);

#endif
