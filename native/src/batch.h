/* Layer-major batched forward pass.
 *
 * One step runs every sequence in the batch through layer i before layer i+1
 * is touched, so a streamed layer is loaded once per step however many
 * sequences share it (FlexGen's zig-zag order). Token rows of all sequences
 * are stacked into one matrix, so the weight matmuls are one GEMM per layer;
 * attention runs per sequence over that sequence's own KV cache (strata_ctx).
 *
 * Weights come from a part source: resident (the model's mmap'd tensors) or a
 * streamer that loads parts from disk and may block in acquire() until the
 * part is ready. Parts: ST_PART_EMBED (token embeddings), blocks 0..L-1, and
 * ST_PART_HEAD(L) (output norm + output matrix). */
#ifndef ST_BATCH_H
#define ST_BATCH_H

#include "forward.h"

/* One sequence's share of a step. */
typedef struct {
    strata_ctx *ctx;          /* its KV cache; n_past advances by n on success */
    const strata_token *toks; /* n tokens at positions ctx->n_past .. */
    int n;
    float *logits;            /* NULL, or n_vocab floats for the last token, or
                                 n * n_vocab when all_logits */
    bool all_logits;
    float *embd;              /* NULL, or n * n_embd floats: the final-norm
                                 hidden state of every token (embeddings) */
} st_batch_seq;

/* Scratch for steps of up to max_tokens stacked rows, and the thread pool. */
typedef struct st_runner st_runner;

strata_err st_runner_new(const strata_model *m, int max_tokens, int n_ctx_max, st_pool *pool, st_runner **out,
                         strata_error *err);
void st_runner_free(st_runner *r);
int st_runner_max_tokens(const st_runner *r);

/* Runs one step. Sum of seqs[i].n must be <= max_tokens, every ctx must be
 * distinct, of this model, with room for its tokens (else STRATA_ERR_LIMIT
 * before anything runs). */
strata_err st_forward_batch(st_runner *r, const st_part_source *src, st_batch_seq *seqs, int n_seqs,
                            strata_error *err);

/* The stacked rows (row numbers over all sequences' tokens) that want an
 * output after the head (logits or an embedding), in order, into idx;
 * returns how many. The CPU and GPU passes gather the same rows. */
int st_batch_out_rows(const st_batch_seq *seqs, int n_seqs, int *idx);
/* Copy the head's outputs back: row i of embd_rows (normed hidden states,
 * n_embd floats) and of logit_rows (n_vocab floats) belong to the i-th
 * output row of st_batch_out_rows. logit_rows may be NULL when no sequence
 * asked for logits. */
void st_batch_hand_back(st_batch_seq *seqs, int n_seqs, const float *embd_rows, const float *logit_rows, int n_embd,
                        int n_vocab);

#endif
