/* Parallel reads for the streamer: one part is read as several chunk
 * preads in flight at once (a few helper threads each read a chunk, then
 * the next, while the calling thread consumes the chunks that are in, e.g.
 * checksums them). A single large O_DIRECT pread keeps one
 * request outstanding at a time; virtual and NVMe disks deliver more with
 * several (measured on the 2-core dev VM: 790 MiB/s with one 64 MiB pread,
 * 1000-1350 MiB/s with four 8 MiB ones).
 *
 * Helpers sleep between parts and take no CPU while their pread waits for
 * the disk. */
#ifndef ST_STREAM_IO_H
#define ST_STREAM_IO_H

#include "common.h"

#include <sys/types.h>

typedef struct st_io_team st_io_team;

#define ST_IO_CHUNK_DEFAULT (8u << 20)

/* n_requests: preads in flight at once (>= 1; 1: no helper threads; else
 * n_requests helpers, the calling thread consuming what they read).
 * chunk: bytes per pread (a multiple of 4096 for O_DIRECT). */
strata_err st_io_team_new(int n_requests, size_t chunk, st_io_team **out, strata_error *err);
void st_io_team_free(st_io_team *t);
int st_io_team_requests(const st_io_team *t);

/* Called on the reading thread with the needed bytes of each chunk, in
 * order, as soon as that chunk is in, while later chunks are still being
 * read (e.g. to checksum a part without a pass of its own afterwards). */
typedef void (*st_io_consume_fn)(void *user, const uint8_t *data, size_t n);

/* Reads [off, off + cap) of fd into buf (cap and off 4096-aligned for an
 * O_DIRECT fd) and needs its first len bytes: the rest may lie past the end
 * of the file. Returns 0; an errno value (EINVAL: e.g. the file system
 * refuses O_DIRECT); or -1 when the file ends before len bytes, with
 * *short_at the bytes there were. t may be NULL (one pread at a time).
 * One caller at a time per team. */
int st_io_read(st_io_team *t, int fd, void *buf, size_t cap, size_t len, uint64_t off, size_t *short_at);
/* The same, passing the first len bytes to consume (when not NULL) in
 * order; nothing more is consumed after an error. */
int st_io_read_consume(st_io_team *t, int fd, void *buf, size_t cap, size_t len, uint64_t off, size_t *short_at,
                       st_io_consume_fn consume, void *user);

#endif
