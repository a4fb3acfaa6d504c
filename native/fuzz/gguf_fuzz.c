/* libFuzzer harness for the GGUF reader: parse arbitrary bytes, then touch
 * everything a successful parse hands out (keys, strings, string arrays,
 * array data, tensor byte ranges) and the typed getters, so ASan sees any
 * view that points outside the input.
 *
 *   make -C native fuzz && native/build/fuzz/gguf_fuzz -max_total_time=60 CORPUS_DIR
 *
 * Seeds: the files in tests/fixtures/models or any small GGUF (the reader
 * only needs the header, so large seeds can be cut with `head -c 65536`).
 */
#include "gguf.h"

#include <stdlib.h>
#include <string.h>

/* Read the first and last byte of a view; the empty asm keeps the reads. */
static void touch(const void *p, uint64_t n)
{
    if (n > 0) {
        unsigned v = ((const uint8_t *)p)[0] + ((const uint8_t *)p)[n - 1];
        __asm__ volatile("" : : "r"(v));
    }
}

static const char *const KEYS[] = {
    "general.architecture", "general.alignment", "general.name", "llama.block_count",
    "llama.embedding_length", "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so reads past the end are heap overflows ASan sees */
    uint8_t *img = malloc(size ? size : 1);
    if (img == NULL) {
        return 0;
    }
    if (size > 0) {
        memcpy(img, data, size);
    }
    gguf_file *f = NULL;
    strata_error err = {0};
    strata_err rc = gguf_parse(img, size, &f, &err);
    if (rc != STRATA_OK) {
        if (f != NULL || err.msg[0] == '\0' || err.code != rc) {
            abort(); /* errors must come with a message and no file */
        }
        free(img);
        return 0;
    }
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        touch(kv->key.ptr, kv->key.len);
        if (kv->type == GGUF_T_STRING) {
            touch(kv->v.str.ptr, kv->v.str.len);
        } else if (kv->type == GGUF_T_ARRAY) {
            if (kv->v.arr.type == GGUF_T_STRING) {
                for (uint64_t j = 0; j < kv->v.arr.n; j++) {
                    touch(kv->v.arr.strs[j].ptr, kv->v.arr.strs[j].len);
                }
            } else {
                touch(kv->v.arr.data, kv->v.arr.n * gguf_type_size(kv->v.arr.type));
            }
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        touch(t->name.ptr, t->name.len);
        touch(t->data, t->nbytes);
        if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS || (uint64_t)(t->data - img) + t->nbytes > size) {
            abort();
        }
    }
    for (size_t k = 0; k < sizeof(KEYS) / sizeof(KEYS[0]); k++) {
        uint64_t u;
        int64_t s;
        double d;
        bool b;
        char buf[16];
        (void)gguf_get_u64(f, KEYS[k], &u);
        (void)gguf_get_i64(f, KEYS[k], &s);
        (void)gguf_get_f64(f, KEYS[k], &d);
        (void)gguf_get_bool(f, KEYS[k], &b);
        (void)gguf_get_str(f, KEYS[k], buf, sizeof(buf));
        (void)gguf_get_arr(f, KEYS[k], GGUF_T_STRING);
        (void)gguf_find_tensor(f, KEYS[k]);
    }
    gguf_close(f);
    free(img);
    return 0;
}
