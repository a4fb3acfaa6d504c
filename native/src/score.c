/* Score/embed arithmetic (see score.h). Everything sums in double so that
 * the result does not depend on how a batch was split. */
#include "score.h"

#include <math.h>

double st_logsumexp(const float *logits, int n)
{
    double m = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (logits[i] > m) {
            m = logits[i];
        }
    }
    if (!isfinite(m)) {
        return m;
    }
    double s = 0.0;
    for (int i = 0; i < n; i++) {
        s += exp((double)logits[i] - m);
    }
    return m + log(s);
}

double st_log_prob(const float *logits, int n, strata_token tok, double lse)
{
    if (tok < 0 || tok >= n) {
        return -INFINITY;
    }
    return (double)logits[tok] - lse;
}

void st_options_normalize(const double *logprob, int k, double *prob)
{
    double m = -INFINITY;
    for (int i = 0; i < k; i++) {
        if (logprob[i] > m) {
            m = logprob[i];
        }
    }
    double s = 0.0;
    for (int i = 0; i < k; i++) {
        prob[i] = isfinite(m) ? exp(logprob[i] - m) : 0.0;
        s += prob[i];
    }
    for (int i = 0; i < k; i++) {
        prob[i] = s > 0.0 ? prob[i] / s : 1.0 / k;
    }
}

void st_embed_pool_mean(const float *rows, int n, int dim, float *out)
{
    double norm = 0.0;
    for (int j = 0; j < dim; j++) {
        double s = 0.0;
        for (int i = 0; i < n; i++) {
            s += rows[(size_t)i * dim + j];
        }
        out[j] = n > 0 ? (float)(s / n) : 0.0f;
        norm += (double)out[j] * out[j];
    }
    if (norm > 0.0) {
        float inv = (float)(1.0 / sqrt(norm));
        for (int j = 0; j < dim; j++) {
            out[j] *= inv;
        }
    }
}
