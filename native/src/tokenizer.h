/* Tokenizer: the model's vocabulary, loaded from GGUF metadata, and
 * llama.cpp-identical tokenization (SPM "llama" and byte-level BPE "gpt2").
 *
 * A tokenizer owns copies of everything it uses; the gguf_file may be closed
 * once st_tokenizer_load returns. It is immutable after loading, so one
 * tokenizer can serve several threads.
 */
#ifndef ST_TOKENIZER_H
#define ST_TOKENIZER_H

#include "common.h"
#include "gguf.h"

#include <stdbool.h>

typedef struct st_tokenizer st_tokenizer;

strata_err st_tokenizer_load(const gguf_file *f, st_tokenizer **out, strata_error *err);
void st_tokenizer_free(st_tokenizer *t);

int st_tokenizer_n_vocab(const st_tokenizer *t);
const char *st_tokenizer_kind(const st_tokenizer *t); /* "spm" or "bpe" */

/* As strata_tokenize: writes at most cap tokens; *n_out receives the number
 * needed, and STRATA_ERR_LIMIT is returned when that exceeds cap. add_bos
 * puts the BOS token first (if the vocabulary has one); parse_special matches
 * control tokens written in the text (user-defined tokens always match, as
 * in llama.cpp). With add_bos false this gives exactly llama.cpp's
 * llama_tokenize(add_special=false); with add_bos true, llama.cpp's
 * add_special=true for vocabularies that add BOS and not EOS. */
strata_err st_tokenize(const st_tokenizer *t, const char *text, size_t len, bool add_bos,
                       bool parse_special, strata_token *out, size_t cap, size_t *n_out,
                       strata_error *err);

/* As strata_token_to_piece (llama_token_to_piece with lstrip 0): bytes
 * written, or -needed if cap is too small. Control and unknown tokens give
 * "" unless render_special. Out-of-range ids give 0. */
int st_token_to_piece(const st_tokenizer *t, strata_token tok, char *buf, size_t cap,
                      bool render_special);

/* Output bytes of a token (precomputed): byte tokens give their byte, SPM's
 * U+2581 becomes ' ', BPE text is mapped back from the byte alphabet.
 * Control, unknown, unused and out-of-range tokens give "" (len 0). Not
 * NUL-terminated in general (a byte token may be 0x00); *len is set. */
const char *st_token_bytes(const st_tokenizer *t, strata_token tok, size_t *len);

/* As llama.cpp's common_detokenize(tokens, special): the pieces joined, the
 * leading space of the first SPM piece dropped, and for BPE vocabularies
 * with clean_up_tokenization_spaces the " ." / " 's" style clean-up. *out is
 * malloc'd and NUL-terminated; *out_len (may be NULL) excludes the NUL. */
strata_err st_detokenize(const st_tokenizer *t, const strata_token *toks, size_t n,
                         bool render_special, char **out, size_t *out_len, strata_error *err);

/* End of generation: eos, eot, eom, <|im_end|>, <|eot_id|>, <|endoftext|>,
 * FIM pad/repo/sep... the set llama.cpp builds. */
bool st_token_is_eog(const st_tokenizer *t, strata_token tok);
bool st_token_is_control(const st_tokenizer *t, strata_token tok);

strata_token st_tokenizer_bos(const st_tokenizer *t); /* -1 if none */
strata_token st_tokenizer_eos(const st_tokenizer *t);
strata_token st_tokenizer_eot(const st_tokenizer *t);
/* tokenizer.ggml.add_bos_token, else llama.cpp's default for the vocab. */
bool st_tokenizer_add_bos_default(const st_tokenizer *t);

/* Exact token text lookup (e.g. "<|im_end|>"); -1 if none. */
strata_token st_tokenizer_find(const st_tokenizer *t, const char *text);

/* tokenizer.chat_template, or NULL. */
const char *st_tokenizer_chat_template(const st_tokenizer *t);

#endif
