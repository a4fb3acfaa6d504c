/* Token sampling: the public strata_sampler_* functions plus an internal
 * constructor over an abstract vocabulary, so tests can use a fake one.
 *
 * Chain, as llama.cpp's common sampler: repeat/presence/frequency penalties
 * over the last repeat_last_n accepted tokens -> JSON mask (json mode) ->
 * top_k -> top_p -> min_p -> temperature -> softmax -> draw from a seeded
 * xoshiro256** kept in the sampler. temperature <= 0 is greedy (argmax after
 * penalties and mask; ties go to the lowest id).
 *
 * Nothing sorts the whole vocabulary when top_k or min_p is set: candidates
 * are pulled in descending logit order by partial selection, and in json
 * mode only those pulled are checked against the JSON automaton.
 */
#ifndef ST_SAMPLER_H
#define ST_SAMPLER_H

#include "common.h"
#include "tokenizer.h"

/* What the sampler needs to know about the vocabulary. */
typedef struct st_vocab_view {
    const void *ctx;
    /* Output bytes of a token (not NUL-terminated); control tokens: len 0. */
    const char *(*bytes)(const void *ctx, strata_token tok, size_t *len);
    bool (*is_eog)(const void *ctx, strata_token tok);
    int n_vocab;
} st_vocab_view;

/* The view is copied; v->ctx must outlive the sampler. */
strata_err st_sampler_new_vocab(const st_vocab_view *v, const strata_sampler_params *p,
                                strata_sampler **out, strata_error *err);

/* A view of a loaded tokenizer (which must outlive the view). */
void st_vocab_view_from_tokenizer(const st_tokenizer *t, st_vocab_view *v);

/* Add a token to the penalty history only (e.g. prompt tokens); the JSON
 * state is not touched. */
void st_sampler_accept_history(strata_sampler *s, strata_token tok);

/* Forget the history and the JSON state; the random stream goes on. */
void st_sampler_reset(strata_sampler *s);

/* Restart the random stream (seed 0xFFFFFFFF: from the clock). */
void st_sampler_seed(strata_sampler *s, uint64_t seed);

/* Run the chain on logits (modified as by strata_sampler_sample) without
 * drawing: writes up to cap surviving tokens, best first, with their final
 * probabilities (after temperature); returns how many survive. A forced
 * choice (greedy, JSON complete) gives one token with probability 1. The
 * random stream is not used. */
size_t st_sampler_candidates(strata_sampler *s, float *logits, strata_token *ids, float *probs,
                             size_t cap);

#define ST_SAMPLER_SEED_RANDOM 0xFFFFFFFFu

#endif
