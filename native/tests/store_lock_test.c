/* Split lock: two processes splitting the same GGUF into the same store at
 * once take turns (one writes every part, the other waits and reuses the
 * finished store, which equals a store split alone); a lock held too long
 * gives STRATA_ERR_LIMIT naming its holder; a dead holder's lock is free. */
#include "store.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Per-process folder, so concurrent runs on a shared machine do not collide. */
static char dir_base[64];

static const char *P(const char *suffix)
{
    static char bufs[64][192];
    static int next;
    if (next == 64) {
        fprintf(stderr, "P(): out of path buffers\n");
        abort();
    }
    char *b = bufs[next++];
    snprintf(b, sizeof(bufs[0]), "%s%s", dir_base, suffix);
    return b;
}

typedef struct {
    int rc;
    int written;
    int kept;
    int waited;
    double ms;
} split_result;

/* n processes start splitting src into dir at the same moment (a pipe is
 * their starting gun); their results come back in res. */
static void split_at_once(const char *src, const char *dir, st_compression c, int n, split_result *res)
{
    int go[2], back[2];
    CHECK(pipe(go) == 0 && pipe(back) == 0);
    pid_t pids[8];
    for (int k = 0; k < n; k++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            close(go[1]);
            close(back[0]);
            char ch;
            if (read(go[0], &ch, 1) != 1) {
                _exit(3);
            }
            st_split_opts so;
            st_split_opts_default(&so);
            so.compression = c;
            strata_error e = {0};
            const double t0 = st_now_ms();
            split_result r = {.rc = st_store_split(src, dir, &so, &e)};
            r.ms = st_now_ms() - t0;
            r.written = so.n_parts_written;
            r.kept = so.n_parts_kept;
            r.waited = so.waited;
            if (r.rc != STRATA_OK) {
                fprintf(stderr, "child %d: %s\n", k, e.msg);
            }
            /* one small write: atomic on a pipe */
            _exit(write(back[1], &r, sizeof(r)) == sizeof(r) ? 0 : 4);
        }
    }
    close(go[0]);
    close(back[1]);
    char fire[8] = {0};
    CHECK(write(go[1], fire, (size_t)n) == n);
    close(go[1]);
    for (int k = 0; k < n; k++) {
        res[k] = (split_result){.rc = -1};
        CHECK(read(back[0], &res[k], sizeof(res[k])) == sizeof(res[k]));
    }
    close(back[0]);
    for (int k = 0; k < n; k++) {
        int status;
        CHECK(waitpid(pids[k], &status, 0) == pids[k] && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}

/* Same parts (names, sizes, checksums) in both stores, and a.verify passes. */
static void check_same_store(const char *a, const char *b)
{
    strata_error err = {0};
    st_store *x = NULL, *y = NULL;
    CHECK_MSG(st_store_open(a, &x, &err) == STRATA_OK, "%s", err.msg);
    CHECK_MSG(st_store_open(b, &y, &err) == STRATA_OK, "%s", err.msg);
    if (x != NULL && y != NULL) {
        CHECK_MSG(st_store_verify(x, &err) == STRATA_OK, "%s", err.msg);
        CHECK(x->n_parts == y->n_parts && x->meta.checksum == y->meta.checksum);
        for (int i = 0; i < x->n_parts && i < y->n_parts; i++) {
            CHECK_MSG(x->parts[i].bytes == y->parts[i].bytes && x->parts[i].checksum == y->parts[i].checksum,
                      "part %s differs", x->parts[i].name);
        }
    }
    st_store_close(x);
    st_store_close(y);
}

static void test_two_processes(const char *src, st_compression c, const char *dir, const char *alone)
{
    split_result r[2];
    split_at_once(src, dir, c, 2, r);
    const int n_plans = 6 + 3; /* meta, embed, 6 blocks, head */
    CHECK_MSG(r[0].rc == STRATA_OK && r[1].rc == STRATA_OK, "rc %d %d", r[0].rc, r[1].rc);
    /* one did all the work; the other found it done (no part written twice) */
    const int a = r[0].written >= r[1].written ? 0 : 1, b = 1 - a;
    CHECK_MSG(r[a].written == n_plans && r[b].written == 0 && r[a].kept == 0 && r[b].kept == 0,
              "written %d + %d, kept %d + %d", r[0].written, r[1].written, r[0].kept, r[1].kept);
    CHECK_MSG(r[b].waited && !r[a].waited, "waited %d %d", r[a].waited, r[b].waited);
    CHECK_MSG(r[b].ms >= r[a].ms * 0.5, "the waiter returned after %.1f ms, the splitter took %.1f ms", r[b].ms,
              r[a].ms);
    printf("%s: two processes at once: one split in %.0f ms, the other waited %.0f ms and reused it\n",
           st_compression_name(c), r[a].ms, r[b].ms);
    /* the same store a lone split makes */
    st_split_opts so;
    st_split_opts_default(&so);
    so.compression = c;
    strata_error err = {0};
    CHECK_MSG(st_store_split(src, alone, &so, &err) == STRATA_OK, "%s", err.msg);
    check_same_store(dir, alone);
    /* four more at once on the finished store: all reuse it */
    split_result r4[4];
    split_at_once(src, dir, c, 4, r4);
    for (int k = 0; k < 4; k++) {
        CHECK(r4[k].rc == STRATA_OK && r4[k].written == 0);
    }
    check_same_store(dir, alone);
}

/* A lock held past lock_wait_ms: STRATA_ERR_LIMIT with the holder's pid; the
 * lock of a killed holder is free at once. */
static void test_timeout_and_dead_holder(const char *src)
{
    const char *dir = P("/held.store");
    CHECK(mkdir(dir, 0755) == 0);
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]);
        int fd = open(P("/held.store/.split.lock"), O_RDWR | O_CREAT, 0644);
        char txt[32];
        int n = snprintf(txt, sizeof(txt), "%d\n", (int)getpid());
        if (fd < 0 || flock(fd, LOCK_EX) != 0 || pwrite(fd, txt, (size_t)n, 0) != n ||
            write(ready[1], "x", 1) != 1) {
            _exit(3);
        }
        for (;;) {
            pause(); /* holds the lock until killed */
        }
    }
    close(ready[1]);
    char ch;
    CHECK(read(ready[0], &ch, 1) == 1);
    close(ready[0]);
    st_split_opts so;
    st_split_opts_default(&so);
    so.lock_wait_ms = 300;
    strata_error err = {0};
    const double t0 = st_now_ms();
    CHECK(st_store_split(src, dir, &so, &err) == STRATA_ERR_LIMIT);
    const double dt = st_now_ms() - t0;
    char want[64];
    snprintf(want, sizeof(want), "(pid %d)", (int)pid);
    CHECK_MSG(strstr(err.msg, "being split by another process") != NULL && strstr(err.msg, want) != NULL, "%s",
              err.msg);
    CHECK_MSG(dt >= 290 && dt < 5000, "gave up after %.0f ms", dt);
    CHECK(so.waited && so.n_parts_written == 0);
    CHECK(access(P("/held.store/manifest.json"), F_OK) != 0); /* nothing touched */
    /* the holder dies without unlocking: the next split goes ahead */
    kill(pid, SIGKILL);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    so.lock_wait_ms = 2000;
    CHECK_MSG(st_store_split(src, dir, &so, &err) == STRATA_OK, "%s", err.msg);
    CHECK(!so.waited && so.n_parts_written == 9);
    st_store *s = NULL;
    CHECK_MSG(st_store_open(dir, &s, &err) == STRATA_OK, "%s", err.msg);
    st_store_close(s);
}

int main(void)
{
    snprintf(dir_base, sizeof(dir_base), "/tmp/strata-store-lock-test-%d", (int)getpid());
    CHECK(mkdir(P(""), 0755) == 0);
    const char *src = P("/m.gguf");
    CHECK(test_mkmodel("--arch llama --type F16 --dim 256 --layers 6 --heads 4 --kv-heads 2 --ff 768", src));
    test_two_processes(src, ST_COMPRESS_NONE, P("/none.store"), P("/none-alone.store"));
    test_two_processes(src, ST_COMPRESS_4BIT, P("/q4.store"), P("/q4-alone.store"));
    test_timeout_and_dead_holder(src);
    if (st_test_failures == 0) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir_base);
        CHECK(system(cmd) == 0);
    }
    TEST_MAIN_END();
}
