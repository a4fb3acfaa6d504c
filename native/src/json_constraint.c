#include "json_constraint.h"

#include <string.h>

enum {
    J_START,      /* before the top-level value: '{' or '[' */
    J_OBJ_FIRST,  /* after '{': key or '}' */
    J_OBJ_KEY,    /* after ',' in an object: key */
    J_COLON,      /* after a key */
    J_VALUE,      /* after ':' or ',' in an array: any value */
    J_ARR_FIRST,  /* after '[': any value or ']' */
    J_AFTER,      /* after a value inside a container: ',' or the closer */
    J_STR,        /* inside a string */
    J_STR_ESC,    /* after a backslash */
    J_STR_HEX,    /* in \uXXXX; aux = digits left */
    J_STR_UTF8,   /* inside a multibyte character; aux = bytes left */
    J_NUM_MINUS,  /* "-" */
    J_NUM_ZERO,   /* "-0" or "0": no more integer digits */
    J_NUM_INT,    /* integer digits */
    J_NUM_DOT,    /* "1." : a digit must follow */
    J_NUM_FRAC,   /* fraction digits */
    J_NUM_E,      /* "1e": sign or digit */
    J_NUM_ESIGN,  /* "1e+": digit */
    J_NUM_EXP,    /* exponent digits */
    J_LIT,        /* inside true/false/null; lit, aux = next index */
    J_DONE,       /* top-level value complete */
    J_ERROR,
};

static const char *const literals[3] = {"true", "false", "null"};
static const uint8_t literal_len[3] = {4, 5, 4};

void st_json_init(st_json_state *s)
{
    memset(s, 0, sizeof(*s));
    s->mode = J_START;
}

static bool is_ws(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(uint8_t c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool top_is_object(const st_json_state *s)
{
    return (s->stack >> (s->depth - 1)) & 1u;
}

static bool fail(st_json_state *s)
{
    s->mode = J_ERROR;
    return false;
}

/* A value just ended: either the document is complete or we are back in
 * the enclosing container. */
static void value_done(st_json_state *s)
{
    s->mode = s->depth == 0 ? J_DONE : J_AFTER;
}

static bool open_container(st_json_state *s, bool object)
{
    if (s->depth >= ST_JSON_MAX_DEPTH) {
        return fail(s);
    }
    if (object) {
        s->stack |= (uint64_t)1 << s->depth;
    } else {
        s->stack &= ~((uint64_t)1 << s->depth);
    }
    s->depth++;
    s->mode = object ? J_OBJ_FIRST : J_ARR_FIRST;
    return true;
}

static bool close_container(st_json_state *s, bool object)
{
    if (s->depth == 0 || top_is_object(s) != object) {
        return fail(s);
    }
    s->depth--;
    value_done(s);
    return true;
}

static void start_string(st_json_state *s, bool key)
{
    s->mode = J_STR;
    s->in_key = key;
}

/* The first byte of a value (not a top-level one: those are containers). */
static bool start_value(st_json_state *s, uint8_t c)
{
    switch (c) {
    case '{':
        return open_container(s, true);
    case '[':
        return open_container(s, false);
    case '"':
        start_string(s, false);
        return true;
    case '-':
        s->mode = J_NUM_MINUS;
        return true;
    case '0':
        s->mode = J_NUM_ZERO;
        return true;
    case 't':
    case 'f':
    case 'n':
        s->mode = J_LIT;
        s->lit = c == 't' ? 0 : (c == 'f' ? 1 : 2);
        s->aux = 1;
        return true;
    default:
        if (c >= '1' && c <= '9') {
            s->mode = J_NUM_INT;
            return true;
        }
        return fail(s);
    }
}

/* A byte in J_STR that begins a UTF-8 multibyte sequence: set how many
 * continuation bytes follow and the range of the first one (RFC 3629). */
static bool start_utf8(st_json_state *s, uint8_t c)
{
    uint8_t need;
    uint8_t lo = 0x80;
    uint8_t hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) {
            lo = 0xA0; /* no overlongs */
        } else if (c == 0xED) {
            hi = 0x9F; /* no UTF-16 surrogates */
        }
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) {
            lo = 0x90;
        } else if (c == 0xF4) {
            hi = 0x8F; /* <= U+10FFFF */
        }
    } else {
        return fail(s);
    }
    s->mode = J_STR_UTF8;
    s->aux = need;
    s->utf8_lo = lo;
    s->utf8_hi = hi;
    return true;
}

static bool string_byte(st_json_state *s, uint8_t c)
{
    if (c == '"') {
        if (s->in_key) {
            s->mode = J_COLON;
        } else {
            value_done(s);
        }
        return true;
    }
    if (c == '\\') {
        s->mode = J_STR_ESC;
        return true;
    }
    if (c < 0x20) {
        return fail(s);
    }
    if (c >= 0x80) {
        return start_utf8(s, c);
    }
    return true;
}

/* Number states that may end here: hand the byte to the container. */
static bool end_number(st_json_state *s, uint8_t c);

static bool step(st_json_state *s, uint8_t c)
{
    switch (s->mode) {
    case J_STR:
        return string_byte(s, c);
    case J_STR_ESC:
        if (c == 'u') {
            s->mode = J_STR_HEX;
            s->aux = 4;
            return true;
        }
        if (c != 0 && strchr("\"\\/bfnrt", c) != NULL) {
            s->mode = J_STR;
            return true;
        }
        return fail(s);
    case J_STR_HEX:
        if (!is_hex(c)) {
            return fail(s);
        }
        if (--s->aux == 0) {
            s->mode = J_STR;
        }
        return true;
    case J_STR_UTF8:
        if (c < s->utf8_lo || c > s->utf8_hi) {
            return fail(s);
        }
        s->utf8_lo = 0x80;
        s->utf8_hi = 0xBF;
        if (--s->aux == 0) {
            s->mode = J_STR;
        }
        return true;
    case J_NUM_MINUS:
        if (c == '0') {
            s->mode = J_NUM_ZERO;
            return true;
        }
        if (c >= '1' && c <= '9') {
            s->mode = J_NUM_INT;
            return true;
        }
        return fail(s);
    case J_NUM_ZERO:
    case J_NUM_INT:
        if (is_digit(c) && s->mode == J_NUM_INT) {
            return true;
        }
        if (c == '.') {
            s->mode = J_NUM_DOT;
            return true;
        }
        if (c == 'e' || c == 'E') {
            s->mode = J_NUM_E;
            return true;
        }
        return end_number(s, c);
    case J_NUM_DOT:
        if (is_digit(c)) {
            s->mode = J_NUM_FRAC;
            return true;
        }
        return fail(s);
    case J_NUM_FRAC:
        if (is_digit(c)) {
            return true;
        }
        if (c == 'e' || c == 'E') {
            s->mode = J_NUM_E;
            return true;
        }
        return end_number(s, c);
    case J_NUM_E:
        if (c == '+' || c == '-') {
            s->mode = J_NUM_ESIGN;
            return true;
        }
        if (is_digit(c)) {
            s->mode = J_NUM_EXP;
            return true;
        }
        return fail(s);
    case J_NUM_ESIGN:
        if (is_digit(c)) {
            s->mode = J_NUM_EXP;
            return true;
        }
        return fail(s);
    case J_NUM_EXP:
        if (is_digit(c)) {
            return true;
        }
        return end_number(s, c);
    case J_LIT:
        if (c != (uint8_t)literals[s->lit][s->aux]) {
            return fail(s);
        }
        if (++s->aux == literal_len[s->lit]) {
            value_done(s);
        }
        return true;
    case J_ERROR:
        return false;
    default:
        break;
    }

    /* Structural states: whitespace is allowed between tokens, bounded. */
    if (is_ws(c)) {
        s->ws_run++;
        if (c == '\n') {
            s->ws_newlines++;
        }
        if (s->ws_run > ST_JSON_MAX_WS_RUN || s->ws_newlines > ST_JSON_MAX_WS_NEWLINES) {
            return fail(s);
        }
        return true;
    }
    s->ws_run = 0;
    s->ws_newlines = 0;

    switch (s->mode) {
    case J_START:
        if (c == '{' || c == '[') {
            return open_container(s, c == '{');
        }
        return fail(s);
    case J_OBJ_FIRST:
        if (c == '}') {
            return close_container(s, true);
        }
        /* fall through */
    case J_OBJ_KEY:
        if (c == '"') {
            start_string(s, true);
            return true;
        }
        return fail(s);
    case J_COLON:
        if (c == ':') {
            s->mode = J_VALUE;
            return true;
        }
        return fail(s);
    case J_ARR_FIRST:
        if (c == ']') {
            return close_container(s, false);
        }
        return start_value(s, c);
    case J_VALUE:
        return start_value(s, c);
    case J_AFTER:
        if (c == ',') {
            s->mode = top_is_object(s) ? J_OBJ_KEY : J_VALUE;
            return true;
        }
        if (c == '}' || c == ']') {
            return close_container(s, c == '}');
        }
        return fail(s);
    default: /* J_DONE: only whitespace may follow */
        return fail(s);
    }
}

static bool end_number(st_json_state *s, uint8_t c)
{
    /* Top-level values are containers, so a number is always inside one. */
    value_done(s);
    return step(s, c);
}

bool st_json_feed(st_json_state *s, const char *bytes, size_t n)
{
    const uint8_t *p = (const uint8_t *)bytes;
    for (size_t i = 0; i < n; i++) {
        if (!step(s, p[i])) {
            return false;
        }
    }
    return s->mode != J_ERROR;
}

bool st_json_accepts(const st_json_state *s, const char *bytes, size_t n)
{
    st_json_state tmp = *s;
    return st_json_feed(&tmp, bytes, n);
}

bool st_json_complete(const st_json_state *s)
{
    return s->mode == J_DONE;
}

bool st_json_failed(const st_json_state *s)
{
    return s->mode == J_ERROR;
}

bool st_json_valid(const char *text, size_t n)
{
    st_json_state s;
    st_json_init(&s);
    return st_json_feed(&s, text, n) && st_json_complete(&s);
}
