#include "chat.h"
#include "test.h"

/* The conversation of llama.cpp's tests/test-chat-template.cpp. */
static const strata_chat_message conversation[] = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};

typedef struct {
    const char *detected; /* what st_chat_detect must say */
    const char *jinja;    /* the model's template (from llama.cpp's test) */
    const char *expected; /* llama.cpp's expected_output */
} model_case;

static const model_case model_cases[] = {
    {
        "chatml",
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n",
    },
    {
        "mistral",
        "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
        "[INST] You are a helpful assistant\nHello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>[INST] Another question [/INST]",
    },
    {
        "llama2-bos",
        "{%- for idx in range(0, messages|length) -%}\n{%- if messages[idx]['role'] == 'user' -%}\n{%- if idx > 1 -%}\n{{- bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' -}}\n{%- else -%}\n{{- messages[idx]['content'] + ' [/INST]' -}}\n{%- endif -%}\n{% elif messages[idx]['role'] == 'system' %}\n{{- '[INST] <<SYS>>\\n' + messages[idx]['content'] + '\\n<</SYS>>\\n\\n' -}}\n{%- elif messages[idx]['role'] == 'assistant' -%}\n{{- ' '  + messages[idx]['content'] + ' ' + eos_token -}}\n{% endif %}\n{% endfor %}",
        "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s><s>[INST] Who are you [/INST]   I am an assistant   </s><s>[INST] Another question [/INST]",
    },
    {
        "llama2-strip",
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% elif true == true and not '<<SYS>>' in messages[0]['content'] %}{% set loop_messages = messages %}{% set system_message = 'Vous êtes Vigogne, un assistant IA créé par Zaion Lab. Vous suivez extrêmement bien les instructions. Aidez autant que vous le pouvez.' %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'system' %}{{ '<<SYS>>\\n' + content.strip() + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
        "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]Hi there</s>[INST] Who are you [/INST]I am an assistant</s>[INST] Another question [/INST]",
    },
    {
        "llama3",
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}",
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nI am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    },
    {
        "mistral-v1",
        "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n",
        " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST]    I am an assistant   </s> [INST] Another question [/INST]",
    },
    {
        "mistral-v3",
        "{%- if messages[0][\"role\"] == \"system\" %}\n    {%- set system_message = messages[0][\"content\"] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list %}\n\n{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n{%- set ns = namespace() %}\n{%- set ns.index = 0 %}\n{%- for message in loop_messages %}\n    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n            {{- raise_exception(\"After the optional system message, conversation roles must alternate user/assistant/user/assistant/...\") }}\n        {%- endif %}\n        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        {%- if tools is not none and (message == user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS] [\" }}\n            {%- for tool in tools %}\n                {%- set tool = tool.function %}\n                {{- '{\"type\": \"function\", \"function\": {' }}\n                {%- for key, val in tool.items() if key != \"return\" %}\n                    {%- if val is string %}\n                        {{- '\"' + key + '\": \"' + val + '\"' }}\n                    {%- else %}\n                        {{- '\"' + key + '\": ' + val|tojson }}\n                    {%- endif %}\n                    {%- if not loop.last %}\n                        {{- \", \" }}\n                    {%- endif %}\n                {%- endfor %}\n                {{- \"}}\" }}\n                {%- if not loop.last %}\n                    {{- \", \" }}\n                {%- else %}\n                    {{- \"]\" }}\n                {%- endif %}\n            {%- endfor %}\n            {{- \"[/AVAILABLE_TOOLS]\" }}\n            {%- endif %}\n        {%- if loop.last and system_message is defined %}\n            {{- \"[INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n        {{- \"[TOOL_CALLS] [\" }}\n        {%- for tool_call in message.tool_calls %}\n            {%- set out = tool_call.function|tojson %}\n            {{- out[:-1] }}\n            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n                {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n            {%- endif %}\n            {{- ', \"id\": \"' + tool_call.id + '\"}' }}\n            {%- if not loop.last %}\n                {{- \", \" }}\n            {%- else %}\n                {{- \"]\" + eos_token }}\n            {%- endif %}\n        {%- endfor %}\n    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- \" \" + message[\"content\"]|trim + eos_token}}\n    {%- elif message[\"role\"] == \"tool_results\" or message[\"role\"] == \"tool\" %}\n        {%- if message.content is defined and message.content.content is defined %}\n            {%- set content = message.content.content %}\n        {%- else %}\n            {%- set content = message.content %}\n        {%- endif %}\n        {{- '[TOOL_RESULTS] {\"content\": ' + content|string + \", \" }}\n        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n            {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n        {%- endif %}\n        {{- '\"call_id\": \"' + message.tool_call_id + '\"}[/TOOL_RESULTS]' }}\n    {%- else %}\n        {{- raise_exception(\"Only user and assistant roles are supported, with the exception of an initial optional system message!\") }}\n    {%- endif %}\n{%- endfor %}\n",
        "[INST] You are a helpful assistant\n\nHello[/INST] Hi there</s>[INST] Who are you[/INST] I am an assistant</s>[INST] Another question[/INST]",
    },
    {
        "mistral-v3t",
        "{%- if messages[0][\"role\"] == \"system\" %}\n    {%- set system_message = messages[0][\"content\"] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n{%- set user_messages = loop_messages | selectattr(\"role\", \"equalto\", \"user\") | list %}\n\n{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n{%- set ns = namespace() %}\n{%- set ns.index = 0 %}\n{%- for message in loop_messages %}\n    {%- if not (message.role == \"tool\" or message.role == \"tool_results\" or (message.tool_calls is defined and message.tool_calls is not none)) %}\n        {%- if (message[\"role\"] == \"user\") != (ns.index % 2 == 0) %}\n            {{- raise_exception(\"After the optional system message, conversation roles must alternate user/assistant/user/assistant/...\") }}\n        {%- endif %}\n        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        {%- if tools is not none and (message == user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS][\" }}\n            {%- for tool in tools %}\n                {%- set tool = tool.function %}\n                {{- '{\"type\": \"function\", \"function\": {' }}\n                {%- for key, val in tool.items() if key != \"return\" %}\n                    {%- if val is string %}\n                        {{- '\"' + key + '\": \"' + val + '\"' }}\n                    {%- else %}\n                        {{- '\"' + key + '\": ' + val|tojson }}\n                    {%- endif %}\n                    {%- if not loop.last %}\n                        {{- \", \" }}\n                    {%- endif %}\n                {%- endfor %}\n                {{- \"}}\" }}\n                {%- if not loop.last %}\n                    {{- \", \" }}\n                {%- else %}\n                    {{- \"]\" }}\n                {%- endif %}\n            {%- endfor %}\n            {{- \"[/AVAILABLE_TOOLS]\" }}\n            {%- endif %}\n        {%- if loop.last and system_message is defined %}\n            {{- \"[INST]\" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST]\" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- elif (message.tool_calls is defined and message.tool_calls is not none) %}\n        {{- \"[TOOL_CALLS][\" }}\n        {%- for tool_call in message.tool_calls %}\n            {%- set out = tool_call.function|tojson %}\n            {{- out[:-1] }}\n            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n                {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n            {%- endif %}\n            {{- ', \"id\": \"' + tool_call.id + '\"}' }}\n            {%- if not loop.last %}\n                {{- \", \" }}\n            {%- else %}\n                {{- \"]\" + eos_token }}\n            {%- endif %}\n        {%- endfor %}\n    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- message[\"content\"] + eos_token}}\n    {%- elif message[\"role\"] == \"tool_results\" or message[\"role\"] == \"tool\" %}\n        {%- if message.content is defined and message.content.content is defined %}\n            {%- set content = message.content.content %}\n        {%- else %}\n            {%- set content = message.content %}\n        {%- endif %}\n        {{- '[TOOL_RESULTS]{\"content\": ' + content|string + \", \" }}\n        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n            {{- raise_exception(\"Tool call IDs should be alphanumeric strings with length 9!\") }}\n        {%- endif %}\n        {{- '\"call_id\": \"' + message.tool_call_id + '\"}[/TOOL_RESULTS]' }}\n    {%- else %}\n        {{- raise_exception(\"Only user and assistant roles are supported, with the exception of an initial optional system message!\") }}\n    {%- endif %}\n{%- endfor %}\n",
        "[INST]You are a helpful assistant\n\nHello[/INST]Hi there</s>[INST]Who are you[/INST]   I am an assistant   </s>[INST]Another question[/INST]",
    },
    {
        "mistral-v7",
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% else %}{{ raise_exception('Only user, system and assistant roles are supported!') }}{% endif %}{% endfor %}",
        "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST]    I am an assistant   </s>[INST] Another question[/INST]",
    },
};

/* Generated by linking llama.cpp's src/llama-chat.cpp into a driver that
 * calls llm_chat_apply_template for each template, conversation and
 * add_generation_prompt (llama.cpp's "llama2" is our "mistral"). */
static const strata_chat_message conv0[] = {
    {"system", "  Sys prompt \n"},
    {"user", " Hi\t"},
    {"assistant", "\nAnswer one  "},
    {"user", "Q2"},
};
static const strata_chat_message conv1[] = {
    {"user", "Just a user"},
};
static const strata_chat_message conv2[] = {
    {"system", "S"},
    {"user", "U"},
    {"assistant", "A"},
};

typedef struct {
    const char *name;
    size_t conv;
    bool add_ass;
    const char *expected;
} ref_case;

static const ref_case ref_cases[] = {
    {"chatml", 0, false, "<|im_start|>system\n  Sys prompt \n<|im_end|>\n<|im_start|>user\n Hi\t<|im_end|>\n<|im_start|>assistant\n\nAnswer one  <|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"},
    {"chatml", 0, true, "<|im_start|>system\n  Sys prompt \n<|im_end|>\n<|im_start|>user\n Hi\t<|im_end|>\n<|im_start|>assistant\n\nAnswer one  <|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n"},
    {"chatml", 1, false, "<|im_start|>user\nJust a user<|im_end|>\n"},
    {"chatml", 1, true, "<|im_start|>user\nJust a user<|im_end|>\n<|im_start|>assistant\n"},
    {"chatml", 2, false, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"},
    {"chatml", 2, true, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n<|im_start|>assistant\n"},
    {"llama3", 0, false, "<|start_header_id|>system<|end_header_id|>\n\nSys prompt<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nAnswer one<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ2<|eot_id|>"},
    {"llama3", 0, true, "<|start_header_id|>system<|end_header_id|>\n\nSys prompt<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nAnswer one<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nQ2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"llama3", 1, false, "<|start_header_id|>user<|end_header_id|>\n\nJust a user<|eot_id|>"},
    {"llama3", 1, true, "<|start_header_id|>user<|end_header_id|>\n\nJust a user<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"llama3", 2, false, "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"},
    {"llama3", 2, true, "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"llama2-sys", 0, false, "[INST] <<SYS>>\n  Sys prompt \n\n<</SYS>>\n\n Hi\t [/INST]\nAnswer one  </s>[INST] Q2 [/INST]"},
    {"llama2-sys", 0, true, "[INST] <<SYS>>\n  Sys prompt \n\n<</SYS>>\n\n Hi\t [/INST]\nAnswer one  </s>[INST] Q2 [/INST]"},
    {"llama2-sys", 1, false, "[INST] Just a user [/INST]"},
    {"llama2-sys", 1, true, "[INST] Just a user [/INST]"},
    {"llama2-sys", 2, false, "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]A</s>"},
    {"llama2-sys", 2, true, "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]A</s>"},
    {"llama2-sys-strip", 0, false, "[INST] <<SYS>>\nSys prompt\n<</SYS>>\n\nHi [/INST]Answer one</s>[INST] Q2 [/INST]"},
    {"llama2-sys-strip", 0, true, "[INST] <<SYS>>\nSys prompt\n<</SYS>>\n\nHi [/INST]Answer one</s>[INST] Q2 [/INST]"},
    {"llama2-sys-strip", 1, false, "[INST] Just a user [/INST]"},
    {"llama2-sys-strip", 1, true, "[INST] Just a user [/INST]"},
    {"llama2-sys-strip", 2, false, "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]A</s>"},
    {"llama2-sys-strip", 2, true, "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]A</s>"},
    {"llama2-sys-bos", 0, false, "[INST] <<SYS>>\n  Sys prompt \n\n<</SYS>>\n\n Hi\t [/INST]\nAnswer one  </s><s>[INST] Q2 [/INST]"},
    {"llama2-sys-bos", 0, true, "[INST] <<SYS>>\n  Sys prompt \n\n<</SYS>>\n\n Hi\t [/INST]\nAnswer one  </s><s>[INST] Q2 [/INST]"},
    {"llama2-sys-bos", 1, false, "[INST] Just a user [/INST]"},
    {"llama2-sys-bos", 1, true, "[INST] Just a user [/INST]"},
    {"llama2-sys-bos", 2, false, "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]A</s>"},
    {"llama2-sys-bos", 2, true, "[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST]A</s>"},
    {"mistral", 0, false, "[INST]   Sys prompt \n\n Hi\t [/INST]\nAnswer one  </s>[INST] Q2 [/INST]"},
    {"mistral", 0, true, "[INST]   Sys prompt \n\n Hi\t [/INST]\nAnswer one  </s>[INST] Q2 [/INST]"},
    {"mistral", 1, false, "[INST] Just a user [/INST]"},
    {"mistral", 1, true, "[INST] Just a user [/INST]"},
    {"mistral", 2, false, "[INST] S\nU [/INST]A</s>"},
    {"mistral", 2, true, "[INST] S\nU [/INST]A</s>"},
    {"mistral-v1", 0, false, " [INST]   Sys prompt \n\n\n Hi\t [/INST] \nAnswer one  </s> [INST] Q2 [/INST]"},
    {"mistral-v1", 0, true, " [INST]   Sys prompt \n\n\n Hi\t [/INST] \nAnswer one  </s> [INST] Q2 [/INST]"},
    {"mistral-v1", 1, false, " [INST] Just a user [/INST]"},
    {"mistral-v1", 1, true, " [INST] Just a user [/INST]"},
    {"mistral-v1", 2, false, " [INST] S\n\nU [/INST] A</s>"},
    {"mistral-v1", 2, true, " [INST] S\n\nU [/INST] A</s>"},
    {"mistral-v3", 0, false, "[INST]   Sys prompt \n\n\n Hi\t[/INST] Answer one</s>[INST] Q2[/INST]"},
    {"mistral-v3", 0, true, "[INST]   Sys prompt \n\n\n Hi\t[/INST] Answer one</s>[INST] Q2[/INST]"},
    {"mistral-v3", 1, false, "[INST] Just a user[/INST]"},
    {"mistral-v3", 1, true, "[INST] Just a user[/INST]"},
    {"mistral-v3", 2, false, "[INST] S\n\nU[/INST] A</s>"},
    {"mistral-v3", 2, true, "[INST] S\n\nU[/INST] A</s>"},
    {"mistral-v3-tekken", 0, false, "[INST]  Sys prompt \n\n\n Hi\t[/INST]\nAnswer one  </s>[INST]Q2[/INST]"},
    {"mistral-v3-tekken", 0, true, "[INST]  Sys prompt \n\n\n Hi\t[/INST]\nAnswer one  </s>[INST]Q2[/INST]"},
    {"mistral-v3-tekken", 1, false, "[INST]Just a user[/INST]"},
    {"mistral-v3-tekken", 1, true, "[INST]Just a user[/INST]"},
    {"mistral-v3-tekken", 2, false, "[INST]S\n\nU[/INST]A</s>"},
    {"mistral-v3-tekken", 2, true, "[INST]S\n\nU[/INST]A</s>"},
    {"mistral-v7", 0, false, "[SYSTEM_PROMPT]   Sys prompt \n[/SYSTEM_PROMPT][INST]  Hi\t[/INST] \nAnswer one  </s>[INST] Q2[/INST]"},
    {"mistral-v7", 0, true, "[SYSTEM_PROMPT]   Sys prompt \n[/SYSTEM_PROMPT][INST]  Hi\t[/INST] \nAnswer one  </s>[INST] Q2[/INST]"},
    {"mistral-v7", 1, false, "[INST] Just a user[/INST]"},
    {"mistral-v7", 1, true, "[INST] Just a user[/INST]"},
    {"mistral-v7", 2, false, "[SYSTEM_PROMPT] S[/SYSTEM_PROMPT][INST] U[/INST] A</s>"},
    {"mistral-v7", 2, true, "[SYSTEM_PROMPT] S[/SYSTEM_PROMPT][INST] U[/INST] A</s>"},
    {"mistral-v7-tekken", 0, false, "[SYSTEM_PROMPT]  Sys prompt \n[/SYSTEM_PROMPT][INST] Hi\t[/INST]\nAnswer one  </s>[INST]Q2[/INST]"},
    {"mistral-v7-tekken", 0, true, "[SYSTEM_PROMPT]  Sys prompt \n[/SYSTEM_PROMPT][INST] Hi\t[/INST]\nAnswer one  </s>[INST]Q2[/INST]"},
    {"mistral-v7-tekken", 1, false, "[INST]Just a user[/INST]"},
    {"mistral-v7-tekken", 1, true, "[INST]Just a user[/INST]"},
    {"mistral-v7-tekken", 2, false, "[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][INST]U[/INST]A</s>"},
    {"mistral-v7-tekken", 2, true, "[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][INST]U[/INST]A</s>"},
};

static void test_model_templates(void)
{
    size_t n_msgs = sizeof(conversation) / sizeof(conversation[0]);
    for (size_t i = 0; i < sizeof(model_cases) / sizeof(model_cases[0]); i++) {
        const model_case *c = &model_cases[i];
        CHECK_MSG(strcmp(st_chat_detect(c->jinja), c->detected) == 0, "detect %s gave %s",
                  c->detected, st_chat_detect(c->jinja));
        char *out = NULL;
        strata_error err = {0};
        CHECK(st_chat_apply(NULL, c->jinja, conversation, n_msgs, true, &out, &err) == STRATA_OK);
        CHECK_MSG(out != NULL && strcmp(out, c->expected) == 0, "%s:\n got: %s\nwant: %s",
                  c->detected, out ? out : "(null)", c->expected);
        free(out);
        /* the same by name */
        CHECK(st_chat_apply(c->detected, NULL, conversation, n_msgs, true, &out, &err) == STRATA_OK);
        CHECK_MSG(out != NULL && strcmp(out, c->expected) == 0, "by name %s", c->detected);
        free(out);
    }
}

static void test_reference_outputs(void)
{
    const strata_chat_message *convs[3] = {conv0, conv1, conv2};
    const size_t conv_n[3] = {4, 1, 3};
    for (size_t i = 0; i < sizeof(ref_cases) / sizeof(ref_cases[0]); i++) {
        const ref_case *c = &ref_cases[i];
        char *out = NULL;
        strata_error err = {0};
        strata_err rc = st_chat_apply(c->name, NULL, convs[c->conv], conv_n[c->conv], c->add_ass,
                                      &out, &err);
        CHECK_MSG(rc == STRATA_OK, "%s: %s", c->name, err.msg);
        CHECK_MSG(out != NULL && strcmp(out, c->expected) == 0, "%s conv %zu add %d:\n got: %s\nwant: %s",
                  c->name, c->conv, (int)c->add_ass, out ? out : "(null)", c->expected);
        free(out);
    }
}

static void test_llama2_sys(void)
{
    /* llama.cpp's LLAMA_2_SYS on the test conversation. */
    char *out = NULL;
    CHECK(st_chat_apply("llama2", NULL, conversation, 6, true, &out, NULL) == STRATA_OK);
    CHECK(out != NULL && strcmp(out, "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]"
                                     "Hi there</s>[INST] Who are you [/INST]   I am an assistant   </s>"
                                     "[INST] Another question [/INST]") == 0);
    free(out);
}

static void test_detect(void)
{
    CHECK(strcmp(st_chat_detect(NULL), "plain") == 0);
    CHECK(strcmp(st_chat_detect(""), "plain") == 0);
    CHECK(strcmp(st_chat_detect("{{ messages }}"), "plain") == 0);
    CHECK(strcmp(st_chat_detect("chatml"), "chatml") == 0);
    CHECK(strcmp(st_chat_detect("mistral-v3-tekken"), "mistral-v3t") == 0);
    /* Phi-4 uses <|im_start|> with <|im_sep|>: not chatml */
    CHECK(strcmp(st_chat_detect("<|im_start|>{{role}}<|im_sep|>"), "plain") == 0);
    /* Llama-2-chat's own template: strip variant, as llama.cpp decides */
    CHECK(strcmp(st_chat_detect("{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}<<SYS>>"),
                 "llama2-strip") == 0);
    CHECK(strcmp(st_chat_detect("[INST] <<SYS>>"), "llama2") == 0);
    CHECK(strcmp(st_chat_detect("{{'[INST] ' + m + ' [/INST]'}}"), "mistral") == 0);
    CHECK(strcmp(st_chat_detect("<|start_header_id|>x<|end_header_id|>"), "llama3") == 0);
    CHECK(strcmp(st_chat_detect("{% if x %}<|im_start|>{% endif %}<|start_header_id|>"), "chatml") == 0);
    /* every detected name fits strata_model_info.chat_template */
    for (size_t i = 0; i < sizeof(model_cases) / sizeof(model_cases[0]); i++) {
        CHECK(strlen(st_chat_detect(model_cases[i].jinja)) < sizeof(((strata_model_info *)0)->chat_template));
    }
}

static void test_plain(void)
{
    char *out = NULL;
    static const strata_chat_message m[] = {{"system", "Be brief."}, {"user", "Hi"}};
    CHECK(st_chat_apply("plain", NULL, m, 2, true, &out, NULL) == STRATA_OK);
    CHECK(out != NULL && strcmp(out, "system: Be brief.\nuser: Hi\nassistant:") == 0);
    free(out);
    CHECK(st_chat_apply(NULL, NULL, m, 2, false, &out, NULL) == STRATA_OK);
    CHECK(out != NULL && strcmp(out, "system: Be brief.\nuser: Hi\n") == 0);
    free(out);
    CHECK(st_chat_apply("chatml", NULL, NULL, 0, false, &out, NULL) == STRATA_OK);
    CHECK(out != NULL && out[0] == '\0');
    free(out);
}

static void test_errors(void)
{
    char *out = (char *)1;
    strata_error err = {0};
    CHECK(st_chat_apply("vicuna", NULL, conversation, 2, true, &out, &err) == STRATA_ERR_ARG);
    CHECK(out == NULL);
    CHECK(strstr(err.msg, "vicuna") != NULL);
    static const strata_chat_message bad[] = {{"user", "hi"}, {"tool", "x"}};
    CHECK(st_chat_apply("chatml", NULL, bad, 2, true, &out, &err) == STRATA_ERR_ARG);
    CHECK(strstr(err.msg, "tool") != NULL && strstr(err.msg, "message 1") != NULL);
    static const strata_chat_message nul[] = {{NULL, "x"}};
    CHECK(st_chat_apply("chatml", NULL, nul, 1, true, &out, &err) == STRATA_ERR_ARG);
    static const strata_chat_message nulc[] = {{"user", NULL}};
    CHECK(st_chat_apply("chatml", NULL, nulc, 1, true, &out, &err) == STRATA_ERR_ARG);
    CHECK(st_chat_apply("chatml", NULL, NULL, 1, true, &out, &err) == STRATA_ERR_ARG);
}

int main(void)
{
    test_model_templates();
    test_reference_outputs();
    test_llama2_sys();
    test_detect();
    test_plain();
    test_errors();
    TEST_MAIN_END();
}
