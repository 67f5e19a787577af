"""Ollama TEMPLATEs for the built-in formats that know tools: one `OllamaFamily` per format, by its name.

Each family writes a hand-made Go TEMPLATE (Ollama's library templates for llama3.1, qwen3 and mistral are
the model for its syntax: `.Tools`, `.ToolCalls`, tool messages, `.Thinking`, `$.IsThinkSet`); the text it
writes is that of the built-in's Jinja (data/chat_jinja.py), and `check_modelfile` holds it to that on the
plain, tool and (for thinking families) reasoning probes:

  chatml   Hermes tools: <tools> in the system turn, <tool_call>{json}</tool_call>, <tool_response> user turns
  qwen3    chatml + Hermes tools + Qwen3's thinking: "<think>\\n{r}\\n</think>\\n\\n" on the turns after the last
           user message (the last one always, empty or not), none on earlier turns; Ollama's `think: false`
           writes the empty think block after the generation prompt (the Jinja's enable_thinking=false)
  llama3   Llama 3.1 headers, the system turn with its dates ("Environment: ipython" with tools), the tools as
           JSON in the first user turn, a call as {"name": f, "parameters": {...}}, results as ipython turns
           (the output as a JSON string)
  mistral  "<s>[INST] {system}\\n\\n{user} [/INST]{reply}</s>" + [AVAILABLE_TOOLS][...] before the last user
           turn, [TOOL_CALLS][{..., "id": ...}], [TOOL_RESULTS]{"content": .., "call_id": ..}[/TOOL_RESULTS]

The system text is the first message's when it is a system message (Ollama puts the Modelfile SYSTEM there
when a chat has none), else the run's data.system written into the TEMPLATE. What Go's template language
cannot do is left out, and the docs say so (docs/export.md, "Ollama templates"): the Jinja's `strip('\\n')`
of reasoning and content, Qwen3's split of a "</think>" inside content, Qwen3's user turns that are
themselves "<tool_response>" text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tunelab.export.gotemplate import go_quote
from tunelab.export.ollama_tools import HERMES_TOOL_RESULTS, TIME_TOOL, hermes_template

_TOOLS_TEXT = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided "
               "with function signatures within <tools></tools> XML tags:\n<tools>")
_CALL_FORMAT = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
                "<args-json-object>}\n</tool_call><|im_end|>\n")
_LLAMA3_TOOLS = ("Given the following functions, please respond with a JSON for a function call with its proper "
                 "arguments that best answers the given prompt.\n\nRespond in the format {\"name\": function name, "
                 "\"parameters\": dictionary of argument name and its value}.Do not use variables.\n\n")


def _system(default: str) -> str:
    """$system: the first message's content when it is a system message, else `default`; $start: the index of
    the first message after that system message (0 or 1)."""
    out = ('{{- $system := "" }}\n{{- $start := 0 }}\n{{- range $i, $m := .Messages }}'
           '\n{{- if and (eq $i 0) (eq .Role "system") }}{{ $system = .Content }}{{ $start = 1 }}{{ end }}'
           '\n{{- end }}')
    return out + (f"\n{{{{- if not $start }}}}{{{{ $system = {go_quote(default)} }}}}{{{{ end }}}}" if default else "")


def _hermes_calls() -> str:
    """An assistant message's calls after its content: "\\n" after content, between calls."""
    return ("\n{{- $calls := .ToolCalls }}"
            "\n{{- if and .Content (len $calls) }}\n{{ end }}"
            "\n{{- if .ToolCalls }}{{ range $j, $c := .ToolCalls }}<tool_call>\n"
            "{\"name\": \"{{ .Function.Name }}\", \"arguments\": {{ .Function.Arguments }}}\n</tool_call>"
            "{{ if gt (len (slice $calls $j)) 1 }}\n{{ end }}{{ end }}{{ end }}")


def qwen3_template(default_system: str) -> str:
    """The Go TEMPLATE of the qwen3 built-in (module docstring)."""
    return (
        _system(default_system) +
        "\n{{- if .Tools }}<|im_start|>system\n{{ if $system }}{{ $system }}\n\n{{ end }}" + _TOOLS_TEXT +
        "\n{{- range .Tools }}\n{{ . }}\n{{- end }}" + _CALL_FORMAT +
        "{{ else if $system }}<|im_start|>system\n{{ $system }}<|im_end|>\n{{ end }}"
        "\n{{- $lastUser := len .Messages }}"
        "\n{{- range $i, $m := .Messages }}{{ if eq .Role \"user\" }}{{ $lastUser = $i }}{{ end }}{{ end }}"
        "\n{{- $prev := \"\" }}"
        "\n{{- range $i, $m := .Messages }}"
        "\n{{- $last := eq (len (slice $.Messages $i)) 1 }}"
        "\n{{- if and (eq $prev \"tool\") (ne .Role \"tool\") }}<|im_end|>\n{{ end }}"
        "\n{{- if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n"
        "{{ else if and (eq .Role \"system\") $i }}<|im_start|>system\n{{ .Content }}<|im_end|>\n"
        "{{ else if eq .Role \"assistant\" }}<|im_start|>assistant\n"
        "{{ if and (gt $i $lastUser) (or $last .Thinking) }}<think>\n{{ .Thinking }}\n</think>\n\n{{ end }}"
        "{{ .Content }}" + _hermes_calls() + "<|im_end|>\n"
        + HERMES_TOOL_RESULTS +
        "\n{{- if ne $prev \"assistant\" }}<|im_start|>assistant\n"
        "{{ if and $.IsThinkSet (not $.Think) }}<think>\n\n</think>\n\n{{ end }}{{ end }}"
    )


def llama3_template(default_system: str) -> str:
    """The Go TEMPLATE of the llama3 built-in (module docstring)."""
    return (
        _system(default_system) +
        "\n{{- $prev := \"\" }}"
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "{{ if .Tools }}Environment: ipython\n{{ end }}"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{{ $system }}<|eot_id|>"
        "\n{{- range $i, $m := .Messages }}"
        "\n{{- if eq .Role \"user\" }}<|start_header_id|>user<|end_header_id|>\n\n"
        "{{ if and $.Tools (eq $i $start) }}" + _LLAMA3_TOOLS + "{{ range $.Tools }}{{ . }}\n\n{{ end }}{{ end }}"
        "{{ .Content }}<|eot_id|>"
        "\n{{- else if eq .Role \"tool\" }}<|start_header_id|>ipython<|end_header_id|>\n\n"
        "{{ json .Content }}<|eot_id|>"
        "\n{{- else if eq .Role \"assistant\" }}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{{ if .Thinking }}<think>\n{{ .Thinking }}\n</think>\n\n{{ end }}{{ .Content }}"
        "\n{{- if .ToolCalls }}{{ if .Content }}\n{{ end }}{{ range $j, $c := .ToolCalls }}{{ if $j }}\n{{ end }}"
        "{\"name\": \"{{ .Function.Name }}\", \"parameters\": {{ .Function.Arguments }}}{{ end }}{{ end }}"
        "<|eot_id|>"
        "\n{{- end }}"
        "\n{{- if ne .Role \"system\" }}{{ $prev = .Role }}{{ end }}"
        "\n{{- end }}"
        "\n{{- if ne $prev \"assistant\" }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ end }}"
    )


def mistral_template(default_system: str) -> str:
    """The Go TEMPLATE of the mistral built-in with its v3 tool tokens (module docstring)."""
    return (
        _system(default_system) +
        "\n{{- $lastUser := -1 }}"
        "\n{{- range $i, $m := .Messages }}{{ if eq .Role \"user\" }}{{ $lastUser = $i }}{{ end }}{{ end }}"
        "\n{{- $first := true }}<s>"
        "\n{{- range $i, $m := .Messages }}"
        "\n{{- if eq .Role \"user\" }}"
        "\n{{- if and $.Tools (eq $i $lastUser) }}[AVAILABLE_TOOLS]["
        "{{ range $j, $t := $.Tools }}{{ if $j }}, {{ end }}{{ $t }}{{ end }}][/AVAILABLE_TOOLS]{{ end }}"
        "\n{{- if and $first $system }}[INST] {{ $system }}\n\n{{ .Content }} [/INST]"
        "{{ else }}[INST] {{ .Content }} [/INST]{{ end }}"
        "\n{{- $first = false }}"
        "\n{{- else if eq .Role \"tool\" }}[TOOL_RESULTS]{\"content\": {{ .Content }}, \"call_id\": "
        "\"{{ .ToolCallID }}\"}[/TOOL_RESULTS]"
        "\n{{- else if eq .Role \"assistant\" }}"
        "\n{{- if .Thinking }}<think>\n{{ .Thinking }}\n</think>\n\n{{ end }}{{ .Content }}"
        "\n{{- if .ToolCalls }}[TOOL_CALLS][{{ range $j, $c := .ToolCalls }}{{ if $j }}, {{ end }}"
        "{\"name\": \"{{ .Function.Name }}\", \"arguments\": {{ .Function.Arguments }}, \"id\": \"{{ .ID }}\"}"
        "{{ end }}]{{ end }}</s>"
        "\n{{- end }}"
        "\n{{- end }}"
    )


@dataclass(frozen=True)
class OllamaFamily:
    """One built-in format's Ollama TEMPLATE: `template(default_system)` is its Go source; `calls` how a call
    reads (the Modelfile comment); `thinking`: the TEMPLATE writes Qwen3-style reasoning blocks and answers
    Ollama's `think` flag (the others write a message's reasoning inline, as the run does)."""

    name: str
    template: Callable[[str], str]
    calls: str
    thinking: bool = False


FAMILIES: dict[str, OllamaFamily] = {f.name: f for f in (
    OllamaFamily("chatml", hermes_template, "Hermes <tool_call> calls"),
    OllamaFamily("qwen3", qwen3_template, "Hermes <tool_call> calls", thinking=True),
    OllamaFamily("llama3", llama3_template, "Llama 3.1 JSON calls"),
    OllamaFamily("mistral", mistral_template, "Mistral [TOOL_CALLS] calls"),
)}


def reasoning_probes() -> list[tuple[list[dict], list[dict]]]:
    """(tools, conversation) pairs with `reasoning_content`: on the last reply, on an earlier reply (dropped by qwen3), on a
    reply after the last user message that is not the last message, with a call."""
    u1, u2 = {"role": "user", "content": "Sum 2 and 3?"}, {"role": "user", "content": "And times?"}
    a1 = {"role": "assistant", "content": "5.", "reasoning_content": "2 + 3 = 5"}
    a2 = {"role": "assistant", "content": "6.", "reasoning_content": "2 * 3 = 6"}
    call = {"role": "assistant", "content": "", "reasoning_content": "Need the time.", "tool_calls": [
        {"id": "call_9", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}
    r = {"role": "tool", "tool_call_id": "call_9", "content": "12:00"}
    done = {"role": "assistant", "content": "Noon.", "reasoning_content": "It is 12:00."}
    s = {"role": "system", "content": "Think first."}
    tools = [TIME_TOOL]
    return [(tools, c) for c in ([u1, a1], [s, u1, a1, u2, a2], [u1, a1, u2], [u2, call, r, done], [s, u2, call, r])]
