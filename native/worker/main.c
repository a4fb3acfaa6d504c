/* strata-worker: a long-running daemon that keeps a model loaded and serves
 * generate/chat/score/embed/tokenize/health/stats requests over nng
 * (ipc:// or tcp://), batching concurrent requests layer by layer.
 *
 *   strata-worker --model PATH --listen ipc:///tmp/strata.sock [--token SECRET]
 *     [--max-prompt-tokens N] [--max-new-tokens N] [--max-queue N]
 *     [--timeout-ms N] [--threads N] [--ctx N] [--max-batch N]
 *     [--step-tokens N] [--prefix-slots N] [--max-message-bytes N]
 *     [--stream on|off] [--stream-budget BYTES] [--stream-direct-io on|off] [--store DIR]
 *     [--tls-cert FILE --tls-key FILE [--tls-ca FILE]]   (tls+tcp:// URLs)
 *
 * The token may also come from the STRATA_WORKER_TOKEN environment variable
 * (keeps it out of `ps`). SIGTERM/SIGINT: stop taking work, let requests in
 * flight finish (30 s at most), exit 0. */
#include "server.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: strata-worker --model PATH [--listen URL] [--token SECRET]\n"
            "  --listen URL             ipc:///path, tcp://host:port or tls+tcp://host:port\n"
            "                           (default ipc:///tmp/strata.sock)\n"
            "  --token SECRET           require this token on every request (or STRATA_WORKER_TOKEN)\n"
            "  --max-prompt-tokens N    (default 4096)   --max-new-tokens N (default 1024)\n"
            "  --max-queue N            requests in flight (default 64)\n"
            "  --timeout-ms N           per request (default 120000)\n"
            "  --threads N              compute threads (default: all cores)\n"
            "  --ctx N                  KV cache tokens per sequence (default 2048)\n"
            "  --max-batch N            requests batched together (default 16)\n"
            "  --step-tokens N          token rows per batched step (default 256; 2048 with --stream on)\n"
            "  --prefix-slots N         finished KV caches kept for prefix reuse (default min(max-batch, 8); -1: none)\n"
            "  --max-message-bytes N    larger requests are dropped (default 4194304)\n"
            "  --stream on|off          stream weights layer by layer from a split store (default off)\n"
            "  --stream-budget BYTES    weights kept resident when streaming (0: one layer at a time)\n"
            "  --stream-direct-io on|off  read streamed layers with O_DIRECT (default off: buffered\n"
            "                           reads, each layer's pages dropped from the cache once read)\n"
            "  --store DIR              the split store (default: beside the model)\n"
            "  --tls-cert FILE --tls-key FILE   PEM certificate and key for a tls+tcp://host:port URL\n"
            "  --tls-ca FILE            with TLS: require client certificates signed by this CA (PEM)\n");
}

static bool parse_int(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    worker_opts o;
    worker_opts_default(&o);
    o.token = getenv("STRATA_WORKER_TOKEN");
    if (o.token != NULL && o.token[0] == '\0') {
        o.token = NULL;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "strata-worker: %s needs a value\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        long n = 0;
        struct {
            const char *name;
            int *dst;
            long min, max;
        } ints[] = {
            {"--max-prompt-tokens", &o.max_prompt_tokens, 1, 1 << 20},
            {"--max-new-tokens", &o.max_new_tokens, 1, 1 << 20},
            {"--max-queue", &o.max_queue, 1, 100000},
            {"--timeout-ms", &o.timeout_ms, 1, INT_MAX},
            {"--threads", &o.threads, 0, 1024},
            {"--ctx", &o.n_ctx, 16, 1 << 20},
            {"--max-batch", &o.max_batch, 1, 4096},
            {"--step-tokens", &o.step_tokens, 1, 1 << 16},
            {"--prefix-slots", &o.prefix_slots, -1, 4096},
        };
        bool done = false;
        for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
            if (strcmp(a, ints[k].name) == 0) {
                if (!parse_int(v, ints[k].min, ints[k].max, &n)) {
                    fprintf(stderr, "strata-worker: %s must be an integer in [%ld, %ld]\n", a, ints[k].min,
                            ints[k].max);
                    return 2;
                }
                *ints[k].dst = (int)n;
                done = true;
            }
        }
        if (done) {
            continue;
        }
        if (strcmp(a, "--model") == 0) {
            o.model_path = v;
        } else if (strcmp(a, "--listen") == 0) {
            o.listen = v;
        } else if (strcmp(a, "--token") == 0) {
            o.token = v[0] != '\0' ? v : NULL;
        } else if (strcmp(a, "--stream") == 0) {
            o.stream = strcmp(v, "1") == 0 || strcmp(v, "on") == 0 || strcmp(v, "true") == 0;
        } else if (strcmp(a, "--stream-direct-io") == 0) {
            o.stream_direct_io = strcmp(v, "1") == 0 || strcmp(v, "on") == 0 || strcmp(v, "true") == 0;
        } else if (strcmp(a, "--stream-budget") == 0) {
            if (!parse_int(v, 0, LONG_MAX, &n)) {
                fprintf(stderr, "strata-worker: --stream-budget must be a number of bytes\n");
                return 2;
            }
            o.stream_budget = (uint64_t)n;
        } else if (strcmp(a, "--tls-cert") == 0) {
            o.tls_cert = v;
        } else if (strcmp(a, "--tls-key") == 0) {
            o.tls_key = v;
        } else if (strcmp(a, "--tls-ca") == 0) {
            o.tls_ca = v;
        } else if (strcmp(a, "--store") == 0) {
            o.store_path = v;
        } else if (strcmp(a, "--max-message-bytes") == 0) {
            if (!parse_int(v, 256, 1L << 30, &n)) {
                fprintf(stderr, "strata-worker: --max-message-bytes must be in [256, 2^30]\n");
                return 2;
            }
            o.max_message_bytes = (size_t)n;
        } else {
            fprintf(stderr, "strata-worker: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (o.model_path == NULL) {
        fprintf(stderr, "strata-worker: --model is required\n");
        usage(stderr);
        return 2;
    }
    /* signals go to sigwait below, never to the worker threads */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    worker *w = NULL;
    strata_error err = {0};
    if (worker_start(&o, &w, &err) != STRATA_OK) {
        fprintf(stderr, "strata-worker: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "strata-worker: serving %s on %s%s\n", o.model_path, o.listen, o.token ? " (token required)" : "");
    printf("READY %s\n", o.listen);
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "strata-worker: signal %d: draining\n", sig);
    worker_drain(w, 30000);
    worker_stop(w);
    fprintf(stderr, "strata-worker: stopped\n");
    return 0;
}
