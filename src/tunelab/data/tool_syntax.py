"""How a model family writes tool calls in its output text, and how to read them back.

One `ToolSyntax` per convention (the registry `SYNTAXES`):

  hermes       <tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>   (ChatML/Qwen; one block per call,
               blocks joined by "\\n"; content before the first block)
  llama3_json  {"name": "f", "parameters": {...}}                           (Llama 3.1; calls one per line)
  mistral      [TOOL_CALLS][{"name": "f", "arguments": {...}, "id": "..."}]  (Mistral; one JSON list)

Calls are OpenAI-shaped: {"id": "call_...", "type": "function", "function": {"name": str, "arguments": str}}.
`format_calls` accepts `arguments` as a JSON string or an object and writes the object's JSON
(`json.dumps(..., ensure_ascii=False)`: ", " and ": " separators, the same text as Jinja's `tojson` in
transformers' chat-template environment). `parse` returns `arguments` as a JSON string and new ids; text
whose calls do not parse comes back unchanged with no calls, so a caller never loses model output.

`split_reasoning` cuts a leading <think>...</think> block off an answer; `syntax_for` picks the convention of a
`data.templates.Template` (built-in name, else markers in its Jinja text; hermes by default).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

_DECODER = json.JSONDecoder()


def call_id() -> str:
    """A fresh OpenAI-style id: "call_" + 24 hex digits."""
    return "call_" + secrets.token_hex(12)


def arguments_object(arguments) -> dict:
    """`arguments` (a JSON string or a dict) as a dict; ValueError when the string is not a JSON object."""
    if isinstance(arguments, dict):
        return arguments
    if isinstance(arguments, str):
        value = json.loads(arguments) if arguments.strip() else {}
        if not isinstance(value, dict):
            raise ValueError(f"arguments must be a JSON object, got {type(value).__name__}")
        return value
    raise ValueError(f"arguments must be a JSON string or an object, got {type(arguments).__name__}")


def _fn(call: dict) -> dict:
    """The {"name", "arguments"} part of an OpenAI call (or of a bare {"name", "arguments"} dict)."""
    return call.get("function", call)


def _dump(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def openai_call(name: str, arguments: dict, id: str | None = None) -> dict:
    return {"id": id or call_id(), "type": "function",
            "function": {"name": name, "arguments": _dump(arguments)}}


def _decode_objects(text: str, sep: str = "") -> list | None:
    """Consecutive JSON values in `text` (whitespace and any of `sep`'s characters between them); None if any fails."""
    out, pos = [], 0
    while True:
        while pos < len(text) and (text[pos].isspace() or text[pos] in sep):
            pos += 1
        if pos >= len(text):
            return out
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError:
            return None
        out.append(value)


def _as_call(obj, args_key: str) -> dict | None:
    """{"name": str, args_key: object} -> an OpenAI call; anything else -> None."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(args_key, obj.get("arguments", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = arguments_object(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return openai_call(obj["name"], args)


@dataclass(frozen=True)
class ToolSyntax:
    """One family's tool-call convention: `start` opens a call in the model's output (a stream watches for it)."""

    name: str
    start: str
    end: str = ""  # closes one call (hermes) or the list (mistral); "" when the call is bare JSON
    args_key: str = "arguments"  # llama3_json writes "parameters"
    pattern: str = ""  # a regex matching the calls' text in a rendered reply (data inspect counts what it covers)
    call_depth: int = 1  # JSON nesting of a call object after `start` (mistral's calls sit in a list: 2)

    def format_calls(self, calls: list[dict]) -> str:
        """OpenAI calls -> the text the model emits for them (no content, no end-of-turn token)."""
        objs = [{"name": _fn(c)["name"], self.args_key: arguments_object(_fn(c).get("arguments", {}))} for c in calls]
        if self.name == "hermes":
            return "\n".join(f"{self.start}\n{_dump(o)}\n{self.end}" for o in objs)
        if self.name == "mistral":
            for o, c in zip(objs, calls):
                if c.get("id"):
                    o["id"] = c["id"]
            return self.start + _dump(objs)
        return "\n".join(_dump(o) for o in objs)

    def parse(self, text: str) -> tuple[str, list[dict]]:
        """(content without the calls, OpenAI calls); (text, []) when there is no call or one does not parse."""
        at = text.find(self.start)
        if at < 0:
            return text, []
        content, rest = text[:at], text[at:]
        if self.name == "hermes":
            calls = []
            blocks = re.split(re.escape(self.start), rest)[1:]
            for b in blocks:
                body, closed, after = b.partition(self.end)
                objs = _decode_objects(body)
                if not closed or objs is None or len(objs) != 1 or after.strip():
                    return text, []
                call = _as_call(objs[0], self.args_key)
                if call is None:
                    return text, []
                calls.append(call)
        elif self.name == "mistral":
            objs = _decode_objects(rest[len(self.start):])
            if not objs or len(objs) != 1 or not isinstance(objs[0], list) or not objs[0]:
                return text, []
            calls = [_as_call(o, self.args_key) for o in objs[0]]
            if any(c is None for c in calls):
                return text, []
        else:
            objs = _decode_objects(rest, sep=";")
            calls = [_as_call(o, self.args_key) for o in objs] if objs else [None]
            if any(c is None for c in calls):
                return text, []
        return content.rstrip("\n ") if calls else content, calls


SYNTAXES: dict[str, ToolSyntax] = {
    "hermes": ToolSyntax("hermes", start="<tool_call>", end="</tool_call>", pattern=r"<tool_call>.*?</tool_call>"),
    "llama3_json": ToolSyntax("llama3_json", start='{"name"', args_key="parameters", pattern=r'\{"name": [^\n]*\}'),
    "mistral": ToolSyntax("mistral", start="[TOOL_CALLS]", pattern=r"\[TOOL_CALLS\]\[.*\]", call_depth=2),
}

# the built-in template name -> its convention (templates without tools are absent: they get hermes)
TEMPLATE_SYNTAX = {"chatml": "hermes", "qwen3": "hermes", "llama3": "llama3_json", "mistral": "mistral"}
# a marker in a model's Jinja chat template -> its convention, checked in this order
JINJA_MARKERS = (("[TOOL_CALLS]", "mistral"), ("<tool_call>", "hermes"), ("<|python_tag|>", "llama3_json"),
                 ('"parameters": ', "llama3_json"))


def split_reasoning(text: str, open_tag: str = "<think>", close_tag: str = "</think>") -> tuple[str | None, str]:
    """(reasoning, answer) of a reply that may start with `open_tag`...`close_tag`.

    "<think>\\nplan\\n</think>\\n\\nanswer" -> ("plan", "answer") (whitespace around both stripped);
    a reply whose think block is never closed is all reasoning: "<think>plan" -> ("plan", "");
    a reply that only closes one (the template opened it in the prompt): "plan</think>answer" -> ("plan", "answer");
    no tags -> (None, text).
    """
    stripped = text.lstrip()
    if stripped.startswith(open_tag):
        body = stripped[len(open_tag):]
        reasoning, closed, answer = body.partition(close_tag)
        if not closed:
            return body.strip(), ""
        return reasoning.strip(), answer.strip()
    if close_tag in text and open_tag not in text:
        reasoning, _, answer = text.partition(close_tag)
        return reasoning.strip(), answer.strip()
    return None, text


def syntax_for(template) -> ToolSyntax:
    """The convention of a `Template`: its built-in name's, else the first marker found in its Jinja; hermes."""
    name = getattr(template, "name", "")
    if name in TEMPLATE_SYNTAX:
        return SYNTAXES[TEMPLATE_SYNTAX[name]]
    jinja = getattr(template, "jinja", None) or ""
    for marker, syntax in JINJA_MARKERS:
        if marker in jinja:
            return SYNTAXES[syntax]
    return SYNTAXES["hermes"]
