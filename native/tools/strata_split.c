/* strata_split: cut a GGUF model into a split store for layer streaming,
 * or check / describe an existing store.
 *
 *   strata_split MODEL.gguf [STORE_DIR] [--compression none|8bit|4bit] [--delete-original]
 *   strata_split --verify STORE_DIR
 *   strata_split --info STORE_DIR [--budget BYTES]
 *   strata_split --read-speed STORE_DIR [--io-requests N] [--io-chunk-mib M]
 *
 * --read-speed drops the store's pages from the page cache and reads every
 * part once: buffered and with O_DIRECT, each one 64 MiB pread at a time
 * and 4 x 8 MiB preads in flight (as the streamer does, stream_io.h;
 * --io-requests / --io-chunk-mib change that pattern): the disk-read bound
 * of streaming is the fastest, printed as JSON.
 *
 * STORE_DIR defaults to MODEL.gguf.strata-store (-8bit / -4bit appended
 * when compressed). An interrupted split resumes where it stopped. */
#include "stream_io.h"
#include "streamer.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int usage(void)
{
    fprintf(stderr, "usage: strata_split MODEL.gguf [STORE_DIR] [--compression none|8bit|4bit] [--delete-original]\n"
                    "       strata_split --verify STORE_DIR\n"
                    "       strata_split --info STORE_DIR [--budget BYTES]\n"
                    "       strata_split --read-speed STORE_DIR [--io-requests N] [--io-chunk-mib M]\n");
    return 2;
}

static int info(const char *dir, uint64_t budget)
{
    strata_error err = {0};
    st_stream_opts o;
    st_stream_opts_default(&o);
    o.memory_budget = budget;
    strata_model *m;
    st_streamer *s;
    if (st_model_open_streamed(dir, NULL, &o, &m, &s, &err) != STRATA_OK) {
        fprintf(stderr, "strata_split: %s\n", err.msg);
        return 1;
    }
    st_store *st;
    if (st_store_open(dir, &st, &err) != STRATA_OK) {
        fprintf(stderr, "strata_split: %s\n", err.msg);
        st_model_close_streamed(m, s);
        return 1;
    }
    uint64_t total = 0;
    for (int i = 0; i < st->n_parts; i++) {
        total += st->parts[i].bytes;
    }
    int n_res, n_slots;
    uint64_t res_bytes, slot_bytes;
    st_streamer_layout(s, &n_res, &n_slots, &res_bytes, &slot_bytes);
    printf("store %s: %d layers, compression %s, weights %s, %.1f MiB in %d parts\n", dir, st->n_layers,
           st_compression_name(st->compression), m->weight_type, total / 1048576.0, st->n_parts);
    printf("budget %.1f MiB: %d parts resident (%.1f MiB), %d stream buffers (%.1f MiB)\n", budget / 1048576.0, n_res,
           res_bytes / 1048576.0, n_slots, slot_bytes / 1048576.0);
    st_store_close(st);
    st_model_close_streamed(m, s);
    return 0;
}

/* Reads every part once with its pages dropped first: buffered (pread of
 * 64 MiB) or O_DIRECT, one pread at a time or through io (several in
 * flight). Returns MiB/s, or -1. */
static double read_pass(const st_store *st, uint8_t *buf, size_t chunk, bool direct, st_io_team *io,
                        uint64_t *total)
{
    double ms = 0.0;
    *total = 0;
    for (int i = 0; i < st->n_parts; i++) {
        int fd = open(st->parts[i].path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return -1.0;
        }
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        if (direct) {
            close(fd);
            fd = open(st->parts[i].path, O_RDONLY | O_CLOEXEC | O_DIRECT);
            if (fd < 0) {
                return -1.0;
            }
        }
        double t0 = st_now_ms();
        uint64_t off = 0;
        ssize_t r = 0;
        if (io != NULL) {
            /* whole parts, as the streamer reads them (they fit the buffer) */
            const uint64_t n = st->parts[i].bytes;
            size_t short_at;
            r = n <= chunk && st_io_read(io, fd, buf, (size_t)((n + 4095) / 4096 * 4096), (size_t)n, 0, &short_at) == 0
                    ? 0
                    : -1;
            off = n;
        } else {
            while ((r = pread(fd, buf, chunk, (off_t)off)) > 0) {
                off += (uint64_t)r;
            }
        }
        ms += st_now_ms() - t0;
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
        if (r < 0) {
            return -1.0;
        }
        *total += off;
    }
    return *total / 1048576.0 / (ms / 1000.0);
}

static int read_speed(const char *dir, int io_requests, size_t io_chunk)
{
    strata_error err = {0};
    st_store *st;
    if (st_store_open(dir, &st, &err) != STRATA_OK) {
        fprintf(stderr, "strata_split: %s\n", err.msg);
        return 1;
    }
    size_t chunk = 64u << 20;
    for (int i = 0; i < st->n_parts; i++) {
        chunk = ST_MAX(chunk, (size_t)((st->parts[i].bytes + 4095) / 4096 * 4096));
    }
    uint8_t *buf = st_aligned_alloc(4096, chunk);
    st_io_team *io = NULL;
    if (buf == NULL || st_io_team_new(io_requests, io_chunk, &io, &err) != STRATA_OK) {
        if (err.msg[0] != '\0') {
            fprintf(stderr, "strata_split: %s\n", err.msg);
        }
        st_aligned_free(buf);
        st_store_close(st);
        return 1;
    }
    uint64_t total = 0;
    double buffered = read_pass(st, buf, 64u << 20, false, NULL, &total);
    double direct = read_pass(st, buf, 64u << 20, true, NULL, &total);
    double parallel = read_pass(st, buf, chunk, true, io, &total);
    double buffered_parallel = read_pass(st, buf, chunk, false, io, &total);
    printf("{\"bytes\": %llu, \"buffered_mbps\": %.1f, \"buffered_parallel_mbps\": %.1f, \"direct_mbps\": %.1f, "
           "\"direct_parallel_mbps\": %.1f, \"mbps\": %.1f}\n",
           (unsigned long long)total, buffered, buffered_parallel, direct, parallel,
           ST_MAX(ST_MAX(buffered, buffered_parallel), ST_MAX(direct, parallel)));
    st_io_team_free(io);
    st_aligned_free(buf);
    st_store_close(st);
    return buffered > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *src = NULL, *dir = NULL, *mode = NULL;
    uint64_t budget = 0;
    int io_requests = 4;
    size_t io_chunk = ST_IO_CHUNK_DEFAULT;
    st_split_opts o;
    st_split_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--compression") == 0 && i + 1 < argc) {
            if (!st_compression_parse(argv[++i], &o.compression)) {
                return usage();
            }
        } else if (strcmp(a, "--delete-original") == 0) {
            o.delete_original = true;
        } else if ((strcmp(a, "--verify") == 0 || strcmp(a, "--info") == 0 || strcmp(a, "--read-speed") == 0) &&
                   i + 1 < argc) {
            mode = a;
            dir = argv[++i];
        } else if (strcmp(a, "--io-requests") == 0 && i + 1 < argc) {
            io_requests = atoi(argv[++i]);
        } else if (strcmp(a, "--io-chunk-mib") == 0 && i + 1 < argc) {
            io_chunk = (size_t)strtoull(argv[++i], NULL, 10) << 20;
        } else if (strcmp(a, "--budget") == 0 && i + 1 < argc) {
            budget = strtoull(argv[++i], NULL, 10);
        } else if (a[0] == '-') {
            return usage();
        } else if (src == NULL && mode == NULL) {
            src = a;
        } else if (dir == NULL) {
            dir = a;
        } else {
            return usage();
        }
    }
    strata_error err = {0};
    if (mode != NULL && strcmp(mode, "--info") == 0) {
        return info(dir, budget);
    }
    if (mode != NULL && strcmp(mode, "--read-speed") == 0) {
        return read_speed(dir, io_requests, io_chunk);
    }
    if (mode != NULL) {
        st_store *s;
        if (st_store_open(dir, &s, &err) != STRATA_OK || st_store_verify(s, &err) != STRATA_OK) {
            fprintf(stderr, "strata_split: %s\n", err.msg);
            return 1;
        }
        printf("%s: %d parts OK\n", dir, s->n_parts + 1);
        st_store_close(s);
        return 0;
    }
    if (src == NULL) {
        return usage();
    }
    char def[4096];
    if (dir == NULL) {
        const char *suffix = o.compression == ST_COMPRESS_NONE ? "" : o.compression == ST_COMPRESS_8BIT ? "-8bit" : "-4bit";
        snprintf(def, sizeof(def), "%s.strata-store%s", src, suffix);
        dir = def;
    }
    double t0 = st_now_ms();
    if (st_store_split(src, dir, &o, &err) != STRATA_OK) {
        fprintf(stderr, "strata_split: %s\n", err.msg);
        return 1;
    }
    printf("strata_split: %s -> %s (%s): %d parts written, %d kept, %.1f s\n", src, dir,
           st_compression_name(o.compression), o.n_parts_written, o.n_parts_kept, (st_now_ms() - t0) / 1000.0);
    return 0;
}
