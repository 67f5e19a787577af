"""Tool use in chat records: the `tools` list, assistant `tool_calls`, `tool` results, and their checks.

Normalized form (what a ChatExample holds and every template renders):
  tools      [{"type": "function", "function": {"name", "description"?, "parameters"?}}]   (OpenAI's shape;
             a bare {"name", ...} is wrapped; a JSON string holding the list is read, as ShareGPT files write it)
  calls      assistant {"role": "assistant", "content": str, "tool_calls": [{"id", "type": "function",
             "function": {"name": str, "arguments": dict}}]}: `arguments` becomes an object whether the file wrote
             a JSON string (OpenAI) or an object; a missing id becomes "call" + 5 digits (call00001, numbered in
             the record: 9 alphanumerics, the length Mistral's template demands)
  results    {"role": "tool", "content": str, "tool_call_id": id}: the id of the call it answers (a result with no
             id answers the oldest unanswered call)

Checks (each a TunelabError naming file:line and the field): arguments that are not a JSON object, a call to a
function the record's `tools` does not list, a tool result with no matching call.
"""

from __future__ import annotations

import json

from tunelab.data.tool_syntax import arguments_object
from tunelab.errors import TunelabError


def normalize_tools(raw, where: str, key: str = "tools") -> list[dict]:
    """A record's `tools` in OpenAI's shape (empty when absent)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else []
        except json.JSONDecodeError as e:
            raise TunelabError(f"field '{key}' is not valid JSON ({e.msg})", where=where) from None
    if not isinstance(raw, list):
        raise TunelabError(f"field '{key}' must be a list of functions, got {type(raw).__name__}", where=where)
    out = []
    for i, t in enumerate(raw):
        fn = t.get("function", t) if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise TunelabError(f"{key}[{i}] needs a function 'name'", where=where,
                               hint='e.g. {"type": "function", "function": {"name": "f", "parameters": {...}}}')
        out.append({"type": "function", "function": dict(fn)})
    return out


def tool_names(tools: list[dict]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def normalize_calls(raw, where: str, key: str, counter: list[int]) -> list[dict]:
    """Assistant `tool_calls` -> normalized calls; `counter` numbers generated ids across the record."""
    if not isinstance(raw, list) or not raw:
        raise TunelabError(f"{key} must be a non-empty list of calls", where=where)
    out = []
    for j, c in enumerate(raw):
        fn = c.get("function", c) if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise TunelabError(f"{key}[{j}] needs function.name", where=where,
                               hint='e.g. {"type": "function", "function": {"name": "f", "arguments": "{}"}}')
        try:
            args = arguments_object(fn.get("arguments", {}))
        except (ValueError, json.JSONDecodeError) as e:
            detail = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
            raise TunelabError(f"{key}[{j}].function.arguments is not valid JSON ({detail})", where=where,
                               hint="write the arguments as a JSON object, or a string holding one") from None
        cid = c.get("id") if isinstance(c, dict) and c is not fn else None
        if not cid:
            counter[0] += 1
            cid = f"call{counter[0]:05d}"
        out.append({"id": str(cid), "type": "function", "function": {"name": fn["name"], "arguments": args}})
    return out


def check_tool_use(msgs: list[dict], tools: list[dict], where: str, key: str) -> None:
    """Every call names a listed function (when the record lists any); every result answers an open call.

    Fills a missing `tool_call_id` with the oldest unanswered call's id (in place)."""
    names = set(tool_names(tools))
    pending: list[str] = []
    for i, m in enumerate(msgs):
        if m["role"] == "assistant" and m.get("tool_calls"):
            for j, c in enumerate(m["tool_calls"]):
                name = c["function"]["name"]
                if names and name not in names:
                    raise TunelabError(f"{key}[{i}].tool_calls[{j}]: function '{name}' is not in the record's tools",
                                       where=where, hint=f"tools lists: {', '.join(sorted(names))}")
            pending = [c["id"] for c in m["tool_calls"]]
        elif m["role"] == "tool":
            cid = m.get("tool_call_id")
            if cid is None and pending:
                m["tool_call_id"] = cid = pending[0]
            if cid not in pending:
                raise TunelabError(f"{key}[{i}]: tool result with no matching call"
                                   + (f" (tool_call_id '{cid}')" if cid is not None else ""), where=where,
                                   hint="a tool message answers a call of the assistant message before it")
            pending.remove(cid)
        elif m["role"] == "user":
            pending = []


def uses_tools(messages: list[dict], tools: list[dict] | None = None) -> bool:
    """Does rendering need a template with a tool convention (a tools list, a call or a tool result)?"""
    return bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
