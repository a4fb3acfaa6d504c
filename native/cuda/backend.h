/* Compute backend of a model: CPU (the engine's own kernels) or CUDA.
 *
 * strata_model_load* call st_backend_init once the weights are bound: it
 * resolves STRATA_BACKEND / params->backend, probes the CUDA runtime
 * (cudart is linked statically; a machine without a driver or device just
 * answers "no"), checks that the GPU kernels handle every weight type, logs
 * one line on stderr (STRATA_LOG=0 silences it) and, for CUDA, creates the
 * model's GPU state (device, weight cache). Everything hangs off the model:
 * no global state.
 *
 * The CUDA half (runner.c, libstrata_cuda.a) exists only when the engine is
 * built with STRATA_CUDA=1; without it these entry points are stubs and
 * every model runs on the CPU. */
#ifndef ST_BACKEND_H
#define ST_BACKEND_H

#include "batch.h"

/* Pick and set up m's backend (m->backend, m->gpu, m->device_name). On
 * error the model is left on the CPU and the caller frees it. */
strata_err st_backend_init(strata_model *m, const strata_model_params *p, strata_error *err);
/* Release the model's GPU state (weights, device buffers). */
void st_backend_free(strata_model *m);

/* The CUDA side (runner.c). Only called when m->gpu != NULL. ------------- */

typedef struct st_cuda_model st_cuda_model;
typedef struct st_cuda_runner st_cuda_runner;

/* Probe: 0 and the device name / total memory when a CUDA device is usable,
 * else a reason ("no CUDA driver ...", "no CUDA device ..."). */
int st_cuda_probe(char *name, size_t name_cap, uint64_t *total_mem, char *why, size_t why_cap);
bool st_cuda_type_ok(int type);
strata_err st_cuda_model_new(strata_model *m, uint64_t vram_budget, st_cuda_model **out, strata_error *err);
void st_cuda_model_free(st_cuda_model *g);

/* KV cache of a context in GPU memory (managed, so host code that copies KV
 * rows between contexts keeps working): sets ctx->kv[l].k/v. */
strata_err st_cuda_kv_alloc(strata_ctx *ctx, size_t kv_bytes_per_layer, strata_error *err);
void st_cuda_kv_free(strata_ctx *ctx);

/* Device scratch + streaming buffers for steps of up to max_tokens rows. */
strata_err st_cuda_runner_new(const strata_model *m, int max_tokens, int n_ctx_max, st_pool *pool,
                              st_cuda_runner **out, strata_error *err);
void st_cuda_runner_free(st_cuda_runner *r);
/* st_forward_batch on the GPU (the batch is already checked; the caller
 * advances n_past and the history). */
strata_err st_cuda_forward_batch(st_cuda_runner *r, const st_part_source *src, st_batch_seq *seqs, int n_seqs,
                                 strata_error *err);

#endif
