/* strata_convert: Hugging Face folder (config.json, tokenizer.json,
 * safetensors) -> GGUF.
 *
 *   strata_convert HF_DIR OUT.gguf [--type keep|F32|F16|BF16|Q8_0|Q4_K]
 */
#include "hf_import.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    st_hf_import_opts o;
    st_hf_import_opts_default(&o);
    const char *dir = NULL, *out = NULL;
    bool bad = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--type") == 0 && i + 1 < argc) {
            static const struct {
                const char *name;
                int type;
            } types[] = {{"keep", -1},         {"F32", ST_F32},   {"F16", ST_F16},
                         {"BF16", ST_BF16},    {"Q8_0", ST_Q8_0}, {"Q4_K", ST_Q4_K}};
            const char *t = argv[++i];
            size_t k = 0, n = sizeof(types) / sizeof(types[0]);
            while (k < n && strcmp(types[k].name, t) != 0) {
                k++;
            }
            bad = bad || k == n;
            o.out_type = k < n ? types[k].type : -1;
        } else if (dir == NULL) {
            dir = argv[i];
        } else if (out == NULL) {
            out = argv[i];
        } else {
            bad = true;
        }
    }
    if (bad || dir == NULL || out == NULL) {
        fprintf(stderr, "usage: strata_convert HF_DIR OUT.gguf [--type keep|F32|F16|BF16|Q8_0|Q4_K]\n");
        return 2;
    }
    strata_error err = {0};
    double t0 = st_now_ms();
    if (st_hf_import(dir, out, &o, &err) != STRATA_OK) {
        fprintf(stderr, "strata_convert: %s\n", err.msg);
        return 1;
    }
    fprintf(stderr, "strata_convert: wrote %s in %.1f s\n", out, (st_now_ms() - t0) / 1000.0);
    return 0;
}
