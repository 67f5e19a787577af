"""Normalize raw records into one chat Example type.

Accepted record shapes (auto-detected from the first record, or forced by `data.format`):
  messages           {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
  prompt_completion  {"prompt": str, "completion": str}
  alpaca             {"instruction": str, "input": str (optional), "output": str, "system": str (optional)}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.data.sources import Record
from tunelab.errors import TunelabError

ROLES = ("system", "user", "assistant")


@dataclass
class ChatExample:
    """A conversation: messages in OpenAI format; `where` is the file:line it came from."""

    messages: list[dict]
    where: str = ""
    meta: dict = field(default_factory=dict)


@dataclass
class TextExample:
    """Raw text for continued pretraining (task: pretrain)."""

    text: str
    where: str = ""


@dataclass
class ClassifyExample:
    """One text and its label name (task: classify); label ids come from the label set."""

    text: str
    label: str
    where: str = ""


@dataclass
class PreferenceExample:
    """A prompt with a preferred and a rejected reply (task: reward, dpo).

    `prompt` is the conversation so far in OpenAI messages form (usually one user turn);
    `chosen` and `rejected` are the two assistant replies as plain strings.
    """

    prompt: list[dict]
    chosen: str
    rejected: str
    where: str = ""


def detect_format(rec: Record) -> str:
    d = rec.data
    if "messages" in d:
        return "messages"
    if "prompt" in d and "completion" in d:
        return "prompt_completion"
    if "instruction" in d and "output" in d:
        return "alpaca"
    raise TunelabError(
        f"cannot tell the record format from its fields {sorted(d)}",
        where=rec.where,
        hint="use 'messages', 'prompt'+'completion', or 'instruction'+'output' (alpaca)",
    )


def _text(rec: Record, key: str, required: bool = True) -> str:
    if key not in rec.data or rec.data[key] is None:
        if required:
            raise TunelabError(f"missing field '{key}'", where=rec.where, hint=f"every record needs '{key}'")
        return ""
    val = rec.data[key]
    if not isinstance(val, str):
        raise TunelabError(f"field '{key}' must be a string, got {type(val).__name__}", where=rec.where)
    return val


def _from_messages(rec: Record) -> list[dict]:
    msgs = rec.data["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise TunelabError("field 'messages' must be a non-empty list", where=rec.where)
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise TunelabError(f"messages[{i}] needs 'role' and 'content'", where=rec.where)
        if m["role"] not in ROLES:
            raise TunelabError(f"messages[{i}].role '{m['role']}' is not one of {', '.join(ROLES)}", where=rec.where)
        if not isinstance(m["content"], str):
            raise TunelabError(f"messages[{i}].content must be a string", where=rec.where)
        if m["role"] == "system" and i != 0:
            raise TunelabError(f"messages[{i}]: a system message may only come first", where=rec.where)
        out.append({"role": m["role"], "content": m["content"]})
    turns = [m for m in out if m["role"] != "system"]
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            raise TunelabError(f"roles out of order: turn {i + 1} is '{m['role']}', expected '{want}'", where=rec.where,
                               hint="alternate user and assistant, starting with user")
    if not turns or turns[-1]["role"] != "assistant":
        raise TunelabError("the conversation must end with an assistant message", where=rec.where)
    return out


def to_example(rec: Record, fmt: str = "auto") -> ChatExample:
    """Normalize one record; raises TunelabError naming file:line and the field."""
    fmt = detect_format(rec) if fmt == "auto" else fmt
    if fmt == "messages":
        if "messages" not in rec.data:
            raise TunelabError("missing field 'messages'", where=rec.where)
        msgs = _from_messages(rec)
    elif fmt == "prompt_completion":
        msgs = [{"role": "user", "content": _text(rec, "prompt")}, {"role": "assistant", "content": _text(rec, "completion")}]
    elif fmt == "alpaca":
        instr, inp = _text(rec, "instruction"), _text(rec, "input", required=False)
        user = f"{instr}\n\n{inp}" if inp.strip() else instr
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": _text(rec, "output")}]
        system = _text(rec, "system", required=False)
        if system:
            msgs.insert(0, {"role": "system", "content": system})
    else:
        raise TunelabError(f"unknown format '{fmt}'", where="data.format")
    for m in msgs:
        if m["role"] == "assistant" and not m["content"].strip():
            raise TunelabError("empty assistant reply", where=rec.where, hint="every reply must have text to learn")
    return ChatExample(msgs, rec.where)


def to_examples(records: list[Record], fmt: str = "auto") -> list[ChatExample]:
    return [to_example(r, fmt) for r in records]
