"""Input items for `tunelab data synth`: one text (and, for augment, its reply) per item, each with a stable id.

Input files:
  .txt    one item a line (blank lines skipped)
  .jsonl  one object a line; the text comes from `--field`, or the first present of the mode's
          default fields (below), or the user/assistant turn of a `messages` record.

    mode     text is                     default fields              reply (augment only)
    reverse  a finished output           text, output, completion    -
    respond  an instruction              text, instruction, prompt   -
    augment  an instruction to rephrase  text, instruction, prompt   output, completion, response

id = the record's `id` field when given, else "h-" + the first 12 hex digits of sha1(text), so the
same text always gets the same id and a restarted run can tell which items are done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError

MODES = ("reverse", "respond", "augment")
TEXT_FIELDS = {"reverse": ("text", "output", "completion"), "respond": ("text", "instruction", "prompt"),
               "augment": ("text", "instruction", "prompt")}
REPLY_FIELDS = ("output", "completion", "response")


@dataclass(frozen=True)
class SynthItem:
    """One unit of work: `text` goes into the teacher prompt; `reply` is kept as the answer in augment mode."""

    id: str
    text: str
    where: str
    reply: str | None = None


def stable_id(text: str) -> str:
    """'h-' + sha1(utf-8 text)[:12]: 48 bits, so a collision among 1M items has probability ~1e-3 * 1e-3 = 2e-3."""
    return "h-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _from_messages(d: dict, mode: str, where: str) -> tuple[str, str | None]:
    msgs = d["messages"]
    if not isinstance(msgs, list):
        raise TunelabError("field 'messages' must be a list", where=where)
    user = next((m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"), None)
    asst = next((m.get("content") for m in reversed(msgs) if isinstance(m, dict) and m.get("role") == "assistant"),
                None)
    text = asst if mode == "reverse" else user
    if not isinstance(text, str):
        want = "an assistant" if mode == "reverse" else "a user"
        raise TunelabError(f"'messages' has no {want} message with string content", where=where)
    return text, asst if mode == "augment" else None


def _record_text(d: dict, mode: str, field: str | None, where: str) -> tuple[str, str | None]:
    if field is None and "messages" in d and not any(k in d for k in TEXT_FIELDS[mode]):
        return _from_messages(d, mode, where)
    names = (field,) if field else TEXT_FIELDS[mode]
    key = next((k for k in names if k in d), None)
    if key is None:
        raise TunelabError(f"no text field: looked for {', '.join(names)} (fields: {', '.join(sorted(d)) or 'none'})",
                           where=where, hint="name the field with --field")
    text = d[key]
    if not isinstance(text, str):
        raise TunelabError(f"field '{key}' must be a string, got {type(text).__name__}", where=where)
    reply = None
    if mode == "augment":
        rkey = next((k for k in REPLY_FIELDS if k in d and k != key), None)
        if rkey is None or not isinstance(d[rkey], str):
            raise TunelabError(f"augment needs a reply to keep: one of {', '.join(REPLY_FIELDS)}", where=where,
                               hint="augment rephrases the instruction of an existing pair")
        reply = d[rkey]
    return text, reply


def read_items(path: str | Path, mode: str, field: str | None = None) -> tuple[list[SynthItem], int]:
    """(items in file order, number of duplicate lines skipped). A repeated text with the same id is skipped;
    a repeated explicit id with a different text is an error (both would claim one output line)."""
    p = Path(path)
    if mode not in MODES:
        raise TunelabError(f"unknown mode '{mode}'", where="--mode", hint=f"use one of {', '.join(MODES)}")
    if not p.is_file():
        raise TunelabError(f"file not found: {p}", where="INPUT", hint="give a .jsonl or .txt file of items")
    if p.suffix.lower() not in (".jsonl", ".txt"):
        raise TunelabError(f"unsupported input type '{p.suffix or p.name}'", where=f"INPUT: {p}",
                           hint="use .jsonl (one object a line) or .txt (one item a line)")
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise TunelabError("not valid UTF-8", where=f"INPUT: {p}", hint="re-save the file as UTF-8") from None
    if mode == "augment" and p.suffix.lower() == ".txt":
        raise TunelabError("augment needs pairs (an instruction and its reply)", where=f"INPUT: {p}",
                           hint="use a .jsonl with 'instruction' + 'output' (or prompt + completion, or messages)")
    items: dict[str, SynthItem] = {}
    dupes = 0
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p}:{i}"
        reply = None
        explicit = None
        if p.suffix.lower() == ".txt":
            text = line.strip()
        else:
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise TunelabError(f"invalid JSON ({e.msg} at column {e.colno})", where=where,
                                   hint="each line must be one JSON object") from None
            if not isinstance(d, dict):
                raise TunelabError(f"expected a JSON object, got {type(d).__name__}", where=where)
            text, reply = _record_text(d, mode, field, where)
            if d.get("id") is not None:
                if not isinstance(d["id"], (str, int)) or isinstance(d["id"], bool):
                    raise TunelabError("field 'id' must be a string or an integer", where=where)
                explicit = str(d["id"])
        if not text.strip():
            raise TunelabError("empty text", where=where, hint="remove the line or give it text")
        item = SynthItem(explicit or stable_id(text), text, where, reply)
        old = items.get(item.id)
        if old is not None:
            if (old.text, old.reply) != (item.text, item.reply):
                raise TunelabError(f"id '{item.id}' is used twice (first at {old.where})", where=where,
                                   hint="give every item its own id")
            dupes += 1
            continue
        items[item.id] = item
    if not items:
        raise TunelabError("the input has no items", where=f"INPUT: {p}", hint="add at least one line")
    return list(items.values()), dupes
