/* Tokenizer: special-token partition and the public (de)tokenize calls.
 *
 * Reference: llama.cpp src/llama-vocab.cpp (tokenizer_st_partition,
 * token_to_piece, detokenize). Loading is in tokenizer_vocab.c, the SPM/BPE
 * merge sessions in tokenizer_merge.c. */
#include "tokenizer_impl.h"
#include "unicode.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------- growable buffers -- */


void st_tv_push(tokvec *tv, strata_token tok)
{
    if (tv->n == tv->cap) {
        size_t cap = tv->cap ? tv->cap * 2 : 64;
        strata_token *v = realloc(tv->v, cap * sizeof(*v));
        if (v == NULL) {
            tv->oom = true;
            return;
        }
        tv->v = v;
        tv->cap = cap;
    }
    tv->v[tv->n++] = tok;
}


void st_sb_append(strbuf *sb, const char *s, size_t n)
{
    if (sb->n + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;
        while (cap < sb->n + n + 1) {
            cap *= 2;
        }
        char *p = realloc(sb->p, cap);
        if (p == NULL) {
            sb->oom = true;
            return;
        }
        sb->p = p;
        sb->cap = cap;
    }
    memcpy(sb->p + sb->n, s, n);
    sb->n += n;
    sb->p[sb->n] = '\0';
}

/* ------------------------------------------------------------- pieces -- */


/* llama_decode_text: map byte-level BPE text back to bytes. */
static void decode_bpe_text(const char *s, size_t n, strbuf *out)
{
    size_t off = 0;
    while (off < n) {
        uint32_t cpt = st_utf8_decode(s, n, &off);
        int b = st_gpt2_cpt_to_byte(cpt);
        if (b >= 0) {
            char c = (char)b;
            st_sb_append(out, &c, 1);
            continue;
        }
        char utf8[4], hex[3];
        size_t k = st_utf8_encode(cpt, utf8);
        st_sb_append(out, "[UNK_BYTE_0x", 12);
        for (size_t i = 0; i < k; i++) {
            snprintf(hex, sizeof(hex), "%02x", (uint8_t)utf8[i]);
            st_sb_append(out, hex, 2);
        }
        st_sb_append(out, s, n);
        st_sb_append(out, "]", 1);
    }
}

/* llama_vocab::impl::token_to_piece(special = true), uncached. */
void st_tok_render_piece(const st_tokenizer *t, strata_token id, strbuf *out)
{
    const uint16_t attr = t->attr[id];
    const char *s = tok_text(t, id);
    size_t n = t->text_len[id];
    if (attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED)) {
        st_sb_append(out, s, n);
    } else if (attr & ATTR_NORMAL) {
        if (t->kind == VOCAB_SPM) { /* U+2581 -> ' ' */
            for (size_t i = 0; i < n; i++) {
                if (i + 2 < n && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                    st_sb_append(out, " ", 1);
                    i += 2;
                } else {
                    st_sb_append(out, s + i, 1);
                }
            }
        } else {
            decode_bpe_text(s, n, out);
        }
    } else if ((attr & ATTR_BYTE) && n >= 5) {
        /* "<0xXX>": strtol of text[3..5] */
        char hex[3] = {s[3], s[4], 0};
        char c = (char)strtol(hex, NULL, 16);
        st_sb_append(out, &c, 1);
    }
}

/* ------------------------------------------------- special partition -- */

typedef struct {
    strata_token tok; /* >= 0: a special token; -1: raw text */
    size_t off, len;  /* raw text span */
} fragment;

typedef struct {
    fragment *v;
    size_t n, cap;
    bool oom;
} fragvec;

static void fv_push(fragvec *fv, strata_token tok, size_t off, size_t len)
{
    if (fv->n == fv->cap) {
        size_t cap = fv->cap ? fv->cap * 2 : 16;
        fragment *v = realloc(fv->v, cap * sizeof(*v));
        if (v == NULL) {
            fv->oom = true;
            return;
        }
        fv->v = v;
        fv->cap = cap;
    }
    fv->v[fv->n++] = (fragment){tok, off, len};
}

/* tokenizer_st_partition: cut the text at every occurrence of each special
 * token, longest tokens first. Control and unknown tokens only count when
 * parse_special; user-defined ones always do. Returns false when out of
 * memory. */
static bool partition(const st_tokenizer *t, const char *text, size_t len, bool parse_special, fragvec *frags)
{
    fragvec next = {0};
    frags->n = 0;
    if (len > 0) {
        fv_push(frags, -1, 0, len);
    }
    for (size_t k = 0; k < t->n_specials && !frags->oom && !next.oom; k++) {
        const strata_token id = t->specials[k];
        const uint16_t attr = t->attr[id];
        if (!parse_special && (attr & (ATTR_CONTROL | ATTR_UNKNOWN))) {
            continue;
        }
        const char *stext = tok_text(t, id);
        const size_t slen = t->text_len[id];
        bool found = false;
        next.n = 0;
        for (size_t i = 0; i < frags->n; i++) {
            fragment fr = frags->v[i];
            if (fr.tok >= 0) {
                fv_push(&next, fr.tok, 0, 0);
                continue;
            }
            size_t pos = fr.off, end = fr.off + fr.len;
            for (;;) {
                const char *m = memmem(text + pos, end - pos, stext, slen);
                if (m == NULL) {
                    if (end > pos) {
                        fv_push(&next, -1, pos, end - pos);
                    }
                    break;
                }
                found = true;
                size_t match = (size_t)(m - text);
                size_t left_len = match - pos;
                if (attr & ATTR_LSTRIP) {
                    while (left_len > 0 && isspace((unsigned char)text[pos + left_len - 1])) {
                        left_len--;
                    }
                }
                if (left_len > 0) {
                    fv_push(&next, -1, pos, left_len);
                }
                fv_push(&next, id, 0, 0);
                pos = match + slen;
                if (attr & ATTR_RSTRIP) {
                    while (pos < end && isspace((unsigned char)text[pos])) {
                        pos++;
                    }
                }
            }
        }
        if (found) {
            fragvec tmp = *frags;
            *frags = next;
            next = tmp;
        }
    }
    bool ok = !frags->oom && !next.oom;
    free(next.v);
    return ok;
}

/* -------------------------------------------------------------- API -- */

strata_err st_tokenize(const st_tokenizer *t, const char *text, size_t len, bool add_bos, bool parse_special,
                       strata_token *out, size_t cap, size_t *n_out, strata_error *err)
{
    if (n_out != NULL) {
        *n_out = 0;
    }
    if (t == NULL || (len > 0 && text == NULL) || (cap > 0 && out == NULL)) {
        return st_error(err, STRATA_ERR_ARG, "st_tokenize: NULL tokenizer, text or output");
    }
    tokvec tv = {0};
    fragvec frags = {0};
    session s = {0};

    if (add_bos && t->bos >= 0) {
        st_tv_push(&tv, t->bos);
    }
    bool ok = partition(t, text, len, parse_special, &frags);
    bool prev_special = true; /* SPM: prefix a space to the first text and after specials */
    for (size_t i = 0; ok && i < frags.n && !s.oom && !tv.oom; i++) {
        const fragment *fr = &frags.v[i];
        if (fr->tok >= 0) {
            st_tv_push(&tv, fr->tok);
            prev_special = true;
        } else if (t->kind == VOCAB_SPM) {
            st_tok_spm(t, &s, text + fr->off, fr->len, t->add_space_prefix && prev_special, &tv);
            prev_special = false;
        } else {
            st_tok_bpe(t, &s, text + fr->off, fr->len, &tv);
        }
    }
    ok = ok && !s.oom && !tv.oom;
    st_tok_session_free(&s);
    free(frags.v);
    if (!ok) {
        free(tv.v);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory tokenizing %zu bytes", len);
    }

    size_t n = tv.n;
    if (n > 0 && cap > 0) {
        memcpy(out, tv.v, ST_MIN(n, cap) * sizeof(strata_token));
    }
    free(tv.v);
    if (n_out != NULL) {
        *n_out = n;
    }
    if (n > cap) {
        return st_error(err, STRATA_ERR_LIMIT, "text needs %zu tokens, room for %zu", n, cap);
    }
    return STRATA_OK;
}

static bool valid_token(const st_tokenizer *t, strata_token tok)
{
    return t != NULL && tok >= 0 && tok < t->n_vocab;
}

int st_token_to_piece(const st_tokenizer *t, strata_token tok, char *buf, size_t cap, bool render_special)
{
    if (!valid_token(t, tok)) {
        return 0;
    }
    if (!render_special && (t->attr[tok] & (ATTR_UNKNOWN | ATTR_CONTROL))) {
        return 0;
    }
    size_t n = t->piece_len[tok];
    if (cap < n) {
        return -(int)n;
    }
    if (n > 0) {
        memcpy(buf, t->piece + t->piece_off[tok], n);
    }
    return (int)n;
}

const char *st_token_bytes(const st_tokenizer *t, strata_token tok, size_t *len)
{
    if (!valid_token(t, tok) || (t->attr[tok] & (ATTR_UNKNOWN | ATTR_CONTROL))) {
        *len = 0;
        return "";
    }
    *len = t->piece_len[tok];
    return t->piece + t->piece_off[tok];
}

/* clean_up_tokenization_spaces, as llama_vocab::impl::detokenize does it
 * (three in-place passes; returns the new length). */
static size_t clean_spaces(char *text, size_t total)
{
    /* " ?", " !", " .", " ," lose the space */
    size_t total1 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total1; ++i) {
        const char x = text[i];
        if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) {
            total--;
        }
        text[total++] = x;
    }
    /* " ' " -> "'" */
    size_t total2 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total2; ++i) {
        const char x = text[i];
        if (x == '\'' && i + 1 < total2 && text[i - 1] == ' ' && text[i + 1] == ' ') {
            total--;
            text[++i] = '\0';
        }
        text[total++] = x;
    }
    /* " 's", " 'm", " 're", " 've" lose the space */
    size_t total3 = total;
    total = total ? 1 : 0;
    for (size_t i = 1; i < total3; ++i) {
        const char x = text[i];
        if (text[i - 1] == ' ' && x == '\'' && i + 1 < total3) {
            const char x1 = text[i + 1];
            if (x1 == 's' || x1 == 'm') {
                total--;
            } else if (x1 != 't' && x1 != 'd' && i + 2 < total3) {
                const char x2 = text[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) {
                    total--;
                }
            }
        }
        text[total++] = x;
    }
    return total;
}

strata_err st_detokenize(const st_tokenizer *t, const strata_token *toks, size_t n, bool render_special,
                         char **out, size_t *out_len, strata_error *err)
{
    *out = NULL;
    if (t == NULL || (n > 0 && toks == NULL)) {
        return st_error(err, STRATA_ERR_ARG, "st_detokenize: NULL tokenizer or tokens");
    }
    strbuf sb = {0};
    st_sb_append(&sb, "", 0);
    bool remove_space = t->add_space_prefix;
    for (size_t i = 0; i < n && !sb.oom; i++) {
        strata_token tok = toks[i];
        if (!valid_token(t, tok)) {
            free(sb.p);
            return st_error(err, STRATA_ERR_ARG, "token %d at position %zu is outside the vocabulary (%d)", tok, i,
                            t->n_vocab);
        }
        size_t len;
        const char *p;
        if (!render_special && (t->attr[tok] & (ATTR_UNKNOWN | ATTR_CONTROL))) {
            len = 0;
            p = "";
        } else {
            p = t->piece + t->piece_off[tok];
            len = t->piece_len[tok];
            if (remove_space && len > 0 && *p == ' ') {
                p++;
                len--;
            }
        }
        remove_space = false;
        st_sb_append(&sb, p, len);
    }
    if (sb.oom) {
        free(sb.p);
        return st_error(err, STRATA_ERR_NOMEM, "out of memory detokenizing %zu tokens", n);
    }
    if (t->clean_spaces) {
        sb.n = clean_spaces(sb.p, sb.n);
        sb.p[sb.n] = '\0';
    }
    *out = sb.p;
    if (out_len != NULL) {
        *out_len = sb.n;
    }
    return STRATA_OK;
}

int st_tokenizer_n_vocab(const st_tokenizer *t)
{
    return t->n_vocab;
}

const char *st_tokenizer_kind(const st_tokenizer *t)
{
    return t->kind == VOCAB_SPM ? "spm" : "bpe";
}

bool st_token_is_eog(const st_tokenizer *t, strata_token tok)
{
    return valid_token(t, tok) && t->eog[tok];
}

bool st_token_is_control(const st_tokenizer *t, strata_token tok)
{
    return valid_token(t, tok) && (t->attr[tok] & ATTR_CONTROL);
}

strata_token st_tokenizer_bos(const st_tokenizer *t)
{
    return t->bos;
}

strata_token st_tokenizer_eos(const st_tokenizer *t)
{
    return t->eos;
}

strata_token st_tokenizer_eot(const st_tokenizer *t)
{
    return t->eot;
}

bool st_tokenizer_add_bos_default(const st_tokenizer *t)
{
    return t->add_bos && t->bos >= 0;
}

strata_token st_tokenizer_find(const st_tokenizer *t, const char *text)
{
    if (t == NULL || text == NULL) {
        return -1;
    }
    return st_tok_find_text(t, text, strlen(text));
}

const char *st_tokenizer_chat_template(const st_tokenizer *t)
{
    return t->chat_template;
}
