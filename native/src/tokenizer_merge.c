/* Tokenizer merge sessions: SentencePiece (score-ordered bigram merges with
 * byte fallback) and byte-level BPE (rank-ordered merges over pre-tokenized
 * words), following llama.cpp's llm_tokenizer_spm_session and
 * llm_tokenizer_bpe_session step by step. */
#include "tokenizer_impl.h"
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

void st_tok_session_free(session *s)
{
    free(s->buf.p);
    free(s->sym);
    free(s->heap);
    free(s->cpts);
    free(s->lens);
}

/* a comes out of the queue after b */
static bool bigram_after(const session *s, const bigram *a, const bigram *b)
{
    if (s->spm) {
        return a->score < b->score || (a->score == b->score && a->left > b->left);
    }
    return a->rank > b->rank || (a->rank == b->rank && a->left > b->left);
}

static void heap_push(session *s, bigram bg)
{
    if (s->n_heap == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
        bigram *h = realloc(s->heap, cap * sizeof(*h));
        if (h == NULL) {
            s->oom = true;
            return;
        }
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bigram_after(s, &s->heap[parent], &bg)) {
            break;
        }
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = bg;
}

static bigram heap_pop(session *s)
{
    bigram top = s->heap[0];
    bigram last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && bigram_after(s, &s->heap[c], &s->heap[c + 1])) {
            c++;
        }
        if (!bigram_after(s, &last, &s->heap[c])) {
            break;
        }
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n > 0) {
        s->heap[i] = last;
    }
    return top;
}

static bool reserve_symbols(session *s, size_t n)
{
    if (n > s->sym_cap) {
        symbol *v = realloc(s->sym, n * sizeof(*v));
        if (v == NULL) {
            s->oom = true;
            return false;
        }
        s->sym = v;
        s->sym_cap = n;
    }
    return true;
}

/* Split buf into one symbol per UTF-8 sequence (by lead byte, clipped to
 * the end, as llama.cpp does even for malformed text). */
static bool make_symbols(session *s)
{
    const char *p = s->buf.p;
    size_t n = s->buf.n;
    if (!reserve_symbols(s, n)) {
        return false;
    }
    s->n_sym = 0;
    for (size_t off = 0; off < n;) {
        size_t len = ST_MIN(st_utf8_len((uint8_t)p[off]), n - off);
        int idx = (int)s->n_sym;
        s->sym[s->n_sym++] = (symbol){idx - 1, off + len == n ? -1 : idx + 1, off, len};
        off += len;
    }
    return true;
}

/* Merge the queued bigram if it is still current; returns its left symbol
 * or -1 if the entry was stale. */
static int apply_bigram(session *s, bigram bg)
{
    symbol *l = &s->sym[bg.left], *r = &s->sym[bg.right];
    if (l->n == 0 || r->n == 0 || l->n + r->n != bg.size) {
        return -1;
    }
    l->n += r->n;
    r->n = 0;
    l->next = r->next;
    if (r->next >= 0) {
        s->sym[r->next].prev = bg.left;
    }
    return bg.left;
}

/* --------------------------------------------------------------- SPM -- */

static void spm_try_add_bigram(const st_tokenizer *t, session *s, int left, int right)
{
    if (left == -1 || right == -1) {
        return;
    }
    size_t size = s->sym[left].n + s->sym[right].n;
    strata_token tok = st_tok_find_text(t, s->buf.p + s->sym[left].off, size);
    if (tok < 0) {
        return;
    }
    heap_push(s, (bigram){left, right, t->score[tok], 0, size});
}

/* llm_tokenizer_spm_session::tokenize on one raw fragment. Symbols that are
 * not tokens fall back to byte tokens (to <unk> if even those are missing,
 * where llama.cpp would throw). llama.cpp's rev_merge re-segmentation never
 * applies: merged symbols are tokens by construction. */
void st_tok_spm(const st_tokenizer *t, session *s, const char *text, size_t len, bool prefix,
                         tokvec *out)
{
    s->buf.n = 0;
    if (prefix) {
        st_sb_append(&s->buf, "\xe2\x96\x81", 3);
    }
    size_t run = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || text[i] == ' ') {
            st_sb_append(&s->buf, text + run, i - run);
            if (i < len) {
                st_sb_append(&s->buf, "\xe2\x96\x81", 3);
            }
            run = i + 1;
        }
    }
    if (s->buf.oom || !make_symbols(s) || s->n_sym == 0) {
        s->oom |= s->buf.oom;
        return;
    }

    s->spm = true;
    s->n_heap = 0;
    for (size_t i = 1; i < s->n_sym; i++) {
        spm_try_add_bigram(t, s, (int)i - 1, (int)i);
    }
    while (s->n_heap > 0 && !s->oom) {
        int left = apply_bigram(s, heap_pop(s));
        if (left >= 0) {
            spm_try_add_bigram(t, s, s->sym[left].prev, left);
            spm_try_add_bigram(t, s, left, s->sym[left].next);
        }
    }

    for (int i = 0; i != -1; i = s->sym[i].next) {
        const char *p = s->buf.p + s->sym[i].off;
        strata_token tok = st_tok_find_text(t, p, s->sym[i].n);
        if (tok >= 0) {
            st_tv_push(out, tok);
            continue;
        }
        for (size_t j = 0; j < s->sym[i].n; j++) {
            strata_token b = t->byte_tok[(uint8_t)p[j]];
            if (b >= 0 || t->unk >= 0) {
                st_tv_push(out, b >= 0 ? b : t->unk);
            }
        }
    }
}

/* --------------------------------------------------------------- BPE -- */

static void bpe_add_bigram(const st_tokenizer *t, session *s, int left, int right)
{
    if (left == -1 || right == -1) {
        return;
    }
    const symbol *l = &s->sym[left], *r = &s->sym[right];
    int rank = st_tok_bpe_rank(t, s->buf.p + l->off, l->n, s->buf.p + r->off, r->n);
    if (rank < 0) {
        return;
    }
    heap_push(s, (bigram){left, right, 0.0f, rank, l->n + r->n});
}

/* Merge one pre-tokenized, byte-encoded word in s->buf. */
static void bpe_word(const st_tokenizer *t, session *s, tokvec *out)
{
    const char *p = s->buf.p;
    if (t->ignore_merges && st_tok_find_text(t, p, s->buf.n) >= 0) {
        /* llama3-style vocabularies take a whole word that is a token as is */
        if (!reserve_symbols(s, 1)) {
            return;
        }
        s->sym[0] = (symbol){-1, -1, 0, s->buf.n};
        s->n_sym = 1;
    } else if (!make_symbols(s)) {
        return;
    }

    s->spm = false;
    s->n_heap = 0;
    for (size_t i = 1; i < s->n_sym; i++) {
        bpe_add_bigram(t, s, (int)i - 1, (int)i);
    }
    while (s->n_heap > 0 && !s->oom) {
        int left = apply_bigram(s, heap_pop(s));
        if (left >= 0) {
            bpe_add_bigram(t, s, s->sym[left].prev, left);
            bpe_add_bigram(t, s, left, s->sym[left].next);
        }
    }

    for (size_t i = 0; i < s->n_sym; i++) {
        const symbol *sy = &s->sym[i];
        if (sy->n == 0) {
            continue;
        }
        strata_token tok = st_tok_find_text(t, p + sy->off, sy->n);
        if (tok >= 0) {
            st_tv_push(out, tok);
            continue;
        }
        /* llama.cpp looks up each single byte of the encoded text */
        for (size_t j = 0; j < sy->n; j++) {
            tok = st_tok_find_text(t, p + sy->off + j, 1);
            if (tok >= 0) {
                st_tv_push(out, tok);
            }
        }
    }
}

/* llm_tokenizer_bpe_session::tokenize on one raw fragment: code points
 * (U+FFFD for malformed UTF-8), pre-tokenizer words, GPT-2 byte alphabet,
 * merges. */
void st_tok_bpe(const st_tokenizer *t, session *s, const char *text, size_t len, tokvec *out)
{
    if (len > s->cpts_cap) {
        free(s->cpts);
        free(s->lens);
        s->cpts = st_malloc_array(len, sizeof(uint32_t));
        s->lens = st_malloc_array(len, sizeof(size_t));
        s->cpts_cap = (s->cpts && s->lens) ? len : 0;
        if (s->cpts_cap == 0) {
            s->oom = true;
            return;
        }
    }
    size_t n = st_utf8_to_cpts(text, len, s->cpts);
    size_t n_words = st_pretokenize(t->pre, s->cpts, n, s->lens);
    if (n_words == (size_t)-1) {
        s->oom = true;
        return;
    }
    size_t c = 0;
    for (size_t w = 0; w < n_words && !s->oom && !out->oom; w++) {
        s->buf.n = 0;
        for (size_t k = 0; k < s->lens[w]; k++) {
            char utf8[4], enc[4];
            size_t nb = st_utf8_encode(s->cpts[c++], utf8);
            for (size_t j = 0; j < nb; j++) {
                size_t ne = st_utf8_encode(st_gpt2_byte_to_cpt((uint8_t)utf8[j]), enc);
                st_sb_append(&s->buf, enc, ne);
            }
        }
        if (s->buf.oom) {
            s->oom = true;
            return;
        }
        bpe_word(t, s, out);
    }
}

