/* strata-worker: a model request (generate, chat, score, embed) into the
 * tokens and description the scheduler takes (see server_int.h). */
#include "server_int.h"

#include <stdlib.h>
#include <string.h>

/* Tokenize text into a malloc'd array. */
strata_err worker_tokenize(worker *w, const char *text, size_t len, bool add_bos, bool special, strata_token **out,
                           size_t *n, strata_error *e)
{
    size_t cap = len + 8;
    *out = malloc(cap * sizeof(strata_token));
    if (*out == NULL) {
        return st_error(e, STRATA_ERR_NOMEM, "out of memory");
    }
    strata_err rc = strata_tokenize(w->model, text, len, add_bos, special, *out, cap, n, e);
    if (rc == STRATA_ERR_LIMIT && *n > cap) {
        strata_token *t = realloc(*out, *n * sizeof(strata_token));
        if (t == NULL) {
            return st_error(e, STRATA_ERR_NOMEM, "out of memory");
        }
        *out = t;
        cap = *n;
        rc = strata_tokenize(w->model, text, len, add_bos, special, *out, cap, n, e);
    }
    if (rc != STRATA_OK) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

static int common_prefix(const strata_token *a, size_t na, const strata_token *b, size_t nb)
{
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) {
        i++;
    }
    return (int)i;
}

/* Tokens of a model request into r (generate, chat, score, embed). Returns
 * an error reply (malloc'd) or NULL on success. */
char *prepare(worker *w, const proto_req *q, wreq *r)
{
    strata_error e = {0};
    bool add_bos = q->has_add_bos ? q->add_bos : w->info.add_bos;
    size_t n = 0;
    strata_err rc = STRATA_OK;
    if (q->op == PROTO_GENERATE && q->tokens != NULL) {
        r->toks = malloc(((size_t)q->n_tokens + 1) * sizeof(strata_token));
        if (r->toks == NULL) {
            return proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
        }
        memcpy(r->toks, q->tokens, (size_t)q->n_tokens * sizeof(strata_token));
        n = (size_t)q->n_tokens;
        for (size_t i = 0; i < n; i++) {
            if (r->toks[i] >= w->info.n_vocab) {
                return proto_reply_error(q->id, "STRATA_ERR_ARG", "tokens[%zu] = %d is outside the vocabulary (%d)",
                                         i, r->toks[i], w->info.n_vocab);
            }
        }
    } else if (q->op == PROTO_CHAT) {
        size_t nm = q->n_messages;
        strata_chat_message *msgs = calloc(nm + 1, sizeof(*msgs));
        if (msgs == NULL) {
            return proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
        }
        size_t k = 0;
        if (q->system != NULL && (nm == 0 || strcmp(q->messages[0].role, "system") != 0)) {
            msgs[k].role = "system";
            msgs[k].content = q->system;
            k++;
        }
        memcpy(msgs + k, q->messages, nm * sizeof(*msgs));
        char *text = NULL;
        rc = strata_chat_apply(w->model, q->template_name, msgs, nm + k, true, &text, &e);
        free(msgs);
        if (rc == STRATA_OK) {
            rc = worker_tokenize(w, text, strlen(text), add_bos, true, &r->toks, &n, &e);
        }
        free(text);
        /* templates that write BOS themselves would otherwise get it twice */
        if (rc == STRATA_OK && n >= 2 && r->toks[0] == w->info.bos && r->toks[1] == w->info.bos) {
            memmove(r->toks, r->toks + 1, (n - 1) * sizeof(strata_token));
            n--;
        }
    } else {
        rc = worker_tokenize(w, q->text, q->text_len, add_bos, q->op == PROTO_GENERATE && q->special, &r->toks, &n, &e);
    }
    if (rc != STRATA_OK) {
        return proto_reply_error(q->id, strata_err_name(rc), "%s", e.msg);
    }
    if (n == 0) {
        return proto_reply_error(q->id, "STRATA_ERR_ARG", "the prompt is empty (no tokens)");
    }
    if (n > (size_t)w->o.max_prompt_tokens) {
        return proto_reply_error(q->id, "STRATA_ERR_LIMIT",
                                 "the prompt has %zu tokens; this worker accepts at most %d", n,
                                 w->o.max_prompt_tokens);
    }
    st_req_desc *d = &r->desc;
    d->prompt = r->toks;
    d->n_prompt = (int)n;
    d->cancel = &r->cancel;
    d->user = r;
    d->on_done = sched_done;
    if (q->op == PROTO_GENERATE || q->op == PROTO_CHAT) {
        d->kind = ST_REQ_GENERATE;
        d->sampling = q->sampling;
        d->max_tokens = q->max_tokens > 0 ? q->max_tokens : ST_MIN(256, w->o.max_new_tokens);
        d->on_piece = sched_piece;
        if (q->n_stop > 0) {
            r->stops = calloc(q->n_stop, sizeof(char *));
            if (r->stops == NULL) {
                return proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
            }
            r->n_stop = (int)q->n_stop;
            for (size_t i = 0; i < q->n_stop; i++) {
                r->stops[i] = strdup(q->stop[i]);
                if (r->stops[i] == NULL) {
                    return proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
                }
            }
            d->stop = (const char *const *)r->stops;
            d->n_stop = q->n_stop;
        }
    } else if (q->op == PROTO_EMBED) {
        d->kind = ST_REQ_EMBED;
    } else {
        /* score: each option's tokens are what tokenizing prompt + option adds
         * after the part all of them share with the prompt's own tokens */
        d->kind = ST_REQ_SCORE;
        int k = (int)q->n_options;
        r->opt_toks = calloc((size_t)k, sizeof(strata_token *));
        r->opt_text = calloc((size_t)k, sizeof(char *));
        r->opt_len = calloc((size_t)k, sizeof(int));
        strata_token **full = calloc((size_t)k, sizeof(strata_token *));
        size_t *nfull = calloc((size_t)k, sizeof(size_t));
        char *err = NULL;
        if (r->opt_toks == NULL || r->opt_text == NULL || r->opt_len == NULL || full == NULL || nfull == NULL) {
            err = proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
        }
        int shared = (int)n;
        for (int i = 0; err == NULL && i < k; i++) {
            size_t lo = strlen(q->options[i]);
            char *joined = malloc(q->text_len + lo + 1);
            r->opt_text[i] = strdup(q->options[i]);
            if (joined == NULL || r->opt_text[i] == NULL) {
                free(joined);
                err = proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
                break;
            }
            memcpy(joined, q->text, q->text_len);
            memcpy(joined + q->text_len, q->options[i], lo + 1);
            rc = worker_tokenize(w, joined, q->text_len + lo, add_bos, false, &full[i], &nfull[i], &e);
            free(joined);
            if (rc != STRATA_OK) {
                err = proto_reply_error(q->id, strata_err_name(rc), "%s", e.msg);
                break;
            }
            shared = ST_MIN(shared, common_prefix(full[i], nfull[i], r->toks, n));
        }
        if (err == NULL && shared < 1) {
            err = proto_reply_error(q->id, "STRATA_ERR_ARG", "the prompt is empty (no tokens before the options)");
        }
        for (int i = 0; err == NULL && i < k; i++) {
            int len = (int)nfull[i] - shared;
            if (len < 1) {
                err = proto_reply_error(q->id, "STRATA_ERR_ARG", "option %d adds no token to the prompt", i);
                break;
            }
            if (shared + len > w->o.max_prompt_tokens) {
                err = proto_reply_error(q->id, "STRATA_ERR_LIMIT",
                                        "prompt and option %d have %d tokens; this worker accepts at most %d", i,
                                        shared + len, w->o.max_prompt_tokens);
                break;
            }
            r->opt_toks[i] = malloc((size_t)len * sizeof(strata_token));
            if (r->opt_toks[i] == NULL) {
                err = proto_reply_error(q->id, "STRATA_ERR_NOMEM", "out of memory");
                break;
            }
            memcpy(r->opt_toks[i], full[i] + shared, (size_t)len * sizeof(strata_token));
            r->opt_len[i] = len;
        }
        for (int i = 0; full != NULL && i < k; i++) {
            free(full[i]);
        }
        free(full);
        free(nfull);
        d->n_options = k; /* wreq_free walks the option arrays */
        if (err != NULL) {
            return err;
        }
        d->n_prompt = shared;
        d->options = (const strata_token *const *)r->opt_toks;
        d->option_len = r->opt_len;
    }
    return NULL;
}
