#include "chat.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    CHAT_CHATML,
    CHAT_LLAMA3,
    CHAT_LLAMA2_SYS,
    CHAT_LLAMA2_SYS_STRIP,
    CHAT_LLAMA2_SYS_BOS,
    CHAT_LLAMA2,        /* no system support: "mistral" */
    CHAT_MISTRAL_V1,
    CHAT_MISTRAL_V3,
    CHAT_MISTRAL_V3_TEKKEN,
    CHAT_MISTRAL_V7,
    CHAT_MISTRAL_V7_TEKKEN,
    CHAT_PLAIN,
} chat_kind;

typedef struct {
    const char *name;
    chat_kind kind;
} chat_name;

/* Canonical names first: st_chat_detect returns these. */
static const chat_name chat_names[] = {
    {"chatml", CHAT_CHATML},
    {"llama3", CHAT_LLAMA3},
    {"llama2", CHAT_LLAMA2_SYS},
    {"llama2-strip", CHAT_LLAMA2_SYS_STRIP},
    {"llama2-bos", CHAT_LLAMA2_SYS_BOS},
    {"mistral", CHAT_LLAMA2},
    {"mistral-v1", CHAT_MISTRAL_V1},
    {"mistral-v3", CHAT_MISTRAL_V3},
    {"mistral-v3t", CHAT_MISTRAL_V3_TEKKEN},
    {"mistral-v7", CHAT_MISTRAL_V7},
    {"mistral-v7t", CHAT_MISTRAL_V7_TEKKEN},
    {"plain", CHAT_PLAIN},
    /* llama.cpp's spellings */
    {"llama2-sys", CHAT_LLAMA2_SYS},
    {"llama2-sys-strip", CHAT_LLAMA2_SYS_STRIP},
    {"llama2-sys-bos", CHAT_LLAMA2_SYS_BOS},
    {"mistral-v3-tekken", CHAT_MISTRAL_V3_TEKKEN},
    {"mistral-v7-tekken", CHAT_MISTRAL_V7_TEKKEN},
};

#define N_CHAT_NAMES (sizeof(chat_names) / sizeof(chat_names[0]))

static const chat_name *find_name(const char *name)
{
    for (size_t i = 0; i < N_CHAT_NAMES; i++) {
        if (strcmp(chat_names[i].name, name) == 0) {
            return &chat_names[i];
        }
    }
    return NULL;
}

static const char *canonical_name(chat_kind kind)
{
    for (size_t i = 0; i < N_CHAT_NAMES; i++) {
        if (chat_names[i].kind == kind) {
            return chat_names[i].name;
        }
    }
    return "plain";
}

static bool has(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

static chat_kind detect_kind(const char *t)
{
    if (t == NULL || t[0] == '\0') {
        return CHAT_PLAIN;
    }
    const chat_name *byname = find_name(t);
    if (byname != NULL) {
        return byname->kind;
    }
    if (has(t, "<|im_start|>")) {
        /* Phi-4 and SmolVLM use <|im_start|> but are not chatml. */
        if (has(t, "<|im_sep|>") || has(t, "<end_of_utterance>")) {
            return CHAT_PLAIN;
        }
        return CHAT_CHATML;
    }
    if (strncmp(t, "mistral", 7) == 0 || has(t, "[INST]")) {
        if (has(t, "[SYSTEM_PROMPT]")) {
            return CHAT_MISTRAL_V7;
        }
        if (has(t, "' [INST] ' + system_message") || has(t, "[AVAILABLE_TOOLS]")) {
            if (has(t, " [INST]")) {
                return CHAT_MISTRAL_V1;
            }
            if (has(t, "\"[INST]\"")) {
                return CHAT_MISTRAL_V3_TEKKEN;
            }
            return CHAT_MISTRAL_V3;
        }
        if (has(t, "content.strip()")) {
            return CHAT_LLAMA2_SYS_STRIP;
        }
        if (has(t, "bos_token + '[INST]")) {
            return CHAT_LLAMA2_SYS_BOS;
        }
        if (has(t, "<<SYS>>")) {
            return CHAT_LLAMA2_SYS;
        }
        return CHAT_LLAMA2;
    }
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>")) {
        return CHAT_LLAMA3;
    }
    return CHAT_PLAIN;
}

const char *st_chat_detect(const char *jinja)
{
    return canonical_name(detect_kind(jinja));
}

/* ------------------------------------------------------------- output -- */

typedef struct {
    char *buf; /* (cap), NUL-terminated at len */
    size_t len;
    size_t cap;
    bool oom;
} strbuf;

static void put_n(strbuf *b, const char *s, size_t n)
{
    if (b->oom) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        char *nb = realloc(b->buf, cap);
        if (nb == NULL) {
            b->oom = true;
            return;
        }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void put(strbuf *b, const char *s)
{
    put_n(b, s, strlen(s));
}

/* llama.cpp's trim(): isspace at both ends. */
static void put_trimmed(strbuf *b, const char *s)
{
    size_t start = 0;
    size_t end = strlen(s);
    while (start < end && isspace((unsigned char)s[start])) {
        start++;
    }
    while (end > start && isspace((unsigned char)s[end - 1])) {
        end--;
    }
    put_n(b, s + start, end - start);
}

static void put_content(strbuf *b, const char *s, bool trim)
{
    if (trim) {
        put_trimmed(b, s);
    } else {
        put(b, s);
    }
}

typedef enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT } chat_role;

static void render(chat_kind kind, const strata_chat_message *msgs, const chat_role *roles,
                   size_t n, bool add_ass, strbuf *b)
{
    switch (kind) {
    case CHAT_CHATML:
        for (size_t i = 0; i < n; i++) {
            put(b, "<|im_start|>");
            put(b, msgs[i].role);
            put(b, "\n");
            put(b, msgs[i].content);
            put(b, "<|im_end|>\n");
        }
        if (add_ass) {
            put(b, "<|im_start|>assistant\n");
        }
        break;
    case CHAT_LLAMA3:
        for (size_t i = 0; i < n; i++) {
            put(b, "<|start_header_id|>");
            put(b, msgs[i].role);
            put(b, "<|end_header_id|>\n\n");
            put_trimmed(b, msgs[i].content);
            put(b, "<|eot_id|>");
        }
        if (add_ass) {
            put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        }
        break;
    case CHAT_MISTRAL_V7:
    case CHAT_MISTRAL_V7_TEKKEN: {
        const char *sp = kind == CHAT_MISTRAL_V7 ? " " : "";
        for (size_t i = 0; i < n; i++) {
            if (roles[i] == ROLE_SYSTEM) {
                put(b, "[SYSTEM_PROMPT]");
                put(b, sp);
                put(b, msgs[i].content);
                put(b, "[/SYSTEM_PROMPT]");
            } else if (roles[i] == ROLE_USER) {
                put(b, "[INST]");
                put(b, sp);
                put(b, msgs[i].content);
                put(b, "[/INST]");
            } else {
                put(b, sp);
                put(b, msgs[i].content);
                put(b, "</s>");
            }
        }
        break;
    }
    case CHAT_MISTRAL_V1:
    case CHAT_MISTRAL_V3:
    case CHAT_MISTRAL_V3_TEKKEN: {
        const char *lead = kind == CHAT_MISTRAL_V1 ? " " : "";
        const char *trail = kind == CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
        bool trim_assistant = kind == CHAT_MISTRAL_V3;
        bool inside_turn = false;
        for (size_t i = 0; i < n; i++) {
            if (!inside_turn) {
                put(b, lead);
                put(b, "[INST]");
                put(b, trail);
                inside_turn = true;
            }
            if (roles[i] == ROLE_SYSTEM) {
                put(b, msgs[i].content);
                put(b, "\n\n");
            } else if (roles[i] == ROLE_USER) {
                put(b, msgs[i].content);
                put(b, lead);
                put(b, "[/INST]");
            } else {
                put(b, trail);
                put_content(b, msgs[i].content, trim_assistant);
                put(b, "</s>");
                inside_turn = false;
            }
        }
        break;
    }
    case CHAT_LLAMA2:
    case CHAT_LLAMA2_SYS:
    case CHAT_LLAMA2_SYS_STRIP:
    case CHAT_LLAMA2_SYS_BOS: {
        bool system_ok = kind != CHAT_LLAMA2;
        bool bos_inside = kind == CHAT_LLAMA2_SYS_BOS;
        bool strip = kind == CHAT_LLAMA2_SYS_STRIP;
        bool inside_turn = true; /* the first [INST] comes without BOS */
        put(b, "[INST] ");
        for (size_t i = 0; i < n; i++) {
            if (!inside_turn) {
                inside_turn = true;
                put(b, bos_inside ? "<s>[INST] " : "[INST] ");
            }
            if (roles[i] == ROLE_SYSTEM) {
                if (system_ok) {
                    put(b, "<<SYS>>\n");
                    put_content(b, msgs[i].content, strip);
                    put(b, "\n<</SYS>>\n\n");
                } else {
                    put_content(b, msgs[i].content, strip);
                    put(b, "\n");
                }
            } else if (roles[i] == ROLE_USER) {
                put_content(b, msgs[i].content, strip);
                put(b, " [/INST]");
            } else {
                put_content(b, msgs[i].content, strip);
                put(b, "</s>");
                inside_turn = false;
            }
        }
        break;
    }
    case CHAT_PLAIN:
        for (size_t i = 0; i < n; i++) {
            put(b, msgs[i].role);
            put(b, ": ");
            put(b, msgs[i].content);
            put(b, "\n");
        }
        if (add_ass) {
            put(b, "assistant:");
        }
        break;
    }
}

strata_err st_chat_apply(const char *template_name, const char *model_template_jinja,
                         const strata_chat_message *msgs, size_t n, bool add_generation_prompt,
                         char **out, strata_error *err)
{
    if (out == NULL) {
        return st_error(err, STRATA_ERR_ARG, "chat: out is NULL");
    }
    *out = NULL;
    if (msgs == NULL && n > 0) {
        return st_error(err, STRATA_ERR_ARG, "chat: messages is NULL");
    }
    chat_kind kind;
    if (template_name == NULL || template_name[0] == '\0') {
        kind = detect_kind(model_template_jinja);
    } else {
        const chat_name *cn = find_name(template_name);
        if (cn == NULL) {
            return st_error(err, STRATA_ERR_ARG,
                            "chat: unknown template \"%.64s\" (known: chatml, llama3, llama2, "
                            "llama2-strip, llama2-bos, mistral, mistral-v1, mistral-v3, "
                            "mistral-v3t, mistral-v7, mistral-v7t, plain)",
                            template_name);
        }
        kind = cn->kind;
    }
    chat_role *roles = st_malloc_array(n, sizeof(*roles));
    if (roles == NULL) {
        return st_error(err, STRATA_ERR_NOMEM, "chat: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (r == NULL || msgs[i].content == NULL) {
            free(roles);
            return st_error(err, STRATA_ERR_ARG, "chat: message %zu has no %s", i,
                            r == NULL ? "role" : "content");
        }
        if (strcmp(r, "system") == 0) {
            roles[i] = ROLE_SYSTEM;
        } else if (strcmp(r, "user") == 0) {
            roles[i] = ROLE_USER;
        } else if (strcmp(r, "assistant") == 0) {
            roles[i] = ROLE_ASSISTANT;
        } else {
            free(roles);
            return st_error(err, STRATA_ERR_ARG,
                            "chat: message %zu has role \"%.64s\"; expected system, user or assistant",
                            i, r);
        }
    }
    strbuf b = {0};
    put(&b, ""); /* an empty conversation still gives "" */
    render(kind, msgs, roles, n, add_generation_prompt, &b);
    free(roles);
    if (b.oom) {
        free(b.buf);
        return st_error(err, STRATA_ERR_NOMEM, "chat: out of memory");
    }
    *out = b.buf;
    return STRATA_OK;
}
