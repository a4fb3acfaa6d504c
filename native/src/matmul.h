/* Matrix products of a weight matrix with a batch of activation rows.
 *
 * W is n_out rows of st_row_bytes(wtype, n_in) bytes (GGUF layout, used in
 * place). X is n_tok rows already converted to st_vec_dot_type(wtype) by
 * st_quantize_activations. Y is n_tok rows of n_out floats:
 *     Y[t][o] = dot(W row o, X row t).
 */
#ifndef ST_MATMUL_H
#define ST_MATMUL_H

#include "quant.h"

#include <stddef.h>
#include <stdint.h>

/* Computes the rows of Y that belong to thread ith of nth (a contiguous share
 * of n_out, split on 16-row boundaries); the caller runs the threads and every
 * thread passes the same arguments. simd_level as in st_vec_dot_get (-1 =
 * best). n_tok == 1 streams the weights once (memory bound); larger batches
 * repack 16 weight rows at a time and run register tiles over the tokens.
 *
 * Batch invariant: at a given simd_level, Y[t] is bit-identical whatever the
 * batch around token t (n_tok, its position) and whatever nth/ith.
 *
 * Batches of quantized weights take one heap allocation per call and thread
 * (a packed 16-row strip plus per-block activation data, ~1 MB at n_tok 512);
 * if it fails they fall back to the per-row kernels, so the call cannot
 * fail. The AVX-512 GEMV uses up to ~50 KB of stack. */
void st_matmul(int simd_level, st_type wtype, const void *W, int64_t n_out, int64_t n_in, const void *X,
               int64_t n_tok, float *Y, int ith, int nth);

/* Converts n_tok rows of n_in floats (row stride n_in) to the activation
 * format for weights of type wtype; out holds st_activation_bytes() bytes.
 * Q8_0 rows are quantized as llama.cpp's x86 CPU backend does, Q8_K rows with
 * ggml's reference, F16/BF16 with round-to-nearest-even. */
void st_quantize_activations(st_type wtype, const float *x, int64_t n_tok, int64_t n_in, void *out);

/* Bytes st_quantize_activations writes for n_tok rows of n_in. */
size_t st_activation_bytes(st_type wtype, int64_t n_tok, int64_t n_in);

#endif
