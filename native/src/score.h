/* Scoring and embedding arithmetic on logits and hidden states: option
 * log-probabilities after a prompt, and pooled normalized embeddings. */
#ifndef ST_SCORE_H
#define ST_SCORE_H

#include "common.h"

/* log(sum(exp(logits))) over n values, in double. */
double st_logsumexp(const float *logits, int n);

/* log p(tok) under softmax(logits). */
double st_log_prob(const float *logits, int n, strata_token tok, double lse);

/* Normalized probabilities of k options from their log-probabilities
 * (softmax over the options only). */
void st_options_normalize(const double *logprob, int k, double *prob);

/* Mean of n rows of dim floats, then L2-normalized, into out (dim floats).
 * A zero vector stays zero. */
void st_embed_pool_mean(const float *rows, int n, int dim, float *out);

#endif
