/* Streamer: an st_part_source that reads a split store's parts from disk.
 *
 * Parts are used in a cycle: embed, blk.0 .. blk.L-1, head, embed, ...
 * Given a memory budget, the longest prefix of that order that fits stays
 * resident (read once at open); the rest streams through a ring of buffers
 * that a reader thread fills in cycle order, so part i+1 (and further ones
 * if the budget allows) loads while part i computes. After a streamed part
 * is read, its page cache is dropped (POSIX_FADV_DONTNEED) so every pass
 * really reads the disk (or reads with O_DIRECT, bypassing it), and each
 * part's checksum is checked the first time it loads.
 *
 * When not resident, the embedding part is mapped (only the rows a step
 * looks up are read) instead of going through the ring.
 *
 * Memory: resident parts + n_slots * (largest streamed block or head)
 * + the embedding rows touched, all bounded by the budget except that at
 * least 2 slots (1 with prefetch = 0) are always used.
 */
#ifndef ST_STREAMER_H
#define ST_STREAMER_H

#include "store.h"

typedef struct {
    uint64_t memory_budget;   /* bytes for weights; 0: one part at a time + prefetch */
    int prefetch;             /* parts loaded ahead of the one computing: -1 as many as the budget allows
                                 (at least 1), 0 none (synchronous reads) */
    bool verify;              /* check each part's checksum the first time it loads (default true) */
    bool verify_every_load;   /* ... and on every later load too (default false: it costs CPU) */
    bool drop_cache;          /* buffered reads: fadvise DONTNEED after each (default true) */
    bool direct_io;           /* read streamed parts with O_DIRECT when the file system allows
                                 (default false: buffered reads with read-ahead, pages dropped
                                 after each part; O_DIRECT saves the kernel copy, and measured
                                 within noise of buffered on this project's VM, see README) */
    int io_requests;          /* preads in flight while reading one part (default 4, in 8 MiB
                                 chunks; <= 1: one at a time): see stream_io.h */
} st_stream_opts;

void st_stream_opts_default(st_stream_opts *o);

typedef struct {
    uint64_t loads;           /* times the part was read */
    uint64_t bytes_read;
    double read_ms;           /* reader thread time in read() + checksum + parse */
    double stall_ms;          /* time acquire() waited for it */
    double compute_ms;        /* acquire() -> release() */
} st_part_stats;

typedef struct st_streamer st_streamer;

/* The streamer takes ownership of store (closed by st_streamer_free). */
strata_err st_streamer_new(st_store *store, const st_hparams *hp, const st_stream_opts *opts, st_streamer **out,
                           strata_error *err);
void st_streamer_free(st_streamer *s);
void st_streamer_source(st_streamer *s, st_part_source *out);

/* Stats per part, indexed like st_store.parts (embed, blocks, head). */
int st_streamer_n_parts(const st_streamer *s);
void st_streamer_stats(st_streamer *s, int idx, st_part_stats *out);
void st_streamer_reset_stats(st_streamer *s);
/* The streamer behind a part source, or NULL when it is not one. */
st_streamer *st_streamer_of(const st_part_source *src);
/* Public counters of every part (min(cap, parts) filled), zeroed after when
 * reset; returns the number of parts. */
size_t st_streamer_snapshot(st_streamer *s, strata_stream_stats *out, size_t cap, bool reset);
/* Layout: resident parts (a prefix of the cycle), ring slots and the bytes
 * they take. */
void st_streamer_layout(const st_streamer *s, int *n_resident, int *n_slots, uint64_t *resident_bytes,
                        uint64_t *slot_bytes);

/* Opens store_dir, loads its metadata into a model with no weights of its
 * own and makes a streamer its part source (m->source). Free with
 * st_model_close_streamed (the model must be freed before the streamer). */
strata_err st_model_open_streamed(const char *store_dir, const strata_model_params *mp, const st_stream_opts *opts,
                                  strata_model **model, st_streamer **streamer, strata_error *err);
void st_model_close_streamed(strata_model *model, st_streamer *streamer);
/* The same for a GGUF streamed in place (st_store_open_gguf). */
strata_err st_model_open_in_place(const char *gguf_path, const strata_model_params *mp, const st_stream_opts *opts,
                                  strata_model **model, st_streamer **streamer, strata_error *err);

#endif
