#include "sampler.h"

#include "json_constraint.h"
#include "model.h"
#include "tokenizer.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    strata_token id;
    float logit;
} st_cand;

/* A candidate array whose first `sorted` entries are in descending order and
 * no worse than any entry after them. */
typedef struct {
    st_cand *c;     /* (n) */
    size_t n;
    size_t sorted;
} cand_list;

struct strata_sampler {
    strata_sampler_params p;
    st_vocab_view vocab;
    uint64_t rng[4];          /* xoshiro256** state */

    /* penalties; NULL when they are off */
    int32_t *counts;          /* (n_vocab) occurrences in the window */
    strata_token *hist;       /* (hist_cap) ring of the last accepted tokens; NULL: unbounded */
    size_t hist_cap;
    size_t hist_len;
    size_t hist_head;         /* index of the oldest entry */
    size_t n_seen;            /* tokens ever added */

    st_cand *cand;            /* (n_vocab) scratch: finite logits */
    st_cand *kept;            /* (n_vocab) scratch: JSON-valid candidates; json mode only */
    uint8_t *eog_flag;        /* (n_vocab) 1 for end-of-generation tokens */
    strata_token *eog;        /* (n_eog) the same, as a list */
    size_t n_eog;
    st_json_state json;
};

/* ------------------------------------------------------------ random -- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static double rng_uniform(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

void st_sampler_seed(strata_sampler *s, uint64_t seed)
{
    if (seed == ST_SAMPLER_SEED_RANDOM) {
        struct timespec rt, mono;
        clock_gettime(CLOCK_REALTIME, &rt);
        clock_gettime(CLOCK_MONOTONIC, &mono);
        seed = ((uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec) ^
               rotl((uint64_t)mono.tv_nsec, 32) ^ (uint64_t)(uintptr_t)s;
    }
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        s->rng[i] = splitmix64(&x);
    }
}

/* ------------------------------------------------------ partial sorting -- */

/* Total order: higher logit first, then lower id. Ids are unique, so no two
 * candidates compare equal and every selection below is deterministic. */
static bool cand_better(const st_cand *a, const st_cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb)
{
    const st_cand *a = pa;
    const st_cand *b = pb;
    if (cand_better(a, b)) {
        return -1;
    }
    return cand_better(b, a) ? 1 : 0;
}

static void cand_swap(st_cand *a, st_cand *b)
{
    st_cand t = *a;
    *a = *b;
    *b = t;
}

/* Reorder c[lo..n) so that c[lo..k) holds its best k - lo entries, sorted.
 * Quickselect (median of three), then a sort of the selected part only. */
static void select_top(st_cand *c, size_t lo, size_t k, size_t n)
{
    if (k > n) {
        k = n;
    }
    if (k <= lo) {
        return;
    }
    size_t left = lo;
    size_t right = n;
    int budget = 64;
    while (right - left > 16 && k > left && k < right) {
        if (budget-- == 0) {
            qsort(c + left, right - left, sizeof(*c), cand_cmp);
            break;
        }
        size_t mid = left + (right - left) / 2;
        size_t last = right - 1;
        if (cand_better(&c[mid], &c[left])) {
            cand_swap(&c[mid], &c[left]);
        }
        if (cand_better(&c[last], &c[left])) {
            cand_swap(&c[last], &c[left]);
        }
        if (cand_better(&c[mid], &c[last])) {
            cand_swap(&c[mid], &c[last]);
        }
        /* c[last] is now the median of the three: the pivot */
        size_t store = left;
        for (size_t i = left; i < last; i++) {
            if (cand_better(&c[i], &c[last])) {
                cand_swap(&c[i], &c[store]);
                store++;
            }
        }
        cand_swap(&c[store], &c[last]);
        if (k == store || k == store + 1) {
            break;
        }
        if (k < store) {
            right = store;
        } else {
            left = store + 1;
        }
    }
    if (right - left <= 16 && k > left && k < right) {
        qsort(c + left, right - left, sizeof(*c), cand_cmp);
    }
    qsort(c + lo, k - lo, sizeof(*c), cand_cmp);
}

/* Make at least the first `upto` entries sorted, growing the sorted prefix
 * geometrically (at least min_chunk) so that walking the list in order costs
 * O(n log) selections rather than one per step. */
static void ensure_sorted(cand_list *l, size_t upto, size_t min_chunk)
{
    if (upto <= l->sorted || l->sorted >= l->n) {
        return;
    }
    size_t k = upto;
    k = ST_MAX(k, l->sorted * 2);
    k = ST_MAX(k, l->sorted + min_chunk);
    k = ST_MIN(k, l->n);
    select_top(l->c, l->sorted, k, l->n);
    l->sorted = k;
}

static float list_max(const cand_list *l)
{
    if (l->sorted > 0) {
        return l->c[0].logit;
    }
    float m = -FLT_MAX;
    for (size_t i = 0; i < l->n; i++) {
        m = ST_MAX(m, l->c[i].logit);
    }
    return m;
}

/* The best c tokens with finite logits that come strictly after `bound` in
 * the candidate order (bound NULL: from the top), sorted, into out; returns
 * how many. One pass over the logits with a size-c heap whose root is the
 * worst entry kept, so top_k costs O(n) comparisons plus O(k log k). */
static size_t select_below(const float *logits, int n, const st_cand *bound, size_t c,
                           st_cand *out)
{
    size_t h = 0;
    if (c == 0) {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        float l = logits[i];
        if (!(l > -INFINITY)) {
            continue; /* -inf, NaN */
        }
        st_cand x = {i, l < FLT_MAX ? l : FLT_MAX};
        if (h == c && !cand_better(&x, &out[0])) {
            continue;
        }
        if (bound != NULL && !cand_better(bound, &x)) {
            continue;
        }
        size_t j;
        if (h < c) {
            /* sift up: parents are worse than their children */
            j = h++;
            while (j > 0 && cand_better(&out[(j - 1) / 2], &x)) {
                out[j] = out[(j - 1) / 2];
                j = (j - 1) / 2;
            }
        } else {
            /* replace the root, sift down */
            j = 0;
            for (;;) {
                size_t a = 2 * j + 1;
                if (a >= h) {
                    break;
                }
                size_t b = a + 1;
                size_t w = (b < h && cand_better(&out[a], &out[b])) ? b : a; /* worse child */
                if (!cand_better(&x, &out[w])) {
                    break;
                }
                out[j] = out[w];
                j = w;
            }
        }
        out[j] = x;
    }
    qsort(out, h, sizeof(*out), cand_cmp);
    return h;
}

/* ------------------------------------------------------------ sampler -- */

void strata_sampler_params_default(strata_sampler_params *p)
{
    memset(p, 0, sizeof(*p));
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.1f;
    p->repeat_last_n = 64;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->seed = ST_SAMPLER_SEED_RANDOM;
    p->json = false;
}

static bool penalties_on(const strata_sampler_params *p)
{
    return p->repeat_last_n != 0 &&
           (p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f);
}

static strata_err check_params(const strata_sampler_params *p, strata_error *err)
{
    if (isnan(p->temperature) || isnan(p->top_p) || isnan(p->min_p)) {
        return st_error(err, STRATA_ERR_ARG, "sampler: temperature, top_p and min_p must be numbers");
    }
    if (!(p->repeat_penalty > 0.0f) || isinf(p->repeat_penalty)) {
        return st_error(err, STRATA_ERR_ARG, "sampler: repeat_penalty must be > 0 and finite (got %g)",
                        (double)p->repeat_penalty);
    }
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty)) {
        return st_error(err, STRATA_ERR_ARG, "sampler: presence/frequency penalties must be finite");
    }
    return STRATA_OK;
}

void strata_sampler_free(strata_sampler *s)
{
    if (s == NULL) {
        return;
    }
    free(s->counts);
    free(s->hist);
    free(s->cand);
    free(s->kept);
    free(s->eog_flag);
    free(s->eog);
    free(s);
}

strata_err st_sampler_new_vocab(const st_vocab_view *v, const strata_sampler_params *p,
                                strata_sampler **out, strata_error *err)
{
    *out = NULL;
    if (v == NULL || v->bytes == NULL || v->is_eog == NULL || v->n_vocab <= 0) {
        return st_error(err, STRATA_ERR_ARG, "sampler: no vocabulary");
    }
    strata_sampler_params def;
    if (p == NULL) {
        strata_sampler_params_default(&def);
        p = &def;
    }
    strata_err rc = check_params(p, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    size_t n_vocab = (size_t)v->n_vocab;
    strata_sampler *s = st_calloc(1, sizeof(*s));
    if (s == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "sampler: out of memory");
    }
    s->p = *p;
    s->vocab = *v;
    s->cand = st_malloc_array(n_vocab, sizeof(*s->cand));
    s->eog_flag = st_calloc(n_vocab, 1);
    bool ok = s->cand != NULL && s->eog_flag != NULL;
    if (ok && p->json) {
        s->kept = st_malloc_array(n_vocab, sizeof(*s->kept));
        ok = s->kept != NULL;
    }
    if (ok && penalties_on(p)) {
        s->counts = st_calloc(n_vocab, sizeof(*s->counts));
        ok = s->counts != NULL;
        if (ok && p->repeat_last_n > 0) {
            s->hist_cap = (size_t)p->repeat_last_n;
            s->hist = st_malloc_array(s->hist_cap, sizeof(*s->hist));
            ok = s->hist != NULL;
        }
    }
    if (ok) {
        for (size_t t = 0; t < n_vocab; t++) {
            if (v->is_eog(v->ctx, (strata_token)t)) {
                s->eog_flag[t] = 1;
                s->n_eog++;
            }
        }
        s->eog = st_malloc_array(s->n_eog, sizeof(*s->eog));
        ok = s->eog != NULL;
    }
    if (!ok) {
        strata_sampler_free(s);
        return st_error(err, STRATA_ERR_NOMEM, "sampler: out of memory for a %zu-token vocabulary",
                        n_vocab);
    }
    for (size_t t = 0, j = 0; t < n_vocab; t++) {
        if (s->eog_flag[t]) {
            s->eog[j++] = (strata_token)t;
        }
    }
    st_json_init(&s->json);
    st_sampler_seed(s, p->seed);
    *out = s;
    return STRATA_OK;
}

static const char *tokenizer_bytes(const void *ctx, strata_token tok, size_t *len)
{
    return st_token_bytes((const st_tokenizer *)ctx, tok, len);
}

static bool tokenizer_is_eog(const void *ctx, strata_token tok)
{
    return st_token_is_eog((const st_tokenizer *)ctx, tok);
}

void st_vocab_view_from_tokenizer(const st_tokenizer *t, st_vocab_view *v)
{
    v->ctx = t;
    v->bytes = tokenizer_bytes;
    v->is_eog = tokenizer_is_eog;
    v->n_vocab = st_tokenizer_n_vocab(t);
}

strata_err strata_sampler_new(const strata_model *model, const strata_sampler_params *p,
                              strata_sampler **out, strata_error *err)
{
    if (out == NULL) {
        return st_error(err, STRATA_ERR_ARG, "sampler: out is NULL");
    }
    *out = NULL;
    if (model == NULL) {
        return st_error(err, STRATA_ERR_ARG, "sampler: model is NULL");
    }
    const st_tokenizer *t = st_model_tokenizer(model);
    if (t == NULL) {
        return st_error(err, STRATA_ERR_ARG, "sampler: model has no tokenizer");
    }
    st_vocab_view v;
    st_vocab_view_from_tokenizer(t, &v);
    return st_sampler_new_vocab(&v, p, out, err);
}

/* ------------------------------------------------------------ history -- */

void st_sampler_accept_history(strata_sampler *s, strata_token tok)
{
    if (s == NULL || s->counts == NULL || tok < 0 || tok >= s->vocab.n_vocab) {
        return;
    }
    if (s->hist != NULL) {
        if (s->hist_len == s->hist_cap) {
            s->counts[s->hist[s->hist_head]]--;
            s->hist[s->hist_head] = tok;
            s->hist_head = (s->hist_head + 1) % s->hist_cap;
        } else {
            s->hist[(s->hist_head + s->hist_len) % s->hist_cap] = tok;
            s->hist_len++;
        }
    }
    s->counts[tok]++;
    s->n_seen++;
}

void strata_sampler_accept(strata_sampler *s, strata_token tok)
{
    if (s == NULL || tok < 0 || tok >= s->vocab.n_vocab) {
        return;
    }
    st_sampler_accept_history(s, tok);
    if (s->p.json && !s->eog_flag[tok]) {
        size_t len = 0;
        const char *b = s->vocab.bytes(s->vocab.ctx, tok, &len);
        st_json_advance(&s->json, b != NULL ? b : "", b != NULL ? len : 0);
    }
}

void st_sampler_reset(strata_sampler *s)
{
    if (s->counts != NULL) {
        memset(s->counts, 0, (size_t)s->vocab.n_vocab * sizeof(*s->counts));
    }
    s->hist_len = 0;
    s->hist_head = 0;
    s->n_seen = 0;
    st_json_init(&s->json);
}

bool strata_sampler_done(const strata_sampler *s)
{
    return s != NULL && s->p.json && st_json_complete(&s->json);
}

/* ----------------------------------------------------------- sampling -- */

/* llama.cpp's penalties: repeat divides positive logits and multiplies
 * negative ones; frequency and presence subtract. */
static float penalized(const strata_sampler *s, float l, int32_t count)
{
    l = l <= 0.0f ? l * s->p.repeat_penalty : l / s->p.repeat_penalty;
    return l - ((float)count * s->p.frequency_penalty + s->p.presence_penalty);
}

static void apply_penalties(strata_sampler *s, float *logits)
{
    if (s->counts == NULL || s->n_seen == 0) {
        return;
    }
    if (s->hist == NULL) {
        /* unbounded window: every token ever accepted */
        for (int t = 0; t < s->vocab.n_vocab; t++) {
            if (s->counts[t] > 0) {
                logits[t] = penalized(s, logits[t], s->counts[t]);
            }
        }
        return;
    }
    /* Each distinct token of the window once: its count is negated while
     * it is done, then restored. */
    for (size_t i = 0; i < s->hist_len; i++) {
        strata_token t = s->hist[(s->hist_head + i) % s->hist_cap];
        if (s->counts[t] > 0) {
            logits[t] = penalized(s, logits[t], s->counts[t]);
            s->counts[t] = -s->counts[t];
        }
    }
    for (size_t i = 0; i < s->hist_len; i++) {
        strata_token t = s->hist[(s->hist_head + i) % s->hist_cap];
        if (s->counts[t] < 0) {
            s->counts[t] = -s->counts[t];
        }
    }
}

/* Highest logit, lowest id on ties; NaN never wins. */
static strata_token argmax(const float *logits, int n)
{
    strata_token best = 0;
    float bl = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (logits[i] > bl) {
            bl = logits[i];
            best = i;
        }
    }
    return best;
}

static strata_token best_eog(const strata_sampler *s, const float *logits)
{
    if (s->n_eog == 0) {
        return argmax(logits, s->vocab.n_vocab);
    }
    strata_token best = s->eog[0];
    for (size_t i = 1; i < s->n_eog; i++) {
        if (logits[s->eog[i]] > logits[best]) {
            best = s->eog[i];
        }
    }
    return best;
}

/* Would this token keep the JSON document valid? (json mode, not complete) */
static bool json_token_ok(const strata_sampler *s, strata_token tok)
{
    if (s->eog_flag[tok]) {
        return false; /* only once the value is complete */
    }
    size_t len = 0;
    const char *b = s->vocab.bytes(s->vocab.ctx, tok, &len);
    if (b == NULL || len == 0) {
        return false; /* control tokens print nothing and derail the value */
    }
    return st_json_accepts(&s->json, b, len);
}

static strata_token draw(strata_sampler *s, const cand_list *l)
{
    const double m = list_max(l);
    const double inv_t = 1.0 / (double)s->p.temperature;
    double sum = 0.0;
    for (size_t i = 0; i < l->n; i++) {
        sum += exp(((double)l->c[i].logit - m) * inv_t);
    }
    double u = rng_uniform(s->rng) * sum;
    double acc = 0.0;
    for (size_t i = 0; i < l->n; i++) {
        acc += exp(((double)l->c[i].logit - m) * inv_t);
        if (u < acc) {
            return l->c[i].id;
        }
    }
    return l->c[l->n - 1].id;
}

/* The chain up to the draw. Returns the token when the choice is forced
 * (greedy, JSON complete, nothing valid); otherwise -1 with *out set to the
 * surviving candidates. */
static strata_token prepare(strata_sampler *s, float *logits, cand_list *out)
{
    const int n_vocab = s->vocab.n_vocab;
    const bool greedy = !(s->p.temperature > 0.0f);
    const bool json = s->p.json;

    apply_penalties(s, logits);
    if (json && st_json_complete(&s->json)) {
        return best_eog(s, logits);
    }
    if (greedy && !json) {
        return argmax(logits, n_vocab);
    }

    const size_t top_k = s->p.top_k > 0 ? (size_t)s->p.top_k : 0;
    cand_list l;
    if (json && (greedy || top_k > 0)) {
        /* Mask before top_k: pull candidates best-first, a chunk at a time,
         * and keep the valid ones until top_k of them are found. Only the
         * tokens pulled are checked against the automaton. */
        const size_t want = greedy ? 1 : top_k;
        size_t chunk = ST_MAX(2 * want, (size_t)64);
        size_t nk = 0;
        st_cand bound;
        bool have_bound = false;
        while (nk < want) {
            size_t got = select_below(logits, n_vocab, have_bound ? &bound : NULL, chunk, s->cand);
            for (size_t i = 0; i < got && nk < want; i++) {
                if (json_token_ok(s, s->cand[i].id)) {
                    s->kept[nk++] = s->cand[i];
                } else {
                    logits[s->cand[i].id] = -INFINITY;
                }
            }
            if (got < chunk) {
                break; /* every finite logit has been seen */
            }
            bound = s->cand[got - 1];
            have_bound = true;
            chunk = ST_MIN(chunk * 4, (size_t)n_vocab);
        }
        if (nk == 0) {
            return best_eog(s, logits); /* nothing in the vocabulary continues the value */
        }
        if (greedy) {
            return s->kept[0].id;
        }
        l = (cand_list){s->kept, nk, nk};
    } else if (!json && top_k > 0 && top_k < (size_t)n_vocab) {
        size_t got = select_below(logits, n_vocab, NULL, top_k, s->cand);
        if (got == 0) {
            return argmax(logits, n_vocab);
        }
        l = (cand_list){s->cand, got, got};
    } else {
        /* No top_k: everything that can still be drawn. */
        l = (cand_list){s->cand, 0, 0};
        for (int i = 0; i < n_vocab; i++) {
            float x = logits[i];
            if (x > -INFINITY) { /* drops -inf and NaN */
                s->cand[l.n].id = i;
                s->cand[l.n].logit = x < FLT_MAX ? x : FLT_MAX;
                l.n++;
            }
        }
        if (json) {
            /* every token must be checked */
            size_t nk = 0;
            for (size_t i = 0; i < l.n; i++) {
                if (json_token_ok(s, l.c[i].id)) {
                    s->kept[nk++] = l.c[i];
                } else {
                    logits[l.c[i].id] = -INFINITY;
                }
            }
            l = (cand_list){s->kept, nk, 0};
        }
        if (l.n == 0) {
            return json ? best_eog(s, logits) : argmax(logits, n_vocab);
        }
    }

    if (s->p.top_p < 1.0f && l.n > 1) {
        const double m = list_max(&l);
        double z = 0.0;
        for (size_t i = 0; i < l.n; i++) {
            z += exp((double)l.c[i].logit - m);
        }
        double cum = 0.0;
        size_t keep = l.n;
        for (size_t i = 0; i < l.n; i++) {
            ensure_sorted(&l, i + 1, 256);
            cum += exp((double)l.c[i].logit - m) / z;
            if (cum >= (double)s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        l.n = keep;
        l.sorted = ST_MIN(l.sorted, l.n);
    }

    if (s->p.min_p > 0.0f && l.n > 1) {
        const float thr = list_max(&l) + logf(s->p.min_p);
        if (l.sorted >= l.n) {
            size_t i = 1;
            while (i < l.n && l.c[i].logit >= thr) {
                i++;
            }
            l.n = i;
            l.sorted = i;
        } else {
            size_t j = 0;
            for (size_t i = 0; i < l.n; i++) {
                if (l.c[i].logit >= thr) {
                    l.c[j++] = l.c[i];
                }
            }
            l.n = j; /* the maximum always passes */
            l.sorted = ST_MIN(l.sorted, j);
        }
    }

    *out = l;
    return -1;
}

strata_token strata_sampler_sample(strata_sampler *s, float *logits)
{
    cand_list l;
    strata_token forced = prepare(s, logits, &l);
    return forced >= 0 ? forced : draw(s, &l);
}

size_t st_sampler_candidates(strata_sampler *s, float *logits, strata_token *ids, float *probs,
                             size_t cap)
{
    cand_list l;
    strata_token forced = prepare(s, logits, &l);
    if (forced >= 0) {
        if (cap > 0) {
            ids[0] = forced;
            probs[0] = 1.0f;
        }
        return 1;
    }
    ensure_sorted(&l, l.n, 0);
    const double m = list_max(&l);
    const double inv_t = 1.0 / (double)s->p.temperature;
    double sum = 0.0;
    for (size_t i = 0; i < l.n; i++) {
        sum += exp(((double)l.c[i].logit - m) * inv_t);
    }
    for (size_t i = 0; i < l.n && i < cap; i++) {
        ids[i] = l.c[i].id;
        probs[i] = (float)(exp(((double)l.c[i].logit - m) * inv_t) / sum);
    }
    return l.n;
}
