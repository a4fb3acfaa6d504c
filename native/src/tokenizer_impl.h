/* Internals shared by the tokenizer's modules: tokenizer_vocab.c (loading a
 * GGUF vocabulary, lookup tables), tokenizer_merge.c (SPM and BPE merge
 * sessions) and tokenizer.c (special-token partition, the public calls).
 * Not part of the public API. */
#ifndef ST_TOKENIZER_IMPL_H
#define ST_TOKENIZER_IMPL_H

#include "tokenizer.h"
#include "unicode.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* llama_token_attr bits */
enum {
    ATTR_UNDEFINED = 0,
    ATTR_UNKNOWN = 1 << 0,
    ATTR_UNUSED = 1 << 1,
    ATTR_NORMAL = 1 << 2,
    ATTR_CONTROL = 1 << 3,
    ATTR_USER_DEFINED = 1 << 4,
    ATTR_BYTE = 1 << 5,
    ATTR_NORMALIZED = 1 << 6,
    ATTR_LSTRIP = 1 << 7,
    ATTR_RSTRIP = 1 << 8,
};

typedef enum { VOCAB_SPM, VOCAB_BPE } vocab_kind;

struct st_tokenizer {
    vocab_kind kind;
    st_pretok pre;
    int32_t n_vocab;

    char *text;           /* every token's text, each NUL-terminated */
    uint32_t *text_off;   /* (n_vocab) offset into text */
    uint32_t *text_len;   /* (n_vocab) bytes, NUL excluded */
    float *score;         /* (n_vocab) SPM merge priority */
    uint16_t *attr;       /* (n_vocab) ATTR_* bits */
    uint8_t *eog;         /* (n_vocab) 1 if end-of-generation */
    char *piece;          /* every token rendered with special=true, NUL-terminated */
    uint32_t *piece_off;  /* (n_vocab) */
    uint32_t *piece_len;  /* (n_vocab) */

    uint32_t *tok_slots;  /* (tok_mask + 1) text -> id + 1, 0 = empty; open addressing */
    size_t tok_mask;

    char *merge_text;     /* merges' "first second" strings, concatenated */
    uint32_t *merge_off;  /* (n_merges) */
    uint32_t *merge_len1; /* (n_merges) bytes of first */
    uint32_t *merge_len2; /* (n_merges) bytes of second */
    uint32_t n_merges;
    uint32_t *merge_slots; /* (merge_mask + 1) (first, second) -> rank + 1 */
    size_t merge_mask;

    strata_token byte_tok[256]; /* SPM byte fallback: <0xXX> (or the byte itself), -1 if none */
    strata_token *specials;     /* (n_specials) control/user-defined/unknown, longest text first */
    size_t n_specials;

    strata_token bos, eos, eot, eom, unk, sep, pad, mask;
    strata_token fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    bool add_bos, add_eos, add_space_prefix, clean_spaces, ignore_merges;

    char *chat_template; /* NULL if absent */
};

static inline const char *tok_text(const st_tokenizer *t, strata_token id)
{
    return t->text + t->text_off[id];
}

/* ----------------------------------------------------- growable buffers -- */
/* Appends set oom (and drop the data) when memory runs out. */

typedef struct {
    strata_token *v;
    size_t n, cap;
    bool oom;
} tokvec;

void st_tv_push(tokvec *tv, strata_token tok);

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} strbuf;

void st_sb_append(strbuf *sb, const char *s, size_t n);

/* ------------------------------------------------------------- lookups -- */

/* Id of the token whose text is s[0..n), or -1. */
strata_token st_tok_find_text(const st_tokenizer *t, const char *s, size_t n);
/* Rank of the BPE merge (a, b), or -1. */
int st_tok_bpe_rank(const st_tokenizer *t, const char *a, size_t na, const char *b, size_t nb);
/* llama_vocab::impl::token_to_piece(special = true), uncached. */
void st_tok_render_piece(const st_tokenizer *t, strata_token id, strbuf *out);

/* ----------------------------------------------------- merge sessions -- */

typedef struct {
    int prev, next; /* neighbours in the current segmentation, -1 at the ends */
    size_t off, n;  /* bytes of the word buffer; n == 0 once merged away */
} symbol;

typedef struct {
    int left, right;
    float score; /* SPM: score of the merged token, highest first */
    int rank;    /* BPE: merge rank, lowest first */
    size_t size; /* bytes of left + right when queued; stale entries differ */
} bigram;

/* Scratch space of one st_tokenize call, reused across fragments/words. */
typedef struct {
    strbuf buf;       /* text being segmented */
    symbol *sym;      /* (sym_cap) */
    size_t sym_cap, n_sym;
    bigram *heap;     /* (heap_cap) binary heap */
    size_t heap_cap, n_heap;
    bool spm;         /* heap order: SPM (score) or BPE (rank) */
    uint32_t *cpts;   /* (cpts_cap) BPE fragment code points */
    size_t cpts_cap;
    size_t *lens;     /* (cpts_cap) BPE word lengths */
    bool oom;
} session;

void st_tok_session_free(session *s);
/* SentencePiece merges of one raw-text fragment (prefix: add the leading
 * space marker) appended to out. */
void st_tok_spm(const st_tokenizer *t, session *s, const char *text, size_t len, bool prefix, tokvec *out);
/* Byte-level BPE of one raw-text fragment (pre-tokenized by t->pre). */
void st_tok_bpe(const st_tokenizer *t, session *s, const char *text, size_t len, tokvec *out);

#endif
