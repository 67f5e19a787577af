"""What Ollama does with a Modelfile, for the export's check and the tests: its parser (parser/parser.go
ParseFile) and the prompt its chat handler builds with the TEMPLATE (server/routes.go, template/template.go).

`render_chat` gives the TEMPLATE Ollama's values: `.System` (all system messages joined by a blank line),
`.Messages` (the Modelfile SYSTEM first when a chat has none; consecutive messages of one role merged with
"\\n\\n", tool results apart), `.Tools`, and the request's `think` flag as `.Think` / `.IsThinkSet`.
"""

from __future__ import annotations

from tunelab.export.gotemplate import GoTemplate
from tunelab.export.ollama_tools import template_message, template_tool

_COMMANDS = {"from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
             "message", "requires"}


def _unquote(s: str) -> tuple[str, bool]:
    if s[:3] == '"""':
        return (s[3:-3], True) if len(s) >= 6 and s[-3:] == '"""' else ("", False)
    if s[:1] == '"':
        return (s[1:-1], True) if len(s) >= 2 and s[-1] == '"' else ("", False)
    return s, True


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, value) pairs as Ollama's parser reads them (parser/parser.go ParseFile): FROM is
    "model", PARAMETER gives (its name, value). Raises ValueError where Ollama would fail."""
    cmds: list[tuple[str, str]] = []
    state, buf, name = "nil", [], ""
    for ch in text:
        space, newline = ch in " \t", ch in "\r\n"
        if state == "nil":
            nxt, keep = ("comment", False) if ch == "#" else ("nil", False) if space or newline else ("name", True)
        elif state == "name":
            if not (ch.isascii() and ch.isalpha()) and not space:
                raise ValueError("invalid command")
            nxt, keep = ("name", True) if not space else ("value", False)
        elif state == "parameter":
            if not (ch.isascii() and (ch.isalnum() or ch == "_")) and not space:
                raise ValueError("unexpected EOF")
            nxt, keep = ("parameter", True) if not space else ("value", False)
        elif state == "value":
            nxt, keep = ("nil", True) if space or newline else ("value", True)
        else:  # comment
            nxt, keep = ("nil", False) if newline else ("comment", False)
        if nxt != state:
            word = "".join(buf)
            if state == "name":
                if word.lower() not in _COMMANDS:
                    raise ValueError(f"invalid command {word!r}")
                if word.lower() == "parameter":
                    nxt = "parameter"
                name = "model" if word.lower() == "from" else word.lower()
            elif state == "parameter":
                name = word
            elif state == "value":
                s, ok = _unquote(word.strip())
                if not ok or space:
                    buf.append(ch)
                    continue
                cmds.append((name, s))
            buf, state = [], nxt
        if keep and ch.isprintable():  # Go: strconv.IsPrint (a zeroed rune, keep=False, is never written)
            buf.append(ch)
    if state == "value":
        s, ok = _unquote("".join(buf).strip())
        if not ok:
            raise ValueError("unexpected EOF in a quoted value")
        cmds.append((name, s))
    elif state not in ("nil", "comment"):
        raise ValueError("unexpected EOF")
    if not any(c == "model" for c, _ in cmds):
        raise ValueError("no FROM line")
    return cmds


def render_chat(template_text: str, messages: list[dict], system: str | None = None,
                tools: list[dict] | None = None, think: bool | None = None) -> str:
    """The prompt Ollama's /api/chat builds from `messages` (OpenAI's shapes: tool_calls, tool results,
    reasoning_content), `tools` and the request's `think` flag (None: not set) with this TEMPLATE and a
    Modelfile SYSTEM (export/ollama_tools.py)."""
    t = GoTemplate(template_text)
    if "messages" not in t.identifiers():
        raise ValueError("only .Messages templates are emulated (not the legacy .Prompt/.Response form)")
    msgs = [dict(m) for m in messages]
    if msgs and msgs[0]["role"] != "system" and system:  # routes.go: the model's SYSTEM leads a chat without one
        msgs.insert(0, {"role": "system", "content": system})
    collated: list[dict] = []
    for m in msgs:  # template.go collate: consecutive messages of one role are merged
        if collated and collated[-1]["role"] == m["role"] and m["role"] != "tool":
            collated[-1]["content"] = (collated[-1]["content"] or "") + "\n\n" + (m["content"] or "")
        else:
            collated.append(dict(m))
    values = {
        "System": "\n\n".join(m["content"] for m in msgs if m["role"] == "system"),
        "Messages": [template_message(m) for m in collated],
        "Tools": [template_tool(t) for t in tools] if tools else None,
        "Response": "", "Think": bool(think), "ThinkLevel": "", "IsThinkSet": think is not None,
    }
    return t.execute(values)
