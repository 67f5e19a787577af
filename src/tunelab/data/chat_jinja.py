'''The built-in chat formats that know tools and reasoning, written as Jinja chat templates.

Each renders a conversation of system/user/assistant/tool messages (`tools` in OpenAI's shape; calls with
`arguments` as objects; `reasoning_content` on assistant turns) as the family's own template does, and wraps
every assistant reply in `{% generation %}...{% endgeneration %}`: those markers give the learned spans
(transformers' assistant mask); `chat_template_jinja` removes them from the exported copy.

  chatml  Qwen2.5's convention: tools listed in the system turn, <tool_call>{json}</tool_call> after the content,
          consecutive tool results in one user turn of <tool_response> blocks; reasoning written inline
  qwen3   chatml + Qwen3's reasoning: "<think>\\n{r}\\n</think>\\n\\n" on the turns after the last user message
          (on the last turn even when empty); earlier turns lose theirs
  llama3  Llama 3.1's header tokens; tools in the first user turn, a call as {"name": f, "parameters": {...}}
          (several calls one per line, where Meta's template refuses more than one), results as ipython turns
          (the output as a JSON string, as Meta's template writes a string result)
  mistral the v0.1 turns "[INST] {user} [/INST]{reply}</s>" + Mistral's v3 tool tokens: [AVAILABLE_TOOLS] before
          the last user turn, [TOOL_CALLS][...] with 9-character ids, [TOOL_RESULTS]{"content": ..}[/TOOL_RESULTS]
The tested differences from each family's real template are listed in docs/tools.md.
'''

from __future__ import annotations

import re
from dataclasses import dataclass

GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")

_THINK_INLINE = (
    "{%- if message.reasoning_content is defined and message.reasoning_content is not none %}"
    "{{- '<think>\\n' + message.reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + (message.content or '').lstrip('\\n') }}"
    "{%- else %}{{- message.content or '' }}{%- endif %}"  # content is null beside tool_calls (OpenAI's shape)
)

_HERMES_CALLS = (
    "{%- if message.tool_calls %}{%- for tool_call in message.tool_calls %}"
    "{%- if (loop.first and content) or (not loop.first) %}{{- '\\n' }}{%- endif %}"
    "{%- set call = tool_call.function if tool_call.function is defined else tool_call %}"
    "{{- '<tool_call>\\n{\"name\": \"' + call.name + '\", \"arguments\": ' }}"
    "{%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}{%- endfor %}{%- endif %}"
)

_QWEN_TOOLS = (
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with "
    "function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}"
    "\\n</tool_call><|im_end|>\\n' }}"
)

_QWEN_TOOL_RESULT = (
    "{%- if loop.first or (messages[loop.index0 - 1].role != 'tool') %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}{{- '<|im_end|>\\n' }}{%- endif %}"
)

CHATML = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0].role == 'system' and messages[0].content %}"
    "{{- messages[0].content + '\\n\\n' }}{%- endif %}" + _QWEN_TOOLS +
    "{%- elif messages and messages[0].role == 'system' and messages[0].content %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}{{- '<|im_start|>user\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' }}{%- generation %}"
    "{%- set content = message.content %}" + _THINK_INLINE + _HERMES_CALLS +
    "{{- '<|im_end|>\\n' }}{%- endgeneration %}"
    "{%- elif message.role == 'tool' %}" + _QWEN_TOOL_RESULT +
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

QWEN3 = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}" + _QWEN_TOOLS +
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- set ns = namespace(last_query_index=messages|length - 1) %}"
    "{%- for message in messages %}{%- if message.role == 'user' and not (message.content.startswith('<tool_response>')"
    " and message.content.endswith('</tool_response>')) %}{%- set ns.last_query_index = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set content = message.content %}{%- set reasoning = '' %}"
    "{%- if message.reasoning_content is defined and message.reasoning_content is not none %}"
    "{%- set reasoning = message.reasoning_content %}"
    "{%- elif '</think>' in content %}{%- set reasoning = content.split('</think>')[0].rstrip('\\n')"
    ".split('<think>')[-1].lstrip('\\n') %}{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>assistant\\n' }}{%- generation %}"
    "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning) %}"
    "{{- '<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}{{- content }}{%- endif %}" + _HERMES_CALLS +
    "{{- '<|im_end|>\\n' }}{%- endgeneration %}"
    "{%- elif message.role == 'tool' %}" + _QWEN_TOOL_RESULT +
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

LLAMA3 = (
    "{{- '<|begin_of_text|>' }}"
    "{%- if messages and messages[0].role == 'system' %}{%- set system_message = messages[0].content %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{%- if tools %}{{- 'Environment: ipython\\n' }}{%- endif %}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' + system_message + '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}{{- '<|start_header_id|>user<|end_header_id|>\\n\\n' }}"
    "{%- if tools and loop.first %}"
    "{{- 'Given the following functions, please respond with a JSON for a function call with its proper arguments "
    "that best answers the given prompt.\\n\\nRespond in the format {\"name\": function name, \"parameters\": "
    "dictionary of argument name and its value}.Do not use variables.\\n\\n' }}"
    "{%- for t in tools %}{{- t | tojson(indent=4) }}{{- '\\n\\n' }}{%- endfor %}{%- endif %}"
    "{{- message.content + '<|eot_id|>' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' + message.content | tojson + '<|eot_id|>' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- generation %}" + _THINK_INLINE +
    "{%- if message.tool_calls %}{%- if message.content %}{{- '\\n' }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}{%- if not loop.first %}{{- '\\n' }}{%- endif %}"
    "{%- set call = tool_call.function if tool_call.function is defined else tool_call %}"
    "{{- '{\"name\": \"' + call.name + '\", \"parameters\": ' }}"
    "{%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}"
    "{{- '}' }}{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}{%- endgeneration %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

MISTRAL = (
    "{{- '<s>' }}"
    "{%- if messages and messages[0].role == 'system' %}{%- set system = messages[0].content %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system = '' %}{%- endif %}"
    "{%- set ns = namespace(first_user=true, last_user=-1) %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}"
    "{%- if tools and loop.index0 == ns.last_user %}{{- '[AVAILABLE_TOOLS][' }}"
    "{%- for tool in tools %}{{- '{\"type\": \"function\", \"function\": {' }}"
    "{%- for key, val in tool.function.items() if key != 'return' %}{{- '\"' + key + '\": ' + val | tojson }}"
    "{%- if not loop.last %}{{- ', ' }}{%- endif %}{%- endfor %}{{- '}}' }}"
    "{%- if not loop.last %}{{- ', ' }}{%- endif %}{%- endfor %}{{- '][/AVAILABLE_TOOLS]' }}{%- endif %}"
    "{%- if ns.first_user and system %}{{- '[INST] ' + system + '\\n\\n' + message.content + ' [/INST]' }}"
    "{%- else %}{{- '[INST] ' + message.content + ' [/INST]' }}{%- endif %}{%- set ns.first_user = false %}"
    "{%- elif message.role == 'tool' %}"
    "{{- '[TOOL_RESULTS]{\"content\": ' + message.content + ', \"call_id\": \"' + message.tool_call_id + "
    "'\"}[/TOOL_RESULTS]' }}"
    "{%- elif message.role == 'assistant' %}{%- generation %}" + _THINK_INLINE +
    "{%- if message.tool_calls %}{{- '[TOOL_CALLS][' }}{%- for tool_call in message.tool_calls %}"
    "{%- set call = tool_call.function if tool_call.function is defined else tool_call %}"
    "{{- '{\"name\": \"' + call.name + '\", \"arguments\": ' }}"
    "{%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}"
    "{{- ', \"id\": \"' + tool_call.id + '\"}' }}{%- if not loop.last %}{{- ', ' }}{%- endif %}{%- endfor %}"
    "{{- ']' }}{%- endif %}"
    "{{- '</s>' }}{%- endgeneration %}"
    "{%- endif %}{%- endfor %}"
)

@dataclass(frozen=True)
class JinjaFormat:
    """A built-in chat format written as Jinja: `stop` ends a reply at inference; `plain_as_turnformat`: a chat
    without tools or reasoning renders exactly as the same-named TurnFormat (tested), so it takes that faster path
    (~30 us an example instead of ~2 ms through Jinja)."""

    jinja: str
    stop: str
    plain_as_turnformat: bool = False


# the built-in name -> its Jinja. chatml and mistral also have a TurnFormat (templates.BUILTIN: plain chats, the
# Ollama export); qwen3 (an empty think block on the last reply) and llama3 (a system header in every chat) have
# none, so no TurnFormat approximates them
BUILTIN_JINJA: dict[str, JinjaFormat] = {
    "chatml": JinjaFormat(CHATML, "<|im_end|>", plain_as_turnformat=True),
    "qwen3": JinjaFormat(QWEN3, "<|im_end|>"),
    "llama3": JinjaFormat(LLAMA3, "<|eot_id|>"),
    "mistral": JinjaFormat(MISTRAL, "</s>", plain_as_turnformat=True),
}
PLAIN_AS_TURNFORMAT = frozenset(name for name, f in BUILTIN_JINJA.items() if f.plain_as_turnformat)


def without_generation_tags(jinja: str) -> str:
    """The same template without `{% generation %}` markers (they render nothing; llama.cpp's engine lacks them)."""
    return GENERATION_TAG.sub("", jinja)
