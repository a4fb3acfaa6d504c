/* Hugging Face checkpoint -> GGUF, as llama.cpp's convert_hf_to_gguf.py does
 * for the llama, qwen2 and qwen3 families.
 *
 * A folder with config.json, tokenizer.json (tokenizer_config.json optional:
 * chat template, bos/eos, add_bos) and model.safetensors or a sharded
 * model.safetensors.index.json (BF16/F16/F32) becomes one GGUF file that the
 * loader reads: llama.cpp's metadata keys and tensor names, the Q/K row
 * permutation of the llama architecture, rope scaling (linear, yarn, llama3
 * with its rope_freqs tensor), and the tokenizer (byte-level BPE -> "gpt2"
 * with the pre-tokenizer chosen from its regex; SentencePiece-style BPE with
 * byte fallback -> "llama" with scores from the merge ranks).
 *
 * Tensors are converted one at a time through the GGUF writer, so memory
 * stays at about one tensor; the output appears atomically. The source files'
 * names, sizes and mtimes are recorded under strata.source.* so a later call
 * can tell whether the GGUF is still up to date.
 */
#ifndef ST_HF_IMPORT_H
#define ST_HF_IMPORT_H

#include "common.h"
#include "gguf_write.h"

typedef struct {
    int out_type;            /* -1: keep 2-D weights as stored (BF16/F16/F32); else ST_F32, ST_F16,
                                ST_BF16, ST_Q8_0 or ST_Q4_K. 1-D tensors are always F32. */
    uint64_t free_bytes;     /* 0: ask statvfs; else pretend the target has this many bytes free (tests) */
} st_hf_import_opts;

void st_hf_import_opts_default(st_hf_import_opts *o);

strata_err st_hf_import(const char *dir, const char *out_gguf, const st_hf_import_opts *opts, strata_error *err);

/* Adds the tokenizer.* metadata of dir's tokenizer.json (+ tokenizer_config.json,
 * config.json) to w. vocab_size pads the token list with [PADn] (0: no padding). */
strata_err st_hf_add_tokenizer(const char *dir, gguf_writer *w, int64_t vocab_size, strata_error *err);

/* True when gguf_path exists and its strata.source.* record matches dir's
 * current files. */
bool st_hf_import_up_to_date(const char *dir, const char *gguf_path);

/* For strata_model_load: the GGUF for HF folder dir (<dir>/strata-model.gguf,
 * or $STRATA_STORE_DIR/<folder name>-<hash>.gguf), importing it first unless
 * an up-to-date one exists. */
strata_err st_hf_resolve(const char *dir, char *gguf_path, size_t cap, strata_error *err);

#endif
