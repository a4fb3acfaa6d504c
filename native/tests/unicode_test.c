/* Unicode tests: UTF-8 decoding with llama.cpp's error behaviour, code point
 * flags, lowercase, the GPT-2 byte alphabet, and the pre-tokenizers. The
 * expected splits were produced by llama.cpp's unicode_regex_split (the
 * std::regex path included for ST_PRE_DEFAULT). */
#include "test.h"
#include "unicode.h"

static void test_utf8(void)
{
    size_t off = 0;
    CHECK(st_utf8_decode("A", 1, &off) == 'A' && off == 1);
    off = 0;
    CHECK(st_utf8_decode("\xc3\xa9", 2, &off) == 0xE9 && off == 2);
    off = 0;
    CHECK(st_utf8_decode("\xe2\x96\x81", 3, &off) == 0x2581 && off == 3);
    off = 0;
    CHECK(st_utf8_decode("\xf0\x9f\xa6\x99", 4, &off) == 0x1F999 && off == 4);
    /* malformed: U+FFFD, one byte consumed */
    static const char *const bad[] = {"\x80", "\xbf", "\xc3", "\xc3x", "\xe2\x96", "\xe2x\x81", "\xf0\x9f\xa6",
                                      "\xf8\x80\x80\x80", "\xff"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        off = 0;
        CHECK_MSG(st_utf8_decode(bad[i], strlen(bad[i]), &off) == ST_CPT_REPLACEMENT && off == 1, "bad #%zu", i);
    }
    /* the length limit is respected even if the bytes continue */
    off = 0;
    CHECK(st_utf8_decode("\xc3\xa9", 1, &off) == ST_CPT_REPLACEMENT && off == 1);
    /* accepted like llama.cpp: overlong forms, surrogates */
    off = 0;
    CHECK(st_utf8_decode("\xc0\x80", 2, &off) == 0 && off == 2);
    off = 0;
    CHECK(st_utf8_decode("\xed\xa0\x80", 3, &off) == 0xD800 && off == 3);
    /* beyond U+10FFFF */
    off = 0;
    CHECK(st_utf8_decode("\xf4\x90\x80\x80", 4, &off) == ST_CPT_REPLACEMENT && off == 4);

    /* every code point survives encode + decode */
    size_t bad_rt = 0;
    for (uint32_t cp = 0; cp < ST_CPT_MAX; cp++) {
        char buf[4];
        size_t n = st_utf8_encode(cp, buf);
        off = 0;
        if (st_utf8_decode(buf, n, &off) != cp || off != n || n != st_utf8_len((uint8_t)buf[0])) {
            bad_rt++;
        }
    }
    CHECK(bad_rt == 0);
    char buf[4];
    CHECK(st_utf8_encode(0x110000, buf) == 3 && memcmp(buf, "\xef\xbf\xbd", 3) == 0);

    uint32_t cpts[16];
    CHECK(st_utf8_to_cpts("a\xffz\xc3\xa9", 5, cpts) == 4 && cpts[1] == ST_CPT_REPLACEMENT && cpts[3] == 0xE9);
    CHECK(st_utf8_len('a') == 1 && st_utf8_len(0x80) == 1 && st_utf8_len(0xC3) == 2 && st_utf8_len(0xE2) == 3 &&
          st_utf8_len(0xF0) == 4 && st_utf8_len(0xFF) == 4);
}

static void test_flags(void)
{
    CHECK(st_cpt_flags('A') == ST_CPT_LETTER);
    CHECK(st_cpt_flags('0') == ST_CPT_NUMBER);
    CHECK(st_cpt_flags(' ') == (ST_CPT_SEPARATOR | ST_CPT_WHITESPACE));
    CHECK(st_cpt_flags('\n') == (ST_CPT_CONTROL | ST_CPT_WHITESPACE));
    CHECK(st_cpt_flags(0) == ST_CPT_CONTROL);
    CHECK(st_cpt_flags('!') == ST_CPT_PUNCTUATION && st_cpt_flags('_') == ST_CPT_PUNCTUATION);
    CHECK(st_cpt_flags('$') == ST_CPT_SYMBOL && st_cpt_flags('`') == ST_CPT_SYMBOL);
    CHECK(st_cpt_flags(0xE9) == ST_CPT_LETTER);
    CHECK(st_cpt_flags(0x301) == ST_CPT_MARK);
    CHECK(st_cpt_flags(0x660) == ST_CPT_NUMBER && st_cpt_flags(0xBD) == ST_CPT_NUMBER);
    CHECK(st_cpt_flags(0x85) == (ST_CPT_CONTROL | ST_CPT_WHITESPACE));
    CHECK(st_cpt_flags(0xA0) == (ST_CPT_SEPARATOR | ST_CPT_WHITESPACE));
    CHECK(st_cpt_flags(0x3000) == (ST_CPT_SEPARATOR | ST_CPT_WHITESPACE));
    CHECK(st_cpt_flags(0x200B) == ST_CPT_CONTROL); /* zero width space: Cf, not \s */
    CHECK(st_cpt_flags(0x4E00) == ST_CPT_LETTER);
    CHECK(st_cpt_flags(0x1F600) == ST_CPT_SYMBOL);
    CHECK(st_cpt_flags(0x2019) == ST_CPT_PUNCTUATION);
    CHECK(st_cpt_flags(0xE000) == ST_CPT_CONTROL);     /* private use */
    CHECK(st_cpt_flags(0x0378) == ST_CPT_UNDEFINED);   /* unassigned */
    CHECK(st_cpt_flags(0x10FFFF) == ST_CPT_UNDEFINED);
    CHECK(st_cpt_flags(0x110000) == ST_CPT_UNDEFINED);
    CHECK(st_cpt_flags(0xFFFFFFFF) == ST_CPT_UNDEFINED);
    /* exactly one category everywhere */
    size_t bad = 0;
    for (uint32_t cp = 0; cp < ST_CPT_MAX; cp += 7) {
        uint16_t c = st_cpt_flags(cp) & ST_CPT_CATEGORIES;
        if (c == 0 || (c & (c - 1)) != 0) {
            bad++;
        }
    }
    CHECK(bad == 0);

    CHECK(st_cpt_tolower('A') == 'a' && st_cpt_tolower('a') == 'a' && st_cpt_tolower('1') == '1');
    CHECK(st_cpt_tolower(0xC9) == 0xE9);
    CHECK(st_cpt_tolower(0x130) == 'i');
    CHECK(st_cpt_tolower(0x212A) == 'k'); /* KELVIN SIGN */
    CHECK(st_cpt_tolower(0x10400) == 0x10428);
    CHECK(st_cpt_tolower(0x110000) == 0x110000);
}

static void test_gpt2_alphabet(void)
{
    CHECK(st_gpt2_byte_to_cpt('a') == 'a');
    CHECK(st_gpt2_byte_to_cpt(' ') == 0x120);  /* Ġ */
    CHECK(st_gpt2_byte_to_cpt('\n') == 0x10A); /* Ċ */
    CHECK(st_gpt2_byte_to_cpt(0) == 0x100);
    CHECK(st_gpt2_byte_to_cpt(0x7F) == 0x121);
    CHECK(st_gpt2_byte_to_cpt(0xAD) == 0x143);
    CHECK(st_gpt2_byte_to_cpt(0xFF) == 0xFF);
    bool seen[0x144] = {false};
    size_t bad = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = st_gpt2_byte_to_cpt((uint8_t)b);
        if (cp >= 0x144 || seen[cp] || st_gpt2_cpt_to_byte(cp) != b) {
            bad++;
        } else {
            seen[cp] = true;
        }
    }
    CHECK(bad == 0);
    CHECK(st_gpt2_cpt_to_byte(' ') == -1 && st_gpt2_cpt_to_byte(0xAD) == -1 && st_gpt2_cpt_to_byte(0x144) == -1);
}

typedef struct {
    st_pretok kind;
    const char *text;
    const char *words; /* joined with '|' */
} split_case;

static const split_case k_cases[] = {
    {ST_PRE_GPT2, "Hello world", "Hello| world"},
    {ST_PRE_GPT2, "I've 12345 !!", "I|'ve| 12345| !!"},
    {ST_PRE_GPT2, "a  b", "a| | b"},
    {ST_PRE_GPT2, "a  ", "a|  "},
    {ST_PRE_GPT2, "it's 'S", "it|'s| '|S"},
    {ST_PRE_GPT2, " \n\n x", " \n\n| x"},
    {ST_PRE_LLAMA3, "12345 678", "123|45| |678"},
    {ST_PRE_LLAMA3, "Hello\n\nworld", "Hello|\n\n|world"},
    {ST_PRE_LLAMA3, "'S 'Ll 'RE", "'S| '|Ll| '|RE"},
    {ST_PRE_LLAMA3, " !!\n\n a", " !!\n\n| a"},
    {ST_PRE_LLAMA3, "a \r\n  b", "a| \r\n| | b"},
    {ST_PRE_LLAMA3, "   ", "   "},
    {ST_PRE_QWEN2, "12345", "1|2|3|4|5"},
    {ST_PRE_QWEN2, "x\xc2""\xbd""\xd9""\xa1""y", "x|\xc2""\xbd""|\xd9""\xa1""|y"},
    {ST_PRE_QWEN2, "\xe4""\xbd""\xa0""\xe5""\xa5""\xbd"", world", "\xe4""\xbd""\xa0""\xe5""\xa5""\xbd""|,| world"},
    {ST_PRE_QWEN35, "e\xcc""\x81""t\xcc""\x81""", "e\xcc""\x81""t\xcc""\x81"""},
    {ST_PRE_QWEN35, "\xe1""\x9e""\x80""\xe1""\x9e""\xb6""\xe1""\x9e""\x93""\xe1""\x9f""\x8b""", "\xe1""\x9e""\x80""\xe1""\x9e""\xb6""\xe1""\x9e""\x93""\xe1""\x9f""\x8b"""},
    {ST_PRE_DEFAULT, "x 12345y", "x| |123|45|y"},
    {ST_PRE_DEFAULT, "a,b...c", "a|,|b|...|c"},
    {ST_PRE_DEFAULT, "a`b $5 <=> 1234567", "a|`|b| |$|5| |<=>| |123|456|7"},
    {ST_PRE_DEFAULT, "don't stop\xe2""\x80""\xa6"" ok", "don|'|t| stop|\xe2""\x80""\xa6""| ok"},
    {ST_PRE_STARCODER, "abc123 4x", "abc|1|2|3| |4|x"},
    {ST_PRE_STARCODER, "v1.2.3", "v|1|.|2|.|3"},
};

static void test_pretokenize(void)
{
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        const split_case *c = &k_cases[i];
        size_t len = strlen(c->text);
        uint32_t cpts[64];
        size_t lens[64];
        size_t n = st_utf8_to_cpts(c->text, len, cpts);
        size_t nw = st_pretokenize(c->kind, cpts, n, lens);
        char joined[256] = "";
        size_t pos = 0, k = 0;
        for (size_t w = 0; w < nw; w++) {
            if (w > 0) {
                joined[pos++] = '|';
            }
            for (size_t j = 0; j < lens[w]; j++) {
                pos += st_utf8_encode(cpts[k++], joined + pos);
            }
        }
        joined[pos] = '\0';
        CHECK_MSG(k == n && strcmp(joined, c->words) == 0, "case %zu '%s': got '%s' want '%s'", i, c->text, joined,
                  c->words);
    }
    size_t lens[1];
    CHECK(st_pretokenize(ST_PRE_QWEN2, NULL, 0, lens) == 0);
}

int main(void)
{
    test_utf8();
    test_flags();
    test_gpt2_alphabet();
    test_pretokenize();
    TEST_MAIN_END();
}
