/* Chat templates: the fixed formats llama.cpp's llama_chat_apply_template
 * knows for the model families we run, chosen by name or detected from the
 * model's tokenizer.chat_template (Jinja source, never executed).
 *
 * Names (all <= 15 characters, so they fit strata_model_info.chat_template):
 *   chatml          <|im_start|>role\n...<|im_end|>\n          (Qwen, Hermes)
 *   llama3          <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>
 *   llama2          [INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST]  (llama.cpp "llama2-sys")
 *   llama2-strip    the same with every message trimmed  ("llama2-sys-strip": Llama-2-chat)
 *   llama2-bos      the same with <s> before each later [INST] ("llama2-sys-bos")
 *   mistral         [INST] ... [/INST] without <<SYS>>       (llama.cpp "llama2")
 *   mistral-v1      " [INST] ... [/INST]"
 *   mistral-v3      "[INST] ...[/INST]", assistant trimmed
 *   mistral-v3t     "[INST]...[/INST]" (llama.cpp "mistral-v3-tekken")
 *   mistral-v7      [SYSTEM_PROMPT] ... [INST] ... [/INST]
 *   mistral-v7t     the same without the spaces ("mistral-v7-tekken")
 *   plain           "role: content\n" lines, then "assistant:"
 * llama.cpp's long names are accepted as aliases. The output never starts
 * with BOS: the tokenizer adds it.
 */
#ifndef ST_CHAT_H
#define ST_CHAT_H

#include "common.h"

/* The template name for a model's Jinja chat template (NULL: "plain").
 * Follows llama.cpp's llm_chat_detect_template for the families above;
 * anything else is "plain". Returns a static string. */
const char *st_chat_detect(const char *jinja);

/* Render messages. template_name NULL or "" uses st_chat_detect on
 * model_template_jinja. Roles: "system", "user", "assistant". *out is
 * malloc'd and NUL-terminated. */
strata_err st_chat_apply(const char *template_name, const char *model_template_jinja,
                         const strata_chat_message *msgs, size_t n, bool add_generation_prompt,
                         char **out, strata_error *err);

#endif
