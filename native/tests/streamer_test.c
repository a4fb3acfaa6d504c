/* Streamer: streamed weights and logits are bit-identical to the resident
 * model's at every budget; compressed stores stay close; corrupt parts give
 * clear errors mid-stream; counters add up; peak RSS of a process streaming
 * a model several times its budget stays under budget + KV + overhead. */
#include "batch.h"
#include "streamer.h"
#include "test.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

/* Per-process folder, so concurrent runs on a shared machine do not collide. */
static char dir_base[64];

/* dir_base + suffix in a buffer of its own (never reused: callers keep them). */
static const char *P(const char *suffix)
{
    static char bufs[1024][192];
    static int next;
    if (next == 1024) {
        fprintf(stderr, "P(): out of path buffers\n");
        abort();
    }
    char *b = bufs[next++];
    snprintf(b, sizeof(bufs[0]), "%s%s", dir_base, suffix);
    return b;
}

static uint64_t store_bytes(const char *dir, uint64_t *blk_bytes)
{
    st_store *s;
    strata_error err;
    uint64_t sum = 0;
    if (st_store_open(dir, &s, &err) != STRATA_OK) {
        return 0;
    }
    for (int i = 0; i < s->n_parts; i++) {
        sum += s->parts[i].bytes;
    }
    *blk_bytes = s->parts[1].bytes;
    st_store_close(s);
    return sum;
}

static bool weight_eq(const st_weight *a, const st_weight *b)
{
    return a->type == b->type && a->n_in == b->n_in && a->n_out == b->n_out &&
           memcmp(a->data, b->data, st_row_bytes(a->type, a->n_in) * (size_t)a->n_out) == 0;
}

static bool vec_eq(const float *a, const float *b, int n)
{
    return (a == NULL) == (b == NULL) && (a == NULL || memcmp(a, b, (size_t)n * sizeof(float)) == 0);
}

/* Two passes over the cycle (plus an out-of-order start at the head):
 * every view equals the resident model's. */
static void check_views(strata_model *ref, strata_model *m)
{
    const st_hparams *hp = &ref->hp;
    st_part_source rs;
    st_part_source_resident(ref, &rs);
    strata_error err = {0};
    int order[128], n = 0;
    order[n++] = ST_PART_HEAD(hp->n_layers); /* out of order first */
    order[n++] = 2;
    for (int pass = 0; pass < 2; pass++) {
        order[n++] = ST_PART_EMBED;
        for (int l = 0; l < hp->n_layers; l++) {
            order[n++] = l;
        }
        order[n++] = ST_PART_HEAD(hp->n_layers);
    }
    for (int k = 0; k < n; k++) {
        st_part_view a, b;
        int part = order[k];
        CHECK(rs.acquire(rs.user, part, &a, &err) == STRATA_OK);
        CHECK_MSG(m->source.acquire(m->source.user, part, &b, &err) == STRATA_OK, "%s", err.msg);
        if (part == ST_PART_EMBED) {
            CHECK(weight_eq(&a.tok_embd, &b.tok_embd));
        } else if (part == ST_PART_HEAD(hp->n_layers)) {
            CHECK(vec_eq(a.out_norm, b.out_norm, hp->n_embd));
            CHECK(weight_eq(&a.output, &b.output));
        } else {
            const st_layer *x = a.layer, *y = b.layer;
            const int qd = hp->n_head * hp->head_dim, kvd = hp->n_head_kv * hp->head_dim;
            CHECK_MSG(weight_eq(&x->wq, &y->wq) && weight_eq(&x->wk, &y->wk) && weight_eq(&x->wv, &y->wv) &&
                          weight_eq(&x->wo, &y->wo) && weight_eq(&x->w_gate, &y->w_gate) &&
                          weight_eq(&x->w_up, &y->w_up) && weight_eq(&x->w_down, &y->w_down),
                      "layer %d matrices", part);
            CHECK_MSG(vec_eq(x->attn_norm, y->attn_norm, hp->n_embd) && vec_eq(x->ffn_norm, y->ffn_norm, hp->n_embd) &&
                          vec_eq(x->bq, y->bq, qd) && vec_eq(x->bk, y->bk, kvd) && vec_eq(x->bv, y->bv, kvd) &&
                          vec_eq(x->q_norm, y->q_norm, hp->head_dim) && vec_eq(x->k_norm, y->k_norm, hp->head_dim),
                      "layer %d vectors", part);
        }
        m->source.release(m->source.user, part);
    }
}

#define N_PROMPT 7
#define N_GEN 4

/* Prompt then a few single-token steps; all logits concatenated. */
static strata_err run_logits(strata_model *m, float *out, strata_error *err)
{
    const int nv = m->hp.n_vocab;
    strata_ctx_params cp;
    strata_ctx_params_default(&cp);
    cp.n_ctx = 32;
    cp.n_threads = 2;
    strata_ctx *ctx;
    strata_err rc = strata_ctx_new(m, &cp, &ctx, err);
    if (rc != STRATA_OK) {
        return rc;
    }
    strata_token toks[N_PROMPT] = {1, 17, 300, 42, 99, 7, 250};
    rc = strata_eval(ctx, toks, N_PROMPT, out, err);
    for (int g = 0; g < N_GEN && rc == STRATA_OK; g++) {
        strata_token t = (strata_token)((g * 37 + 11) % nv);
        rc = strata_eval(ctx, &t, 1, out + (size_t)(g + 1) * nv, err);
    }
    strata_ctx_free(ctx);
    return rc;
}

static void test_identical(const char *src, const char *dir, const char *what)
{
    strata_error err = {0};
    st_split_opts so;
    st_split_opts_default(&so);
    CHECK_MSG(st_store_split(src, dir, &so, &err) == STRATA_OK, "%s", err.msg);
    strata_model *ref = NULL;
    CHECK_MSG(strata_model_load(src, NULL, &ref, &err) == STRATA_OK, "%s", err.msg);
    if (ref == NULL) {
        return;
    }
    const size_t nl = (size_t)ref->hp.n_vocab * (N_GEN + 1);
    float *want = malloc(nl * sizeof(float)), *got = malloc(nl * sizeof(float));
    CHECK_MSG(run_logits(ref, want, &err) == STRATA_OK, "%s", err.msg);
    uint64_t blk;
    const uint64_t total = store_bytes(dir, &blk);
    const uint64_t budgets[] = {0, blk, total / 2, total + (1 << 20)};
    const char *names[] = {"0", "1 layer", "50%", "100%"};
    for (int b = 0; b < 5; b++) {
        st_stream_opts o;
        st_stream_opts_default(&o);
        o.memory_budget = budgets[b < 4 ? b : 0];
        if (b == 4) {
            o.prefetch = 0; /* synchronous reads */
        }
        strata_model *m = NULL;
        st_streamer *s = NULL;
        CHECK_MSG(st_model_open_streamed(dir, NULL, &o, &m, &s, &err) == STRATA_OK, "%s", err.msg);
        if (m == NULL) {
            continue;
        }
        int n_res, n_slots;
        uint64_t res_bytes, slot_bytes;
        st_streamer_layout(s, &n_res, &n_slots, &res_bytes, &slot_bytes);
        if (b == 0) {
            CHECK(n_res == 0 && n_slots == 2);
        } else if (b == 3) {
            CHECK(n_res == st_streamer_n_parts(s) && n_slots == 0);
        } else if (b == 4) {
            CHECK(n_res == 0 && n_slots == 1);
        } else if (b == 2) {
            CHECK(n_res == 0 || res_bytes + slot_bytes <= o.memory_budget);
        }
        check_views(ref, m);
        memset(got, 0, nl * sizeof(float));
        CHECK_MSG(run_logits(m, got, &err) == STRATA_OK, "%s", err.msg);
        CHECK_MSG(memcmp(got, want, nl * sizeof(float)) == 0, "%s: streamed logits differ at budget %s", what,
                  b < 4 ? names[b] : "0, no prefetch");
        /* counters: each streamed block loaded once per step at least */
        st_part_stats ps;
        st_streamer_stats(s, 2, &ps);
        if (n_res <= 2) {
            CHECK_MSG(ps.loads >= 1 + N_GEN, "loads %llu", (unsigned long long)ps.loads);
        } else {
            CHECK(ps.loads == 1);
        }
        CHECK(ps.stall_ms >= 0.0 && ps.compute_ms > 0.0 && ps.read_ms > 0.0);
        st_model_close_streamed(m, s);
    }
    printf("%s: streamed logits == resident at budgets 0, 1 layer, 50%%, 100%%, no prefetch\n", what);
    free(want);
    free(got);
    strata_model_free(ref);
}

/* Acquires and releases every part a step uses, `passes` times over. */
static void stream_passes(strata_model *m, int passes)
{
    strata_error err = {0};
    for (int pass = 0; pass < passes; pass++) {
        for (int p = 0; p <= m->hp.n_layers; p++) {
            st_part_view v;
            CHECK_MSG(m->source.acquire(m->source.user, p, &v, &err) == STRATA_OK, "%s", err.msg);
            m->source.release(m->source.user, p);
        }
    }
}

/* Drops a file's clean pages from the page cache (the state a cold read starts from). */
static void drop_cached(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

/* Pages of a file in the page cache (mincore over a mapping), or -1. */
static long cached_pages(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size == 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        return -1;
    }
    const long page = sysconf(_SC_PAGESIZE);
    const size_t n = ((size_t)sb.st_size + (size_t)page - 1) / (size_t)page;
    unsigned char *vec = malloc(n);
    long in = -1;
    if (vec != NULL && mincore(map, (size_t)sb.st_size, vec) == 0) {
        in = 0;
        for (size_t i = 0; i < n; i++) {
            in += vec[i] & 1;
        }
    }
    free(vec);
    munmap(map, (size_t)sb.st_size);
    return in;
}

/* Buffered streaming (the default) must not leave the streamed parts in the
 * page cache, or "streaming" would be reading RAM: after passes at a
 * one-layer budget, no block/head file has cached pages; with drop_cache
 * off they do (so the check can fail). Skipped where the page cache cannot
 * be dropped (tmpfs) or mincore is unavailable. */
static void test_page_cache_dropped(const char *dir)
{
    struct statfs fs;
    if (statfs(dir, &fs) == 0 && fs.f_type == TMPFS_MAGIC) {
        printf("page cache: skipped (store on tmpfs)\n");
        return;
    }
    strata_error err = {0};
    st_store *st;
    CHECK(st_store_open(dir, &st, &err) == STRATA_OK);
    if (st == NULL) {
        return;
    }
    for (int drop = 1; drop >= 0; drop--) {
        for (int i = 1; i < st->n_parts; i++) {
            drop_cached(st->parts[i].path);
        }
        st_stream_opts o;
        st_stream_opts_default(&o);
        CHECK(!o.direct_io && o.drop_cache); /* the defaults under test */
        o.drop_cache = drop;
        strata_model *m;
        st_streamer *s;
        CHECK_MSG(st_model_open_streamed(dir, NULL, &o, &m, &s, &err) == STRATA_OK, "%s", err.msg);
        if (m == NULL) {
            break;
        }
        stream_passes(m, 2);
        st_model_close_streamed(m, s); /* joins the reader: no read in flight */
        long cached = 0;
        for (int i = 1; i < st->n_parts; i++) { /* blocks and head; the embeddings are mapped */
            long c = cached_pages(st->parts[i].path);
            CHECK_MSG(c >= 0, "mincore %s", st->parts[i].path);
            cached += c > 0 ? c : 0;
        }
        if (drop) {
            CHECK_MSG(cached == 0, "%ld pages of streamed parts left in the page cache", cached);
        } else {
            CHECK_MSG(cached > 0, "without drop_cache the parts should stay cached (mincore says %ld pages)", cached);
        }
    }
    st_store_close(st);
    printf("page cache: streamed parts leave no cached pages\n");
}

static void test_counters(const char *dir)
{
    strata_error err = {0};
    st_stream_opts o;
    st_stream_opts_default(&o);
    strata_model *m;
    st_streamer *s;
    CHECK(st_model_open_streamed(dir, NULL, &o, &m, &s, &err) == STRATA_OK);
    st_store *st;
    CHECK(st_store_open(dir, &st, &err) == STRATA_OK);
    st_streamer_reset_stats(s);
    stream_passes(m, 3);
    for (int i = 1; i < st->n_parts; i++) {
        st_part_stats ps;
        st_streamer_stats(s, i, &ps);
        /* the reader may have read the first parts before the reset, and may
         * run ahead into the next pass */
        CHECK_MSG(ps.loads >= 2 && ps.loads <= 4, "part %d loads %llu", i, (unsigned long long)ps.loads);
        CHECK(ps.bytes_read == ps.loads * st->parts[i].bytes);
    }
    st_store_close(st);
    st_model_close_streamed(m, s);
}

/* hold(): a part the consumer keeps (GPU) leaves the read cycle; asking for
 * it again anyway puts it back and works. */
static void test_hold(const char *dir)
{
    strata_error err = {0};
    st_stream_opts o;
    st_stream_opts_default(&o);
    strata_model *m;
    st_streamer *s;
    CHECK(st_model_open_streamed(dir, NULL, &o, &m, &s, &err) == STRATA_OK);
    CHECK(m->source.hold != NULL);
    const int L = m->hp.n_layers;
    const int held = 1, idx = held + 1; /* store index: embeddings first */
    stream_passes(m, 1);
    m->source.hold(m->source.user, held);
    st_part_stats before, after, other;
    st_streamer_stats(s, idx, &before);
    for (int pass = 0; pass < 3; pass++) {
        for (int p = 0; p <= L; p++) {
            if (p == held) {
                continue;
            }
            st_part_view v;
            CHECK_MSG(m->source.acquire(m->source.user, p, &v, &err) == STRATA_OK, "%s", err.msg);
            m->source.release(m->source.user, p);
        }
    }
    st_streamer_stats(s, idx, &after);
    st_streamer_stats(s, idx + 1, &other);
    /* at most a read that was already under way when hold() came */
    CHECK_MSG(after.loads <= before.loads + 1, "held part read %llu more times",
              (unsigned long long)(after.loads - before.loads));
    CHECK(other.loads >= 3);
    st_part_view v;
    CHECK_MSG(m->source.acquire(m->source.user, held, &v, &err) == STRATA_OK, "%s", err.msg);
    CHECK(v.layer != NULL && v.layer->wq.data != NULL);
    m->source.release(m->source.user, held);
    st_model_close_streamed(m, s);
}

static float rel_rms(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += (double)(a[i] - ref[i]) * (a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return (float)sqrt(num / (den > 0 ? den : 1));
}

static void test_compressed(void)
{
    const char *src = P("/f32.gguf");
    CHECK(test_mkmodel("--arch llama --type F32 --dim 128 --layers 4 --heads 4 --kv-heads 2 --ff 256", src));
    strata_error err = {0};
    strata_model *ref = NULL;
    CHECK_MSG(strata_model_load(src, NULL, &ref, &err) == STRATA_OK, "%s", err.msg);
    if (ref == NULL) {
        return;
    }
    const size_t nl = (size_t)ref->hp.n_vocab * (N_GEN + 1);
    float *want = malloc(nl * sizeof(float)), *got = malloc(nl * sizeof(float));
    CHECK(run_logits(ref, want, &err) == STRATA_OK);
    const st_compression cs[2] = {ST_COMPRESS_8BIT, ST_COMPRESS_4BIT};
    /* random Gaussian weights are the worst case for block quantization */
    const float tol[2] = {0.06f, 0.5f};
    const char *same_seed[2] = {P("/q8same.gguf"), P("/q4same.gguf")};
    CHECK(test_mkmodel("--arch llama --type Q8_0 --dim 128 --layers 4 --heads 4 --kv-heads 2 --ff 256", same_seed[0]));
    CHECK(test_mkmodel("--arch llama --type Q4_0 --dim 128 --layers 4 --heads 4 --kv-heads 2 --ff 256", same_seed[1]));
    for (int c = 0; c < 2; c++) {
        char dir[256];
        snprintf(dir, sizeof(dir), "%s/f32-%s.store", dir_base, st_compression_name(cs[c]));
        st_split_opts so;
        st_split_opts_default(&so);
        so.compression = cs[c];
        CHECK_MSG(st_store_split(src, dir, &so, &err) == STRATA_OK, "%s", err.msg);
        st_stream_opts o;
        st_stream_opts_default(&o);
        strata_model *m;
        st_streamer *s;
        CHECK_MSG(st_model_open_streamed(dir, NULL, &o, &m, &s, &err) == STRATA_OK, "%s", err.msg);
        CHECK(strcasecmp(m->weight_type, cs[c] == ST_COMPRESS_8BIT ? "Q8_0" : "Q4_0") == 0);
        CHECK(run_logits(m, got, &err) == STRATA_OK);
        float e = rel_rms(got, want, nl);
        size_t agree = 0;
        for (int g = 0; g <= N_GEN; g++) {
            const float *a = got + (size_t)g * ref->hp.n_vocab, *b = want + (size_t)g * ref->hp.n_vocab;
            int ia = 0, ib = 0;
            for (int i = 1; i < ref->hp.n_vocab; i++) {
                ia = a[i] > a[ia] ? i : ia;
                ib = b[i] > b[ib] ? i : ib;
            }
            agree += ia == ib;
        }
        printf("compression %s: logits relative RMS error vs F32 %.4f (bound %.2f), argmax agrees %zu/%d\n",
               st_compression_name(cs[c]), e, tol[c], agree, N_GEN + 1);
        CHECK_MSG(e < tol[c], "%s error %g", st_compression_name(cs[c]), e);
        /* the same weights quantized by mkmodel give the very same logits */
        strata_model *direct = NULL;
        float *dl = malloc(nl * sizeof(float));
        CHECK(strata_model_load(same_seed[c], NULL, &direct, &err) == STRATA_OK);
        CHECK(direct != NULL && run_logits(direct, dl, &err) == STRATA_OK);
        CHECK_MSG(memcmp(dl, got, nl * sizeof(float)) == 0, "%s store != mkmodel %s", st_compression_name(cs[c]),
                  cs[c] == ST_COMPRESS_8BIT ? "Q8_0" : "Q4_0");
        strata_model_free(direct);
        free(dl);
        st_model_close_streamed(m, s);
    }
    free(want);
    free(got);
    strata_model_free(ref);
}

static void test_corrupt_midstream(const char *src)
{
    const char *dir = P("/corrupt.store");
    strata_error err = {0};
    st_split_opts so;
    st_split_opts_default(&so);
    CHECK(st_store_split(src, dir, &so, &err) == STRATA_OK);
    st_stream_opts o;
    st_stream_opts_default(&o);
    o.verify_every_load = true; /* the reader may have read blk.1 once before the flip */
    strata_model *m;
    st_streamer *s;
    CHECK(st_model_open_streamed(dir, NULL, &o, &m, &s, &err) == STRATA_OK);
    FILE *f = fopen(P("/corrupt.store/blk.1.gguf"), "r+b");
    CHECK(f != NULL);
    if (f == NULL) {
        st_model_close_streamed(m, s);
        return;
    }
    fseek(f, -5, SEEK_END);
    int c = fgetc(f);
    fseek(f, -5, SEEK_END);
    fputc(c ^ 1, f);
    fclose(f);
    strata_ctx *ctx;
    CHECK(strata_ctx_new(m, NULL, &ctx, &err) == STRATA_OK);
    strata_token t[2] = {1, 5};
    float *logits = malloc((size_t)m->hp.n_vocab * sizeof(float));
    CHECK(strata_eval(ctx, t, 2, logits, &err) == STRATA_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "blk.1.gguf") != NULL && strstr(err.msg, "checksum") != NULL, "%s", err.msg);
    /* the part file disappears mid-use */
    st_stream_opts_default(&o);
    strata_ctx_free(ctx);
    st_model_close_streamed(m, s);
    CHECK(st_store_split(src, P("/gone.store"), &so, &err) == STRATA_OK);
    CHECK(st_model_open_streamed(P("/gone.store"), NULL, &o, &m, &s, &err) == STRATA_OK);
    CHECK(unlink(P("/gone.store/blk.2.gguf")) == 0);
    CHECK(strata_ctx_new(m, NULL, &ctx, &err) == STRATA_OK);
    strata_err rc = strata_eval(ctx, t, 2, logits, &err);
    CHECK(rc == STRATA_ERR_IO);
    CHECK_MSG(strstr(err.msg, "blk.2.gguf") != NULL, "%s", err.msg);
    strata_ctx_free(ctx);
    st_model_close_streamed(m, s);
    free(logits);
}

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, strlen(key)) == 0) {
            v = atol(line + strlen(key) + 1);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    return v;
}

/* A child process streams a model several times larger than its budget;
 * its peak RSS growth must stay under budget + KV + overhead. */
static void test_peak_rss(void)
{
    const char *src = P("/big.gguf"), *dir = P("/big.store");
    CHECK(test_mkmodel("--arch llama --type Q8_0 --dim 1024 --layers 12 --heads 16 --kv-heads 4 --ff 2816 --threads 2",
                  src));
    strata_error err = {0};
    st_split_opts so;
    st_split_opts_default(&so);
    so.delete_original = true; /* keep /tmp small */
    CHECK_MSG(st_store_split(src, dir, &so, &err) == STRATA_OK, "%s", err.msg);
    uint64_t blk;
    const uint64_t total = store_bytes(dir, &blk);
    const uint64_t budget = 3 * blk;
    const int n_ctx = 64;
    const uint64_t kv = 12ull * 2 * n_ctx * 256 * 2; /* layers * K,V * ctx * kv_dim * f16 */
    const uint64_t overhead = 24ull << 20;
    int fds[2];
    CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        FILE *cr = fopen("/proc/self/clear_refs", "w");
        if (cr != NULL) {
            fputs("5", cr); /* reset VmHWM to the current RSS */
            fclose(cr);
        }
        long base = status_kb("VmRSS:");
        long result[3] = {-1, base, -1};
        st_stream_opts o;
        st_stream_opts_default(&o);
        o.memory_budget = budget;
        strata_model *m;
        st_streamer *s;
        strata_error e2;
        if (st_model_open_streamed(dir, NULL, &o, &m, &s, &e2) == STRATA_OK) {
            strata_ctx_params cp;
            strata_ctx_params_default(&cp);
            cp.n_ctx = n_ctx;
            cp.n_threads = 2;
            strata_ctx *ctx;
            float *logits = malloc((size_t)m->hp.n_vocab * sizeof(float));
            if (strata_ctx_new(m, &cp, &ctx, &e2) == STRATA_OK) {
                strata_token t[8] = {1, 2, 3, 4, 5, 6, 7, 8};
                bool ok = strata_eval(ctx, t, 8, logits, &e2) == STRATA_OK;
                for (int g = 0; ok && g < 3; g++) {
                    ok = strata_eval(ctx, &t[g], 1, logits, &e2) == STRATA_OK;
                }
                result[0] = ok ? 0 : 1;
                strata_ctx_free(ctx);
            }
            result[2] = status_kb("VmHWM:");
            free(logits);
            st_model_close_streamed(m, s);
        }
        if (write(fds[1], result, sizeof(result)) != sizeof(result)) {
            _exit(2);
        }
        _exit(0);
    }
    close(fds[1]);
    long result[3] = {-1, -1, -1};
    CHECK(read(fds[0], result, sizeof(result)) == sizeof(result));
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    CHECK(result[0] == 0);
    const double peak = (double)(result[2] - result[1]) * 1024.0;
    printf("peak RSS: model %.1f MiB, budget %.1f MiB (3 layers), KV %.1f MiB, peak growth %.1f MiB "
           "(bound: budget + KV + %llu MiB)\n",
           total / 1048576.0, budget / 1048576.0, kv / 1048576.0, peak / 1048576.0,
           (unsigned long long)(overhead >> 20));
    CHECK(total > 4 * budget);
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
    return; /* TSan's shadow memory is part of the RSS */
#endif
#endif
    CHECK_MSG(result[2] > 0 && peak < (double)(budget + kv + overhead), "peak %.1f MiB", peak / 1048576.0);
}

/* The public entry point: a GGUF path is split once beside the file (or in
 * STRATA_STORE_DIR, or a given store path), then streamed. */
static void test_public_api(const char *src)
{
    strata_error err = {0};
    strata_model *ref = NULL, *m = NULL;
    CHECK(strata_model_load(src, NULL, &ref, &err) == STRATA_OK);
    if (ref == NULL) {
        return;
    }
    const size_t nl = (size_t)ref->hp.n_vocab * (N_GEN + 1);
    float *want = malloc(nl * sizeof(float)), *got = malloc(nl * sizeof(float));
    CHECK(run_logits(ref, want, &err) == STRATA_OK);
    strata_stream_params sp;
    strata_stream_params_default(&sp);
    CHECK_MSG(strata_model_load_streamed(src, NULL, &sp, &m, &err) == STRATA_OK, "%s", err.msg);
    CHECK(access(P("/q8.gguf.strata-store/manifest.json"), F_OK) == 0);
    if (m != NULL) {
        CHECK(run_logits(m, got, &err) == STRATA_OK);
        CHECK(memcmp(got, want, nl * sizeof(float)) == 0);
        strata_model_info info;
        strata_model_get_info(m, &info);
        CHECK(info.n_layers == ref->hp.n_layers && info.n_params == ref->n_params);
        strata_model_free(m); /* frees the streamer too */
        m = NULL;
    }
    /* the store folder itself */
    sp.memory_budget = 1 << 30;
    CHECK_MSG(strata_model_load_streamed(P("/q8.gguf.strata-store"), NULL, &sp, &m, &err) == STRATA_OK, "%s",
              err.msg);
    if (m != NULL) {
        CHECK(run_logits(m, got, &err) == STRATA_OK);
        CHECK(memcmp(got, want, nl * sizeof(float)) == 0);
        strata_model_free(m);
        m = NULL;
    }
    /* strata_model_load on a store folder: streamed with every part resident */
    CHECK(st_store_is_dir(P("/q8.gguf.strata-store")) && !st_store_is_dir(src) && !st_store_is_dir(P("")));
    CHECK_MSG(strata_model_load(P("/q8.gguf.strata-store"), NULL, &m, &err) == STRATA_OK, "%s", err.msg);
    if (m != NULL) {
        CHECK(run_logits(m, got, &err) == STRATA_OK);
        CHECK_MSG(memcmp(got, want, nl * sizeof(float)) == 0, "strata_model_load(store) logits differ");
        strata_stream_stats ss[16];
        size_t np = strata_model_stream_stats(m, ss, 16, false);
        CHECK(np == (size_t)ref->hp.n_layers + 2);
        for (size_t i = 0; i < np && i < 16; i++) {
            CHECK_MSG(ss[i].resident && ss[i].loads == 1, "part %d resident %d loads %llu", ss[i].part,
                      ss[i].resident, (unsigned long long)ss[i].loads);
        }
        strata_model_info info;
        strata_model_get_info(m, &info);
        CHECK(info.n_layers == ref->hp.n_layers && info.n_params == ref->n_params);
        strata_model_free(m);
        m = NULL;
    }
    /* a folder with config.json is a Hugging Face checkpoint, even beside a manifest */
    const char *hf = P("/hf-like");
    CHECK(mkdir(hf, 0755) == 0);
    FILE *f = fopen(P("/hf-like/manifest.json"), "w");
    if (f != NULL) {
        fputs("{}", f);
        fclose(f);
    }
    f = fopen(P("/hf-like/config.json"), "w");
    if (f != NULL) {
        fputs("{\"architectures\": [\"LlamaForCausalLM\"]}", f);
        fclose(f);
    }
    CHECK(!st_store_is_dir(hf));
    CHECK(strata_model_load(hf, NULL, &m, &err) != STRATA_OK && m == NULL);
    CHECK_MSG(strstr(err.msg, "manifest") == NULL, "HF folder taken for a store: %s", err.msg);
    /* an interrupted store: a clear error */
    const char *part = P("/part.store");
    st_split_opts so;
    st_split_opts_default(&so);
    so.fail_after_parts = 2;
    CHECK(st_store_split(src, part, &so, &err) == STRATA_ERR_IO);
    CHECK(strata_model_load(part, NULL, &m, &err) == STRATA_ERR_FORMAT && m == NULL);
    CHECK_MSG(strstr(err.msg, "incomplete") != NULL, "%s", err.msg);
    /* STRATA_STORE_DIR, compression naming, custom path, bad options */
    setenv("STRATA_STORE_DIR", P(""), 1);
    sp.compression = "8bit";
    CHECK_MSG(strata_model_load_streamed(src, NULL, &sp, &m, &err) == STRATA_OK, "%s", err.msg);
    CHECK(access(P("/q8.gguf.strata-store-8bit/manifest.json"), F_OK) == 0); /* Q8_0 kept as is */
    strata_model_free(m);
    m = NULL;
    unsetenv("STRATA_STORE_DIR");
    sp.compression = "4bit";
    sp.store_path = P("/custom.store");
    CHECK_MSG(strata_model_load_streamed(src, NULL, &sp, &m, &err) == STRATA_OK, "%s", err.msg);
    CHECK(m != NULL && strcasecmp(m->weight_type, "Q4_0") == 0);
    strata_model_free(m);
    m = NULL;
    sp.compression = "2bit";
    CHECK(strata_model_load_streamed(src, NULL, &sp, &m, &err) == STRATA_ERR_ARG && m == NULL);
    sp.compression = NULL;
    sp.store_path = NULL;
    CHECK(strata_model_load_streamed(P("/missing.gguf"), NULL, &sp, &m, &err) == STRATA_ERR_IO && m == NULL);
    free(want);
    free(got);
    strata_model_free(ref);
}

/* A GGUF whose layers are contiguous streams in place, without a store. */
static void test_in_place(const char *src, const char *tied)
{
    strata_error err = {0};
    strata_model *ref = NULL;
    strata_model_params mp;
    strata_model_params_default(&mp);
    mp.use_mmap = false; /* read, not mapped: the page-cache check below sees only the streamer */
    CHECK(strata_model_load(src, &mp, &ref, &err) == STRATA_OK);
    if (ref == NULL) {
        return;
    }
    const size_t nl = (size_t)ref->hp.n_vocab * (N_GEN + 1);
    float *want = malloc(nl * sizeof(float)), *got = malloc(nl * sizeof(float));
    CHECK(run_logits(ref, want, &err) == STRATA_OK);
    st_store *st = NULL;
    CHECK_MSG(st_store_open_gguf(src, &st, &err) == STRATA_OK, "%s", err.msg);
    uint64_t total = 0;
    for (int i = 0; st != NULL && i < st->n_parts; i++) {
        total += st->parts[i].bytes;
        CHECK(st->parts[i].offset > 0 && !st->parts[i].has_checksum);
    }
    st_store_close(st);
    const uint64_t budgets[3] = {0, total / 2, total + 4096};
    for (int b = 0; b < 4; b++) {
        st_stream_opts o;
        st_stream_opts_default(&o);
        o.memory_budget = budgets[b % 3];
        o.direct_io = b < 3; /* and once through the page cache */
        if (b == 3) {
            drop_cached(src);
        }
        strata_model *m = NULL;
        st_streamer *s = NULL;
        CHECK_MSG(st_model_open_in_place(src, NULL, &o, &m, &s, &err) == STRATA_OK, "%s", err.msg);
        if (m == NULL) {
            continue;
        }
        CHECK(m->n_params == ref->n_params && strcmp(m->weight_type, ref->weight_type) == 0);
        check_views(ref, m);
        CHECK(run_logits(m, got, &err) == STRATA_OK);
        CHECK_MSG(memcmp(got, want, nl * sizeof(float)) == 0, "in place logits differ (budget %d)", b);
        st_model_close_streamed(m, s);
        if (b == 3) {
            /* buffered at a 0 budget: each part's range was dropped once read
             * (what may stay: the mapped embedding rows, the header and the
             * read-ahead past the last part) */
            struct statfs fs;
            const long cached = cached_pages(src);
            CHECK_MSG((statfs(src, &fs) == 0 && fs.f_type == TMPFS_MAGIC) ||
                          (cached >= 0 && (uint64_t)cached * 4096 < total / 2),
                      "%ld pages of the in-place GGUF left in the page cache", cached);
        }
    }
    /* through the public API */
    strata_stream_params sp;
    strata_stream_params_default(&sp);
    sp.in_place = true;
    strata_model *m = NULL;
    CHECK_MSG(strata_model_load_streamed(src, NULL, &sp, &m, &err) == STRATA_OK, "%s", err.msg);
    if (m != NULL) {
        CHECK(run_logits(m, got, &err) == STRATA_OK);
        CHECK(memcmp(got, want, nl * sizeof(float)) == 0);
        strata_model_free(m);
    }
    /* tied output: refused with the reason */
    m = NULL;
    CHECK(strata_model_load_streamed(tied, NULL, &sp, &m, &err) == STRATA_ERR_UNSUPPORTED && m == NULL);
    CHECK_MSG(strstr(err.msg, "ties") != NULL, "%s", err.msg);
    free(want);
    free(got);
    strata_model_free(ref);
}

int main(void)
{
    snprintf(dir_base, sizeof(dir_base), "/tmp/strata-streamer-test-%d", (int)getpid());
    CHECK(mkdir(P(""), 0755) == 0);
    const char *q8 = P("/q8.gguf");
    CHECK(test_mkmodel("--arch llama --type Q8_0 --dim 128 --layers 5 --heads 4 --kv-heads 2 --ff 256", q8));
    test_identical(q8, P("/q8.store"), "llama Q8_0");
    const char *qw = P("/qwen2.gguf");
    CHECK(test_mkmodel("--arch qwen2 --type F16 --dim 128 --layers 3 --heads 4 --kv-heads 2 --ff 256 --tied", qw));
    test_identical(qw, P("/qwen2.store"), "qwen2 F16 tied");
    const char *q3 = P("/qwen3.gguf");
    CHECK(test_mkmodel("--arch qwen3 --type Q4_K_M --dim 256 --layers 2 --heads 4 --kv-heads 2 --ff 512", q3));
    test_identical(q3, P("/qwen3.store"), "qwen3 Q4_K_M");
    test_counters(P("/q8.store"));
    test_page_cache_dropped(P("/q8.store"));
    test_hold(P("/q8.store"));
    test_public_api(q8);
    test_in_place(q8, qw);
    test_in_place(q3, qw);
    test_compressed();
    test_corrupt_midstream(q8);
    test_peak_rss();
    if (st_test_failures == 0) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir_base);
        CHECK(system(cmd) == 0);
    }
    TEST_MAIN_END();
}
