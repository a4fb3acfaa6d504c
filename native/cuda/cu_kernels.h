/* CUDA kernels of the GPU backend, as host-callable launchers.
 *
 * This header is plain C (compiled by cc and nvcc). Every launcher enqueues
 * work on `stream` (a cudaStream_t passed as void *) and returns 0, or a
 * cudaError_t code when the launch failed. Pointers are device pointers unless
 * named host_*. Matrices are row-major; a weight of type `type` is n_out rows
 * of n_in elements in GGUF block layout (st_row_bytes(type, n_in) bytes per
 * row), exactly the bytes the CPU engine uses, uploaded unchanged.
 *
 * Numerics: activations stay F32; weights are dequantized in registers and
 * accumulated in F32 (no activation quantization), so results differ from the
 * CPU path only by rounding (the GPU test states bounds per format).
 *
 * Requirements (kernels*.cu; invalid sizes return cudaErrorInvalidValue and
 * launch nothing): F32 data 4-byte aligned, F16/BF16 2-byte, quant weights
 * any alignment (8-byte aligned rows read faster); matmul y must not overlap
 * x; the k_caches / v_caches pointer arrays, seq, pos and ids live in device
 * memory; pos[t] >= 0; attention head_dim <= 256. */
#ifndef ST_CU_KERNELS_H
#define ST_CU_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Weight types the GPU matmul supports (values are st_type's). */
bool st_cu_type_supported(int type);

/* y[t][o] = sum_i x[t][i] * W[o][i]  for t < n_tok, o < n_out.
 * x: (n_tok, n_in) F32; y: (n_tok, n_out) F32 (overwritten). n_in is a
 * multiple of the type's block size. Batched: one weight read serves all
 * n_tok rows (n_tok up to a few thousand). */
int st_cu_matmul(int type, const void *w, int64_t n_in, int64_t n_out, const float *x, int n_tok, float *y,
                 void *stream);

/* out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w   (n_rows rows of n; out may
 * equal x). Sum in double like the CPU path. */
int st_cu_rmsnorm(float *out, const float *x, const float *w, int n_rows, int n, float eps, void *stream);

/* In-place RoPE of n_rows rows with n_heads heads of head_dim floats each
 * (row stride n_heads*head_dim). cache: (n_rows, n_rot) cos/sin pairs per row
 * as the CPU's rope_cache() computes them. neox: false = adjacent pairs
 * (ST_ROPE_NORM, Llama), true = halves (Qwen). */
int st_cu_rope(float *x, const float *cache, int n_rows, int n_heads, int head_dim, int n_rot, bool neox,
               void *stream);

/* y[t][i] += b[i] (bias), n_rows rows of n. */
int st_cu_add_bias(float *y, const float *b, int n_rows, int n, void *stream);

/* x[i] += y[i], n elements (residual). */
int st_cu_add(float *x, const float *y, size_t n, void *stream);

/* gate[i] = silu(gate[i]) * up[i], n elements. */
int st_cu_swiglu(float *gate, const float *up, size_t n, void *stream);

/* Store n_rows K and V rows into caches: row t goes to position pos[t] of the
 * cache k_cache[seq[t]] / v_cache[seq[t]] (arrays of device pointers, indexed
 * by a per-row sequence slot). kv_f16: caches hold F16, else F32. k, v:
 * (n_rows, kv_dim) F32. pos, seq: device int arrays. */
int st_cu_kv_store(void *const *k_caches, void *const *v_caches, const int *seq, const int *pos,
                   const float *k, const float *v, int n_rows, int kv_dim, bool kv_f16, void *stream);

/* Causal attention with grouped-query heads over each row's own cache:
 * for row t, query head h (KV head h / (n_head / n_head_kv)), positions
 * 0..pos[t] of k_caches[seq[t]] / v_caches[seq[t]]; scale 1/sqrt(head_dim);
 * softmax in F32. q: (n_rows, n_head*head_dim); out: same shape. */
int st_cu_attention(float *out, const float *q, void *const *k_caches, void *const *v_caches, const int *seq,
                    const int *pos, int n_rows, int n_head, int n_head_kv, int head_dim, bool kv_f16,
                    void *stream);

/* Gather embedding rows: out[t] = dequant(table row ids[t]), n_embd floats.
 * ids: device int array. */
int st_cu_embed(int type, const void *table, int64_t n_embd, const int *ids, int n_rows, float *out, void *stream);

/* Sampling helpers over n_rows rows of n_vocab logits: per row argmax
 * (greedy) into out_idx, and the row's max logit into out_max. */
int st_cu_argmax(const float *logits, int n_rows, int n_vocab, int *out_idx, float *out_max, void *stream);

#ifdef __cplusplus
}
#endif

#endif
