/* Parallel chunked reads (stream_io.h): every byte lands where it belongs
 * for any size, chunking and number of requests, buffered and O_DIRECT; a
 * file shorter than asked is reported with where it ended; bad arguments
 * are refused. */
#include "store.h"
#include "stream_io.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir_base[64];

static uint8_t byte_at(uint64_t i)
{
    return (uint8_t)((i * 2654435761u) >> 13);
}

static void write_file(const char *path, uint64_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f == NULL) {
        return;
    }
    for (uint64_t i = 0; i < n; i++) {
        fputc(byte_at(i), f);
    }
    fclose(f);
}

static bool same_as_file(const uint8_t *buf, uint64_t off, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] != byte_at(off + i)) {
            fprintf(stderr, "byte %zu (file offset %llu) differs\n", i, (unsigned long long)(off + i));
            return false;
        }
    }
    return true;
}

/* A consumer that checksums what it gets and checks it comes in order. */
typedef struct {
    const uint8_t *next;   /* where the next piece must start */
    size_t total;
    int calls;
    bool in_order;
    st_checksum_state sum;
} consumer;

static void consume(void *user, const uint8_t *data, size_t n)
{
    consumer *c = user;
    c->in_order &= data == c->next;
    c->next = data + n;
    c->total += n;
    c->calls++;
    st_checksum_update(&c->sum, data, n);
}

/* Reads [off, off + len) of a file of file_size bytes, as the streamer does:
 * from off rounded down to 4096, the length rounded up. */
static void check_read(st_io_team *t, const char *path, bool direct, uint64_t off, size_t len)
{
    const uint64_t start = off / 4096 * 4096;
    const size_t need = (size_t)(off + len - start), cap = (need + 4095) / 4096 * 4096;
    uint8_t *buf = st_aligned_alloc(4096, cap);
    int fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
    if (fd < 0 && direct) {
        fd = open(path, O_RDONLY); /* tmpfs: no O_DIRECT */
        direct = false;
    }
    CHECK(fd >= 0 && buf != NULL);
    size_t short_at = 99;
    consumer c = {.next = buf, .in_order = true};
    st_checksum_begin(&c.sum);
    int e = st_io_read_consume(t, fd, buf, direct ? cap : need, need, start, &short_at, consume, &c);
    CHECK_MSG(c.in_order && c.total == need, "consumed %zu of %zu in %d calls, in order %d", c.total, need, c.calls,
              c.in_order);
    CHECK(st_checksum_end(&c.sum) == st_checksum(buf, need));
    CHECK_MSG(e == 0, "read %zu at %llu (%d requests, direct %d): error %d", len, (unsigned long long)off,
              st_io_team_requests(t), direct, e);
    CHECK(short_at == 0);
    CHECK(same_as_file(buf + (off - start), off, len));
    close(fd);
    st_aligned_free(buf);
}

int main(void)
{
    snprintf(dir_base, sizeof(dir_base), "/tmp/strata-stream-io-test-%d", (int)getpid());
    CHECK(mkdir(dir_base, 0755) == 0);
    char path[128];
    snprintf(path, sizeof(path), "%s/data", dir_base);
    const uint64_t size = 3 * 65536 + 12345; /* not a multiple of 4096 */
    write_file(path, size);

    strata_error err = {0};
    st_io_team *t1 = NULL, *t4 = NULL, *t3 = NULL;
    CHECK(st_io_team_new(1, 8192, &t1, &err) == STRATA_OK);
    CHECK(st_io_team_new(4, 8192, &t4, &err) == STRATA_OK);
    CHECK(st_io_team_new(3, 4096, &t3, &err) == STRATA_OK);
    st_io_team *teams[] = {NULL, t1, t4, t3};
    const uint64_t offs[] = {0, 0, 4096, 5000, 65536 + 17, 0};
    const size_t lens[] = {size, 1, 8192, 70000, 100000, 8192 * 4};
    for (int k = 0; k < 4; k++) {
        for (int d = 0; d < 2; d++) {
            for (size_t j = 0; j < sizeof(offs) / sizeof(offs[0]); j++) {
                check_read(teams[k], path, d == 1, offs[j], lens[j]);
            }
        }
    }
    /* the team is reused for many reads */
    for (int i = 0; i < 200; i++) {
        check_read(t4, path, i % 2 == 0, (uint64_t)(i * 977) % 65536, 8192 * 3 + (size_t)i);
    }

    /* asking for more than the file holds: -1 and where it ended */
    const size_t cap = (size_t)((size + 8192 + 4095) / 4096 * 4096);
    uint8_t *buf = st_aligned_alloc(4096, cap);
    for (int k = 0; k < 4; k++) {
        int fd = open(path, O_RDONLY);
        size_t short_at = 0;
        CHECK(st_io_read(teams[k], fd, buf, cap, (size_t)size + 8192, 0, &short_at) == -1);
        CHECK_MSG(short_at == size, "short at %zu, file has %llu", short_at, (unsigned long long)size);
        close(fd);
    }
    /* after an error nothing more is consumed than what was read */
    for (int k = 0; k < 4; k++) {
        int fd = open(path, O_RDONLY);
        size_t short_at = 0;
        consumer c = {.next = buf, .in_order = true};
        st_checksum_begin(&c.sum);
        CHECK(st_io_read_consume(teams[k], fd, buf, cap, (size_t)size + 8192, 0, &short_at, consume, &c) == -1);
        CHECK_MSG(c.total <= size && c.in_order, "consumed %zu of a %llu-byte file", c.total,
                  (unsigned long long)size);
        close(fd);
    }
    /* a read error: a closed descriptor */
    size_t short_at = 0;
    CHECK(st_io_read(t4, -1, buf, 65536, 65536, 0, &short_at) == EBADF);
    st_aligned_free(buf);

    /* bad arguments */
    st_io_team *bad = NULL;
    CHECK(st_io_team_new(0, 8192, &bad, &err) == STRATA_ERR_ARG && bad == NULL);
    CHECK(st_io_team_new(4, 5000, &bad, &err) == STRATA_ERR_ARG && bad == NULL);
    CHECK(st_io_team_new(65, 8192, &bad, &err) == STRATA_ERR_ARG && bad == NULL);
    CHECK(st_io_team_requests(NULL) == 1 && st_io_team_requests(t4) == 4);

    st_io_team_free(t1);
    st_io_team_free(t4);
    st_io_team_free(t3);
    st_io_team_free(NULL);
    if (st_test_failures == 0) {
        unlink(path);
        rmdir(dir_base);
    }
    TEST_MAIN_END();
}
