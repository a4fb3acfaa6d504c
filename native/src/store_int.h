/* Internal to the store module: store.c (writer) and store_open.c (reader)
 * share the manifest format and the split plan. */
#ifndef ST_STORE_INT_H
#define ST_STORE_INT_H

#include "store.h"

#include <jansson.h>

#define ST_STORE_FORMAT "strata-store"
#define ST_STORE_VERSION 1
#define ST_STORE_MANIFEST "manifest.json"

/* Parts in write order: 0 meta, 1 embed, 2..L+1 blocks, L+2 head. */
typedef struct {
    char name[32];
    const gguf_tensor **tensors;
    size_t n, cap;
    uint64_t est_bytes;
} part_plan;

typedef struct {
    gguf_file *g;
    int n_layers;
    int n_plans;           /* n_layers + 3 */
    part_plan *plans;
    const gguf_tensor *tok_embd;
    bool tied;             /* no output.weight: head gets a copy of token_embd */
    st_compression c;
} split_plan;

/* Groups the source's tensors by part; sizes estimated for compression c. */
strata_err st_store_make_plan(const char *src, st_compression c, split_plan *sp, strata_error *err);
void st_store_plan_free(split_plan *sp);
/* Type a source tensor is stored as under compression c. */
st_type st_store_target_type(const gguf_tensor *t, st_compression c);

/* Parses <dir>/manifest.json (format and version checked); STRATA_ERR_IO
 * when missing, STRATA_ERR_FORMAT when malformed. */
strata_err st_store_load_manifest(const char *dir, json_t **out, strata_error *err);
/* Looks up a part record by name in a parsed manifest. */
bool st_store_manifest_part(json_t *root, const char *name, uint64_t *bytes, uint64_t *checksum);

#endif
