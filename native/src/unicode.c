/* UTF-8, code point properties and the pre-tokenizers.
 *
 * The splitters are transcriptions of llama.cpp's unicode.cpp: the hand-coded
 * unicode_regex_split_custom_{gpt2,llama3,qwen2,qwen35} and, for the regexes
 * llama.cpp runs through std::regex, loops that match what that regex matches
 * on llama.cpp's "collapsed" text. Their quirks are kept on purpose: the goal
 * is the same token ids as llama.cpp, not a better tokenizer.
 */
#include "unicode.h"

#include <stdlib.h>

/* ------------------------------------------------------------ properties -- */

static bool cpt_is_whitespace(uint32_t cpt)
{
    size_t lo = 0, hi = st_unicode_n_whitespace;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (st_unicode_whitespace[mid] < cpt) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < st_unicode_n_whitespace && st_unicode_whitespace[lo] == cpt;
}

uint16_t st_cpt_flags(uint32_t cpt)
{
    if (cpt >= ST_CPT_MAX) {
        return ST_CPT_UNDEFINED;
    }
    /* last run whose start <= cpt */
    size_t lo = 0, hi = st_unicode_n_ranges - 1;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (st_unicode_range_start[mid] <= cpt) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    uint16_t flags = st_unicode_range_flags[lo];
    if (cpt_is_whitespace(cpt)) {
        flags |= ST_CPT_WHITESPACE;
    }
    return flags;
}

uint32_t st_cpt_tolower(uint32_t cpt)
{
    size_t lo = 0, hi = st_unicode_n_lower;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (st_unicode_lower[mid][0] < cpt) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < st_unicode_n_lower && st_unicode_lower[lo][0] == cpt) {
        return st_unicode_lower[lo][1];
    }
    return cpt;
}

/* ------------------------------------------------------------------ UTF-8 -- */

size_t st_utf8_len(uint8_t lead)
{
    static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[lead >> 4];
}

static bool is_cont(const char *s, size_t i)
{
    return ((uint8_t)s[i] & 0xC0) == 0x80;
}

uint32_t st_utf8_decode(const char *s, size_t len, size_t *off)
{
    size_t i = *off;
    uint8_t c = (uint8_t)s[i];
    uint32_t cpt;
    if (!(c & 0x80)) {
        *off = i + 1;
        return c;
    }
    if (!(c & 0x40)) {
        /* stray continuation byte */
    } else if (!(c & 0x20)) {
        if (i + 1 < len && is_cont(s, i + 1)) {
            *off = i + 2;
            return ((uint32_t)(c & 0x1F) << 6) | ((uint8_t)s[i + 1] & 0x3F);
        }
    } else if (!(c & 0x10)) {
        if (i + 2 < len && is_cont(s, i + 1) && is_cont(s, i + 2)) {
            *off = i + 3;
            return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)((uint8_t)s[i + 1] & 0x3F) << 6) |
                   ((uint8_t)s[i + 2] & 0x3F);
        }
    } else if (!(c & 0x08)) {
        if (i + 3 < len && is_cont(s, i + 1) && is_cont(s, i + 2) && is_cont(s, i + 3)) {
            *off = i + 4;
            cpt = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)((uint8_t)s[i + 1] & 0x3F) << 12) |
                  ((uint32_t)((uint8_t)s[i + 2] & 0x3F) << 6) | ((uint8_t)s[i + 3] & 0x3F);
            /* llama.cpp would throw later when re-encoding these */
            return cpt < ST_CPT_MAX ? cpt : ST_CPT_REPLACEMENT;
        }
    }
    *off = i + 1;
    return ST_CPT_REPLACEMENT;
}

size_t st_utf8_encode(uint32_t cpt, char out[4])
{
    if (cpt <= 0x7F) {
        out[0] = (char)cpt;
        return 1;
    }
    if (cpt <= 0x7FF) {
        out[0] = (char)(0xC0 | ((cpt >> 6) & 0x1F));
        out[1] = (char)(0x80 | (cpt & 0x3F));
        return 2;
    }
    if (cpt >= ST_CPT_MAX) {
        cpt = ST_CPT_REPLACEMENT;
    }
    if (cpt <= 0xFFFF) {
        out[0] = (char)(0xE0 | ((cpt >> 12) & 0x0F));
        out[1] = (char)(0x80 | ((cpt >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cpt & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | ((cpt >> 18) & 0x07));
    out[1] = (char)(0x80 | ((cpt >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cpt >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cpt & 0x3F));
    return 4;
}

size_t st_utf8_to_cpts(const char *s, size_t len, uint32_t *cpts)
{
    size_t n = 0, off = 0;
    while (off < len) {
        cpts[n++] = st_utf8_decode(s, len, &off);
    }
    return n;
}

/* ------------------------------------------------------ GPT-2 alphabet -- */

static bool gpt2_keeps(uint32_t b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* The other 68 bytes, in ascending order, take U+0100 + their rank:
 * 0x00-0x20 -> 0..32, 0x7F-0xA0 -> 33..66, 0xAD -> 67. */
uint32_t st_gpt2_byte_to_cpt(uint8_t byte)
{
    if (gpt2_keeps(byte)) {
        return byte;
    }
    if (byte <= 0x20) {
        return 0x100u + byte;
    }
    if (byte >= 0x7F && byte <= 0xA0) {
        return 0x100u + 33 + (byte - 0x7Fu);
    }
    return 0x100u + 67; /* 0xAD */
}

int st_gpt2_cpt_to_byte(uint32_t cpt)
{
    if (cpt < 0x100) {
        return gpt2_keeps(cpt) ? (int)cpt : -1;
    }
    if (cpt <= 0x100 + 32) {
        return (int)(cpt - 0x100);
    }
    if (cpt <= 0x100 + 66) {
        return (int)(0x7F + (cpt - 0x100 - 33));
    }
    if (cpt == 0x100 + 67) {
        return 0xAD;
    }
    return -1;
}

/* ---------------------------------------------------------- splitting -- */

/* One pass refines a list of segments (lengths in code points, summing to
 * n) into a finer one. A segment is the [ini, end) window the regex sees:
 * positions outside it read as OUT_OF_RANGE with no flags, exactly like
 * llama.cpp's _get_cpt/_get_flags lambdas. */
#define OUT_OF_RANGE 0xFFFFFFFFu

typedef struct {
    const uint32_t *cpts; /* (n) */
    const uint16_t *flags; /* (n) st_cpt_flags of each code point */
    size_t ini, end;      /* current segment */
    size_t prev_end;      /* end of the last emitted word */
    size_t *out;          /* word lengths emitted so far */
    size_t n_out;
} splitter;

static uint32_t get_cpt(const splitter *s, size_t pos)
{
    return (s->ini <= pos && pos < s->end) ? s->cpts[pos] : OUT_OF_RANGE;
}

static uint16_t get_flags(const splitter *s, size_t pos)
{
    return (s->ini <= pos && pos < s->end) ? s->flags[pos] : 0;
}

/* Emit the word [prev_end, end); returns its length. */
static size_t add_token(splitter *s, size_t end)
{
    size_t len = end - s->prev_end;
    if (len > 0) {
        s->out[s->n_out++] = len;
    }
    s->prev_end = end;
    return len;
}

static bool is_rn(uint32_t cpt)
{
    return cpt == '\r' || cpt == '\n';
}

/* 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive. Returns the match
 * length (2 or 3) or 0. */
static size_t match_contraction(const splitter *s, size_t pos, bool icase)
{
    if (get_cpt(s, pos) != '\'' || pos + 1 >= s->end) {
        return 0;
    }
    uint32_t next = get_cpt(s, pos + 1);
    if (icase) {
        next = st_cpt_tolower(next);
    }
    if (next == 's' || next == 't' || next == 'm' || next == 'd') {
        return 2;
    }
    if (pos + 2 < s->end) {
        uint32_t next2 = get_cpt(s, pos + 2);
        if (icase) {
            next2 = st_cpt_tolower(next2);
        }
        if ((next == 'r' && next2 == 'e') || (next == 'v' && next2 == 'e') ||
            (next == 'l' && next2 == 'l')) {
            return 3;
        }
    }
    return 0;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
static void split_gpt2(splitter *s)
{
    const uint16_t WLN = ST_CPT_WHITESPACE | ST_CPT_LETTER | ST_CPT_NUMBER;
    for (size_t pos = s->ini; pos < s->end;) {
        const uint32_t cpt = get_cpt(s, pos);
        const uint16_t flags = get_flags(s, pos);

        size_t n = match_contraction(s, pos, false);
        if (n > 0) {
            pos += add_token(s, pos + n);
            continue;
        }

        uint16_t flags2 = cpt == ' ' ? get_flags(s, pos + 1) : flags;
        if (flags2 & ST_CPT_LETTER) {
            pos += (cpt == ' ');
            while (flags2 & ST_CPT_LETTER) {
                flags2 = get_flags(s, ++pos);
            }
            add_token(s, pos);
            continue;
        }
        if (flags2 & ST_CPT_NUMBER) {
            pos += (cpt == ' ');
            while (flags2 & ST_CPT_NUMBER) {
                flags2 = get_flags(s, ++pos);
            }
            add_token(s, pos);
            continue;
        }
        if (!(flags2 & WLN) && flags2) {
            pos += (cpt == ' ');
            while (!(flags2 & WLN) && flags2) {
                flags2 = get_flags(s, ++pos);
            }
            add_token(s, pos);
            continue;
        }

        size_t num_ws = 0;
        while (get_flags(s, pos + num_ws) & ST_CPT_WHITESPACE) {
            num_ws++;
        }
        if (num_ws > 1 && get_cpt(s, pos + num_ws) != OUT_OF_RANGE) { /* \s+(?!\S) */
            pos += num_ws - 1;
            add_token(s, pos);
            continue;
        }
        if (num_ws > 0) { /* \s+ */
            pos += num_ws;
            add_token(s, pos);
            continue;
        }
        add_token(s, ++pos); /* no match */
    }
}

/* LLAMA3 (max_digits 3), QWEN2 (max_digits 1) and QWEN35 (max_digits 1,
 * marks: letter runs also take \p{M}):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static void split_llama3_like(splitter *s, int max_digits, bool marks)
{
    const uint16_t word = ST_CPT_LETTER | (marks ? ST_CPT_MARK : 0);
    const uint16_t not_punct = ST_CPT_WHITESPACE | ST_CPT_LETTER | ST_CPT_NUMBER | (marks ? ST_CPT_MARK : 0);
    for (size_t pos = s->ini; pos < s->end;) {
        const uint32_t cpt = get_cpt(s, pos);
        const uint16_t flags = get_flags(s, pos);

        size_t n = match_contraction(s, pos, true);
        if (n > 0) {
            pos += add_token(s, pos + n);
            continue;
        }

        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (!(is_rn(cpt) || (flags & ST_CPT_NUMBER))) {
            if ((flags & word) || (get_flags(s, pos + 1) & word)) {
                pos++;
                while (get_flags(s, pos) & word) {
                    pos++;
                }
                add_token(s, pos);
                continue;
            }
        }

        /* \p{N}{1,3} or \p{N} */
        if (flags & ST_CPT_NUMBER) {
            if (max_digits == 1) {
                pos++;
                add_token(s, pos);
                continue;
            }
            size_t ini = pos;
            while (get_flags(s, pos) & ST_CPT_NUMBER) {
                if (++pos - ini >= (size_t)max_digits) {
                    add_token(s, pos);
                    ini = pos;
                }
            }
            add_token(s, pos);
            continue;
        }

        /* <space>?[^\s\p{L}\p{N}]+[\r\n]*  (llama.cpp tests `flags`, not
         * `flags2`, for non-emptiness here) */
        uint16_t flags2 = cpt == ' ' ? get_flags(s, pos + 1) : flags;
        if (!(flags2 & not_punct) && flags) {
            pos += (cpt == ' ');
            while (!(flags2 & not_punct) && flags2) {
                flags2 = get_flags(s, ++pos);
            }
            uint32_t cpt2 = get_cpt(s, pos);
            while (is_rn(cpt2)) {
                cpt2 = get_cpt(s, ++pos);
            }
            add_token(s, pos);
            continue;
        }

        size_t num_ws = 0;
        size_t last_end_rn = 0;
        while (get_flags(s, pos + num_ws) & ST_CPT_WHITESPACE) {
            if (is_rn(get_cpt(s, pos + num_ws))) {
                last_end_rn = pos + num_ws + 1;
            }
            num_ws++;
        }
        if (last_end_rn > 0) { /* \s*[\r\n]+ */
            pos = last_end_rn;
            add_token(s, pos);
            continue;
        }
        if (num_ws > 1 && get_cpt(s, pos + num_ws) != OUT_OF_RANGE) { /* \s+(?!\S) */
            pos += num_ws - 1;
            add_token(s, pos);
            continue;
        }
        if (num_ws > 0) { /* \s+ */
            pos += num_ws;
            add_token(s, pos);
            continue;
        }
        add_token(s, ++pos); /* no match */
    }
}

/* The regexes llama.cpp runs with std::regex over its collapsed text (one
 * byte per code point: ASCII as is, others a category byte, or 0x0B for
 * whitespace). Matches are emitted as words, and so are the gaps between
 * them, as unicode_regex_split_stl does. */

/* [\p{P}\$\+<=>\^~\|]+ : ASCII punctuation and symbols except '`', or a
 * non-ASCII code point whose category is exactly P. */
static bool is_default_punct(uint32_t cpt, uint16_t flags)
{
    if (cpt < 128) {
        return (cpt >= '!' && cpt <= '/') || (cpt >= ':' && cpt <= '@') || (cpt >= '[' && cpt <= '_') ||
               (cpt >= '{' && cpt <= '~');
    }
    return !(flags & ST_CPT_WHITESPACE) && (flags & ST_CPT_CATEGORIES) == ST_CPT_PUNCTUATION;
}

/* \p{N} on collapsed text: ASCII digits or a non-ASCII number. */
static bool is_collapsed_number(uint32_t cpt, uint16_t flags)
{
    if (cpt < 128) {
        return cpt >= '0' && cpt <= '9';
    }
    return !(flags & ST_CPT_WHITESPACE) && (flags & ST_CPT_CATEGORIES) == ST_CPT_NUMBER;
}

typedef enum {
    RUN_PUNCT,        /* [\p{P}\$\+<=>\^~\|]+ */
    RUN_NUMBERS,      /* \p{N}+ */
    SINGLE_NUMBER,    /* \p{N} */
    THREE_ASCII_DIGITS, /* [0-9][0-9][0-9] */
} simple_regex;

static bool simple_match_at(const splitter *s, simple_regex re, size_t pos, size_t *len)
{
    const uint32_t *c = s->cpts;
    const uint16_t *f = s->flags;
    size_t i = pos;
    switch (re) {
    case RUN_PUNCT:
        while (i < s->end && is_default_punct(c[i], f[i])) {
            i++;
        }
        break;
    case RUN_NUMBERS:
        while (i < s->end && is_collapsed_number(c[i], f[i])) {
            i++;
        }
        break;
    case SINGLE_NUMBER:
        if (is_collapsed_number(c[i], f[i])) {
            i++;
        }
        break;
    case THREE_ASCII_DIGITS:
        while (i < s->end && i - pos < 3 && c[i] >= '0' && c[i] <= '9') {
            i++;
        }
        if (i - pos < 3) {
            i = pos;
        }
        break;
    }
    *len = i - pos;
    return i > pos;
}

static void split_simple(splitter *s, simple_regex re)
{
    size_t pos = s->ini;
    while (pos < s->end) {
        size_t len;
        if (simple_match_at(s, re, pos, &len)) {
            add_token(s, pos);       /* the gap before the match */
            add_token(s, pos + len); /* the match */
            pos += len;
        } else {
            pos++;
        }
    }
    add_token(s, s->end);
}

typedef enum {
    PASS_GPT2,
    PASS_LLAMA3,
    PASS_QWEN2,
    PASS_QWEN35,
    PASS_RUN_PUNCT,
    PASS_RUN_NUMBERS,
    PASS_SINGLE_NUMBER,
    PASS_THREE_DIGITS,
} split_pass;

static size_t run_pass(split_pass pass, const uint32_t *cpts, const uint16_t *flags, const size_t *in,
                       size_t n_in, size_t *out)
{
    splitter s = {.cpts = cpts, .flags = flags, .out = out, .n_out = 0};
    size_t start = 0;
    for (size_t k = 0; k < n_in; k++) {
        s.ini = start;
        s.end = start + in[k];
        s.prev_end = start;
        start = s.end;
        switch (pass) {
        case PASS_GPT2: split_gpt2(&s); break;
        case PASS_LLAMA3: split_llama3_like(&s, 3, false); break;
        case PASS_QWEN2: split_llama3_like(&s, 1, false); break;
        case PASS_QWEN35: split_llama3_like(&s, 1, true); break;
        case PASS_RUN_PUNCT: split_simple(&s, RUN_PUNCT); break;
        case PASS_RUN_NUMBERS: split_simple(&s, RUN_NUMBERS); break;
        case PASS_SINGLE_NUMBER: split_simple(&s, SINGLE_NUMBER); break;
        case PASS_THREE_DIGITS: split_simple(&s, THREE_ASCII_DIGITS); break;
        }
    }
    return s.n_out;
}

size_t st_pretokenize(st_pretok kind, const uint32_t *cpts, size_t n, size_t *lens)
{
    if (n == 0) {
        return 0;
    }
    static const split_pass passes_default[] = {PASS_RUN_PUNCT, PASS_GPT2, PASS_RUN_NUMBERS, PASS_THREE_DIGITS};
    static const split_pass passes_gpt2[] = {PASS_GPT2};
    static const split_pass passes_llama3[] = {PASS_LLAMA3};
    static const split_pass passes_qwen2[] = {PASS_QWEN2};
    static const split_pass passes_qwen35[] = {PASS_QWEN35};
    static const split_pass passes_starcoder[] = {PASS_SINGLE_NUMBER, PASS_GPT2};
    const split_pass *passes = passes_gpt2;
    size_t n_passes = 1;
    switch (kind) {
    case ST_PRE_DEFAULT: passes = passes_default; n_passes = 4; break;
    case ST_PRE_GPT2: passes = passes_gpt2; break;
    case ST_PRE_LLAMA3: passes = passes_llama3; break;
    case ST_PRE_QWEN2: passes = passes_qwen2; break;
    case ST_PRE_QWEN35: passes = passes_qwen35; break;
    case ST_PRE_STARCODER: passes = passes_starcoder; n_passes = 2; break;
    }

    uint16_t *flags = malloc(n * sizeof(*flags));
    size_t *tmp = n_passes > 1 ? malloc(n * sizeof(*tmp)) : NULL;
    if (!flags || (n_passes > 1 && !tmp)) {
        free(flags);
        free(tmp);
        return (size_t)-1;
    }
    for (size_t i = 0; i < n; i++) {
        flags[i] = st_cpt_flags(cpts[i]);
    }

    /* ping-pong between lens and tmp so that the last pass writes lens */
    size_t seg = n;
    const size_t *in = &seg;
    size_t n_in = 1;
    for (size_t p = 0; p < n_passes; p++) {
        size_t *out = ((n_passes - 1 - p) % 2 == 0) ? lens : tmp;
        n_in = run_pass(passes[p], cpts, flags, in, n_in, out);
        in = out;
    }
    free(flags);
    free(tmp);
    return n_in;
}
