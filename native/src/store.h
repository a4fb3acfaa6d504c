/* Split store: a model cut into one small GGUF file per weight part, so the
 * streamer can read a layer at a time.
 *
 *   <dir>/manifest.json   format, source (path, size, mtime), compression,
 *                         parts (file, bytes, checksum), "complete": true
 *   <dir>/meta.gguf       all metadata (hparams, tokenizer), no layer tensors
 *                         (rope_freqs, if any, lives here)
 *   <dir>/embed.gguf      token_embd.weight
 *   <dir>/blk.N.gguf      the tensors of block N, under their GGUF names
 *   <dir>/head.gguf       output_norm.weight + output.weight (a copy of
 *                         token_embd when the model ties them)
 *
 * Every file is written atomically (temp + fsync + rename). The manifest is
 * rewritten after each part with "complete": false and the parts done so
 * far, then once more with "complete": true: a store without the marker
 * never opens, and a split that was cut short resumes, keeping the parts
 * whose checksum matches.
 *
 * Compression (2-D weight matrices only; norms and biases are F32):
 *   none  tensors copied bit for bit (1-D vectors converted to F32, as the
 *         loader does anyway), so streamed logits equal resident ones
 *   8bit  Q8_0 (blocks of 32 int8 with an fp16 scale, 8.5 bits/weight)
 *   4bit  Q4_0 (blocks of 32 nibbles with an fp16 scale, 4.5 bits/weight)
 * A tensor already at that size or smaller (e.g. Q4_K under 8bit) is kept.
 */
#ifndef ST_STORE_H
#define ST_STORE_H

#include "model.h"

typedef enum {
    ST_COMPRESS_NONE = 0,
    ST_COMPRESS_8BIT,
    ST_COMPRESS_4BIT,
} st_compression;

/* "none", "8bit", "4bit"; false for anything else. */
bool st_compression_parse(const char *s, st_compression *out);
const char *st_compression_name(st_compression c);

typedef struct {
    st_compression compression;
    bool delete_original;      /* unlink the source GGUF once the store is complete */
    int64_t avail_bytes;       /* tests: free space to assume (< 0: ask statvfs) */
    int fail_after_parts;      /* tests: fail with STRATA_ERR_IO after writing this many parts (< 0: never) */
    int lock_wait_ms;          /* longest wait for another process splitting into the same folder
                                  (default 30 min), then STRATA_ERR_LIMIT */
    int n_parts_written;       /* out: parts written by this call (0 when the store was already complete) */
    int n_parts_kept;          /* out: parts kept from an interrupted split */
    bool waited;               /* out: another process held the split lock when this call began */
} st_split_opts;

void st_split_opts_default(st_split_opts *o);

/* Split the GGUF at src into store_dir (created if missing). A complete
 * store of the same source (size + mtime) and compression is left as is;
 * one of another source or compression is redone.
 *
 * Processes splitting into the same folder at once take turns: the call
 * holds an exclusive flock on <store_dir>/.split.lock (released when it
 * returns, or by the kernel if the process dies), and a second caller waits
 * for it (at most lock_wait_ms, then STRATA_ERR_LIMIT naming the holder's
 * pid) and then finds the store complete and reuses it. Opening a complete
 * store (st_store_open) takes no lock. */
strata_err st_store_split(const char *src, const char *store_dir, st_split_opts *opts, strata_error *err);

/* Bytes the parts would take for a compression (exact: tensor data plus
 * headers, rounded up), to check free space before writing. */
strata_err st_store_estimate(const char *src, st_compression c, uint64_t *bytes, strata_error *err);

/* ---------------------------------------------------------------- reader -- */

typedef struct {
    char name[32];          /* "meta", "embed", "blk.N", "head" */
    char path[4096];        /* full path */
    uint64_t offset;        /* where the part starts in the file (0 for split stores) */
    uint64_t bytes;         /* split store: file size; in place: the part's byte range */
    uint64_t checksum;      /* st_checksum of the file */
    bool has_checksum;      /* false in place (GGUF carries none) */
} st_store_part;

typedef struct {
    char dir[4000];         /* the store folder, or the GGUF itself when in_place */
    bool in_place;          /* parts are byte ranges of one GGUF (st_store_open_gguf) */
    st_compression compression;
    int n_layers;
    st_store_part meta;
    int n_parts;            /* n_layers + 2 */
    st_store_part *parts;   /* (n_parts) streamed parts in order: embed, blk.0 .. blk.L-1, head */
} st_store;

/* True when path is a folder holding a store manifest (manifest.json) and
 * no Hugging Face config.json (such a folder loads as a checkpoint). */
bool st_store_is_dir(const char *path);

/* Opens a complete store: the manifest must parse, carry "complete": true,
 * and list every part, whose file must exist with the listed size. The
 * meta file's checksum is verified; the others are verified as they load. */
strata_err st_store_open(const char *store_dir, st_store **out, strata_error *err);
void st_store_close(st_store *s);
/* A GGUF streamed in place, without splitting: each part (embeddings, a
 * block, the head) must be one byte range holding no other part's tensor,
 * its vectors F32 and the output matrix not tied to the embeddings.
 * STRATA_ERR_UNSUPPORTED says why a file does not qualify (split it then).
 * meta has no file of its own (the model's metadata comes from the GGUF). */
strata_err st_store_open_gguf(const char *path, st_store **out, strata_error *err);
/* Index in parts[] of a part id (ST_PART_EMBED, 0..L-1, ST_PART_HEAD(L)). */
int st_store_part_index(const st_store *s, int part);
/* Reads and checks the checksum of every part (slow: reads the whole store). */
strata_err st_store_verify(const st_store *s, strata_error *err);

/* 64-bit checksum: FNV-1a over little-endian 64-bit words (then the tail
 * bytes), fast enough to check every part as it streams in. */
uint64_t st_checksum(const void *data, size_t n);
/* The same in pieces (all but the last a multiple of 8 bytes), e.g. as the
 * chunks of a read come in. */
typedef struct {
    uint64_t h, n;
} st_checksum_state;
void st_checksum_begin(st_checksum_state *c);
void st_checksum_update(st_checksum_state *c, const void *data, size_t n);
uint64_t st_checksum_end(const st_checksum_state *c);
strata_err st_checksum_file(const char *path, uint64_t *sum, uint64_t *size, strata_error *err);

/* Defined in model.c: load metadata, hyper-parameters, tokenizer and
 * rope_freqs from a GGUF without binding any layer/embedding/output tensor
 * (m->layers stays NULL; the model is only usable with a streamed source). */
strata_err st_model_load_meta(const char *path, const strata_model_params *params, strata_model **out,
                              strata_error *err);

#endif
