"""Tools in the Ollama export: a TEMPLATE for the chatml/Hermes convention, and the values Ollama gives it.

Ollama says a model "supports tools" when its TEMPLATE reads `.Tools`; it finds the text that opens a
call from the template (tools/template.go parseTag: the first text inside the `{{ if .ToolCalls }}`
block, cut at "{": here "<tool_call>") and parses the JSON after it into `tool_calls`. HERMES_TEMPLATE
writes what data/chat_jinja.CHATML writes (Qwen2.5's convention):

    tools       a system turn: the system text, "# Tools ... <tools>", one line of JSON per tool,
                "</tools> ... <tool_call></tool_call> XML tags: ..."
    calls       after the assistant's content: "<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>",
                "\\n" between calls (and after content)
    results     consecutive tool messages in one user turn of "\\n<tool_response>\\n...\\n</tool_response>"
    reasoning   an assistant message's thinking as "<think>\\n...\\n</think>\\n\\n" before its content

The JSON itself is Ollama's, not Python's: Go's encoding/json (no spaces, map keys sorted, <>& escaped)
of Ollama's structs (a tool's name, description, parameters {type, required, properties}; a property's
anyOf, type, items, description, enum, properties, required; other schema keys dropped). So a TEMPLATE
is checked against the run's rendering with every JSON value compared as a value (`same_but_json`):
the text between them must be identical.
"""

from __future__ import annotations

import json
import re

from tunelab.export.gotemplate import Struct, go_quote

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


# consecutive tool results as one user turn of <tool_response> blocks, and the end of the message loop:
# the Hermes tail shared by the chatml and qwen3 TEMPLATEs (export/ollama_families.py)
HERMES_TOOL_RESULTS = (
    "{{ else if eq .Role \"tool\" }}{{ if ne $prev \"tool\" }}<|im_start|>user{{ end }}"
    "\n<tool_response>\n{{ .Content }}\n</tool_response>"
    "\n{{- end }}"
    "\n{{- $prev = .Role }}"
    "\n{{- end }}"
    "\n{{- if eq $prev \"tool\" }}<|im_end|>\n{{ end }}"
)


def go_json(value) -> str:
    """Go's json.Marshal of `value` (dicts as given: sort a Go map's keys before calling)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return "".join(_ESCAPES.get(c, c) for c in text)


def _sorted(v):
    """A JSON value decoded into Go's `any`: every map's keys sorted (Go marshals maps that way)."""
    if isinstance(v, dict):
        return {k: _sorted(v[k]) for k in sorted(v)}
    return [_sorted(x) for x in v] if isinstance(v, list) else v


def _property(p: dict) -> dict:
    """api.ToolProperty as Go marshals it: its fields in order, empty ones left out, others dropped."""
    out = {}
    if p.get("anyOf"):
        out["anyOf"] = [_property(x) for x in p["anyOf"]]
    if p.get("type"):
        out["type"] = p["type"]
    for key in ("items", "description", "enum"):
        if p.get(key):
            out[key] = _sorted(p[key])
    if p.get("properties") is not None:
        out["properties"] = {k: _property(v) for k, v in sorted(p["properties"].items())}
    if p.get("required"):
        out["required"] = list(p["required"])
    return out


class GoValue(Struct):
    """A struct whose printed form is its String() method's (`go_string`), as Ollama's tool types."""

    go_string = ""


class GoMap(dict):
    """A Go map[string]any that prints as its JSON (Ollama's templateArgs)."""

    @property
    def go_string(self) -> str:
        return go_json(_sorted(dict(self)))


def template_tool(tool: dict) -> GoValue:
    """Ollama's templateTool for an OpenAI tool (template.go convertToolsForTemplate)."""
    fn = tool.get("function", {})
    params = fn.get("parameters") or {}
    props = params.get("properties")
    p_json = {"type": params.get("type", "")}
    for key, name in (("$defs", "$defs"), ("items", "items")):
        if params.get(key):
            p_json[name] = _sorted(params[key])
    if params.get("required"):
        p_json["required"] = list(params["required"])
    p_json["properties"] = None if props is None else {k: _property(v) for k, v in sorted(props.items())}
    as_json = {"type": tool.get("type", "function")}
    as_json["function"] = {"name": fn.get("name", ""), "description": fn.get("description", ""), "parameters": p_json}
    out = GoValue(Type=tool.get("type", "function"), Items=None, Function=Struct(
        Name=fn.get("name", ""), Description=fn.get("description", ""),
        Parameters=Struct(Type=params.get("type", ""), Defs=params.get("$defs"), Items=params.get("items"),
                          Required=params.get("required"), Properties=props)))
    out.go_string = go_json(as_json)
    return out


def template_message(m: dict) -> Struct:
    """Ollama's templateMessage for an OpenAI-shaped message (calls' arguments parsed into a map)."""
    calls = []
    for i, c in enumerate(m.get("tool_calls") or []):
        fn = c.get("function", c)
        args = fn.get("arguments") or {}
        calls.append(Struct(ID=c.get("id", ""), Function=Struct(
            Index=i, Name=fn["name"], Arguments=GoMap(json.loads(args) if isinstance(args, str) else args))))
    return Struct(Role=m["role"], Content=m.get("content") or "", Thinking=m.get("reasoning_content") or "",
                  Images=None, ToolCalls=calls, ToolName=m.get("name", ""), ToolCallID=m.get("tool_call_id", ""))


# ---- the TEMPLATE ------------------------------------------------------------------------------------------
_TOOLS_TEXT = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided "
               "with function signatures within <tools></tools> XML tags:\n<tools>")
_CALL_FORMAT = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
                "<args-json-object>}\n</tool_call><|im_end|>\n")


def hermes_template(default_system: str) -> str:
    """The Go TEMPLATE of the chatml format with Hermes tools (module docstring); `default_system` is the
    system text when a chat has none (the run's data.system). Layout newlines are eaten by `{{-`."""
    default = (f"\n{{{{- if not $system }}}}{{{{ $system = {go_quote(default_system)} }}}}{{{{ end }}}}"
               if default_system else "")
    return (
        "{{- $system := .System }}" + default +
        "\n{{- if .Tools }}<|im_start|>system\n{{ if $system }}{{ $system }}\n\n{{ end }}" + _TOOLS_TEXT +
        "\n{{- range .Tools }}\n{{ . }}\n{{- end }}" + _CALL_FORMAT +
        "{{ else if $system }}<|im_start|>system\n{{ $system }}<|im_end|>\n{{ end }}"
        "\n{{- $prev := \"\" }}"
        "\n{{- range .Messages }}"
        "\n{{- if and (eq $prev \"tool\") (ne .Role \"tool\") }}<|im_end|>\n{{ end }}"
        "\n{{- if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n"
        "{{ else if eq .Role \"assistant\" }}<|im_start|>assistant\n"
        "{{ if .Thinking }}<think>\n{{ .Thinking }}\n</think>\n\n{{ end }}{{ .Content }}"
        "\n{{- $calls := .ToolCalls }}"
        "\n{{- if and .Content (len $calls) }}\n{{ end }}"
        "\n{{- if .ToolCalls }}{{ range $i, $c := .ToolCalls }}<tool_call>\n"
        "{\"name\": \"{{ .Function.Name }}\", \"arguments\": {{ .Function.Arguments }}}\n</tool_call>"
        "{{ if gt (len (slice $calls $i)) 1 }}\n{{ end }}{{ end }}{{ end }}<|im_end|>\n"
        + HERMES_TOOL_RESULTS +
        "\n{{- if ne $prev \"assistant\" }}<|im_start|>assistant\n{{ end }}"
    )


def call_tag(template_text: str) -> str:
    """The text Ollama watches for to read a call (tools/template.go parseTag, on the source): the first
    non-blank text inside `{{ if .ToolCalls }}` (entering `range` blocks), cut at "{" and stripped; "{"
    when there is none."""
    m = re.search(r"\{\{-?\s*if \.ToolCalls\s*-?\}\}", template_text)
    if m is None:
        return "{"
    rest = template_text[m.end():]
    while (r := re.match(r"\s*\{\{-?\s*range\b.*?\}\}", rest, re.S)) is not None:
        rest = rest[r.end():]
    return rest.split("{{")[0].split("{")[0].strip() or "{"


# ---- the check ---------------------------------------------------------------------------------------------
def json_tokens(text: str) -> list:
    """`text` as runs of plain text and the JSON objects / arrays in it (decoded), in order."""
    decoder, out, buf, i = json.JSONDecoder(), [], [], 0
    while i < len(text):
        if text[i] in "{[":
            try:
                value, end = decoder.raw_decode(text, i)
            except ValueError:
                value = None
            if isinstance(value, (dict, list)):
                out += (["".join(buf)] if buf else []) + [("json", value)]
                buf, i = [], end
                continue
        buf.append(text[i])
        i += 1
    return out + (["".join(buf)] if buf else [])


def same_but_json(a: str, b: str) -> bool:
    """The same text, each JSON object compared as a value (key order and spacing aside)."""
    return json_tokens(a) == json_tokens(b)


_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city & its <region>.",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "unit": {"type": "string", "enum": ["C", "F"], "description": "Unit"},
        "city": {"type": "string", "description": "The city's name"}}}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "description": "The time now.",
                                              "parameters": {"type": "object", "properties": {}}}}


def tool_probes() -> list[tuple[list[dict], list[dict]]]:
    """(tools, conversation) pairs a tool-aware TEMPLATE must render as the run does: with and without a
    system turn, a call with and without content, two calls, consecutive results, a reply after them,
    ending on the user, on results, or on a reply."""
    s, u = {"role": "system", "content": "Be exact."}, {"role": "user", "content": "Weather in Oslo & time?"}
    call = [{"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "C"}'}}]
    two = call + [{"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]
    a1 = {"role": "assistant", "content": "", "tool_calls": call}
    a2 = {"role": "assistant", "content": "Checking both.", "tool_calls": two}
    r1 = {"role": "tool", "tool_call_id": "call_1", "content": "4 C"}
    r2 = {"role": "tool", "tool_call_id": "call_2", "content": "12:00"}
    done = {"role": "assistant", "content": "4 C in Oslo at noon."}
    tools = [_WEATHER, TIME_TOOL]
    return [(tools, [u]), (tools, [s, u]), (tools, [u, a1, r1]), (tools, [s, u, a2, r1, r2]),
            (tools, [u, a2, r1, r2, done]), (tools, [s, u, a1, r1, done, {"role": "user", "content": "Thanks"}]),
            ([], [u, a1, r1, done])]
