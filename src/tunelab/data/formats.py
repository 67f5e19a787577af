"""Normalize raw records into the Example type of the task.

Record shapes (`data.format`, or `auto`: detected per record from its fields and the task):
  task sft -> ChatExample
    messages           {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...], "tools": [...]}
                       assistant turns may carry `tool_calls` (OpenAI's shape) and `reasoning_content` (or an
                       inline <think>...</think> opening the content); tool turns a `tool_call_id`
    sharegpt           {"conversations": [{"from": "system"|"human"|"gpt"|"function_call"|"observation" (or
                       user/assistant/tool), "value": str}, ...], "tools": [...] or its JSON string}
                       function_call: the call(s) as JSON {"name", "arguments"}; observation: the tool's output
    prompt_completion  {"prompt": str, "completion": str}
    alpaca             {"instruction": str, "input": str (optional), "output": str, "system": str (optional)}
  task pretrain -> TextExample          text            {"text": str}
  task classify -> ClassifyExample      classification  {"text": str, "label": str | int | bool}
  task reward, dpo -> PreferenceExample preference      {"prompt": str | messages, "chosen": reply, "rejected": reply}
                                                        (reply: str, or [{"role": "assistant", "content": str}])

Tool use is normalized and checked by data/tools.py, reasoning split off by data/reasoning.py.
`data.columns` (our field name -> the file's field name, e.g. {prompt: question}) renames fields
before detection. Every error names the record's file:line and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tunelab.data.reasoning import split_message_reasoning
from tunelab.data.sources import Record
from tunelab.data.tools import check_tool_use, normalize_calls, normalize_tools
from tunelab.errors import TunelabError

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "function_call": "assistant", "observation": "tool", "tool": "tool"}
CHAT_FORMATS = ("messages", "sharegpt", "prompt_completion", "alpaca")
TASK_FORMATS = {"sft": CHAT_FORMATS, "pretrain": ("text",), "classify": ("classification",),
                "reward": ("preference",), "dpo": ("preference",)}


@dataclass
class ChatExample:
    """A conversation: messages in OpenAI format (data/tools.py: calls and results), `tools` the functions the
    record offers; `where` is the file:line it came from."""

    messages: list[dict]
    where: str = ""
    meta: dict = field(default_factory=dict)
    tools: list[dict] = field(default_factory=list)


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


Example = ChatExample | TextExample | ClassifyExample | PreferenceExample


# ---- columns and detection ---------------------------------------------------------------------------------
def apply_columns(rec: Record, columns: dict[str, str] | None) -> Record:
    """Rename the file's fields to ours: columns = {our name: file's name}; a missing file field is an error."""
    if not columns:
        return rec
    data = dict(rec.data)
    for ours, theirs in columns.items():
        if theirs not in rec.data:
            raise TunelabError(f"missing column '{theirs}' (mapped to '{ours}' by data.columns)", where=rec.where,
                               hint=f"the record has: {', '.join(sorted(map(str, rec.data))) or 'no fields'}")
        data.pop(theirs)
    for ours, theirs in columns.items():
        data[ours] = rec.data[theirs]
    return Record(data, rec.where)


def detect_format(rec: Record, task: str = "sft") -> str:
    d = rec.data
    if task != "sft":
        return TASK_FORMATS[task][0]
    if "messages" in d:
        return "messages"
    if "conversations" in d:
        return "sharegpt"
    if "prompt" in d and "completion" in d:
        return "prompt_completion"
    if "instruction" in d and "output" in d:
        return "alpaca"
    raise TunelabError(
        f"cannot tell the record format from its fields {sorted(d)}",
        where=rec.where,
        hint="use 'messages', 'conversations' (sharegpt), 'prompt'+'completion', or 'instruction'+'output' (alpaca); "
             "or rename fields with data.columns",
    )


def check_format(fmt: str, task: str) -> None:
    """A forced `data.format` must fit the task (e.g. 'text' is for pretrain)."""
    if fmt != "auto" and fmt not in TASK_FORMATS[task]:
        owner = next(t for t, fs in TASK_FORMATS.items() if fmt in fs)
        raise TunelabError(f"format '{fmt}' is for task {owner}, not {task}", where="data.format",
                           hint=f"for task {task} use: auto, {', '.join(TASK_FORMATS[task])}")


# ---- field readers -----------------------------------------------------------------------------------------
def _text(rec: Record, key: str, required: bool = True) -> str:
    if key not in rec.data or rec.data[key] is None:
        if required:
            raise TunelabError(f"missing field '{key}'", where=rec.where, hint=f"every record needs '{key}'")
        return ""
    val = rec.data[key]
    if not isinstance(val, str):
        raise TunelabError(f"field '{key}' must be a string, got {type(val).__name__}", where=rec.where)
    return val


def _nonempty(rec: Record, key: str) -> str:
    val = _text(rec, key)
    if not val.strip():
        raise TunelabError(f"field '{key}' is empty", where=rec.where, hint="every example needs text")
    return val


def _next_roles(prev: dict | None) -> tuple[str, ...]:
    """The roles that may follow `prev`: user first; an assistant after a user; tool results after an assistant's
    calls, then more results or the assistant; a user after an assistant's reply."""
    if prev is None or prev["role"] == "assistant" and not prev.get("tool_calls"):
        return ("user",)
    if prev["role"] == "user":
        return ("assistant",)
    if prev["role"] == "assistant":
        return ("tool",)
    return ("tool", "assistant")


def check_conversation(msgs: list[dict], where: str, field_name: str = "messages", end: str = "assistant") -> None:
    """System only first; user and assistant alternate from a user turn (tool results between an assistant's
    calls and its next turn); the last turn is `end`."""
    for i, m in enumerate(msgs):
        if m["role"] == "system" and i != 0:
            raise TunelabError(f"{field_name}[{i}]: a system message may only come first", where=where)
    turns = [m for m in msgs if m["role"] != "system"]
    prev = None
    for i, m in enumerate(turns):
        want = _next_roles(prev)
        if m["role"] not in want:
            expected = "' or '".join(want)
            raise TunelabError(f"{field_name}: roles out of order: turn {i + 1} is '{m['role']}', expected "
                               f"'{expected}'", where=where,
                               hint="alternate user and assistant, starting with user; tool results follow the "
                                    "assistant's tool_calls")
        prev = m
    if not turns or turns[-1]["role"] != end:
        raise TunelabError(f"{field_name}: the conversation must end with {'an' if end == 'assistant' else 'a'} "
                           f"{end} message", where=where)


def _message(rec: Record, key: str, i: int, m, counter: list[int]) -> dict:
    """One OpenAI message, normalized: content a string ("" for an assistant that only calls), tool_calls and
    tool_call_id kept, reasoning split off (data/reasoning.py)."""
    calls = m.get("tool_calls") if isinstance(m, dict) else None
    if not isinstance(m, dict) or "role" not in m or ("content" not in m and not calls):
        raise TunelabError(f"{key}[{i}] needs 'role' and 'content'", where=rec.where)
    if m["role"] not in ROLES:
        raise TunelabError(f"{key}[{i}].role '{m['role']}' is not one of {', '.join(ROLES)}", where=rec.where)
    content = m.get("content")
    if content is None and calls:
        content = ""
    if m["role"] == "tool" and isinstance(content, (dict, list)):  # a structured result: its JSON text
        content = json.dumps(content, ensure_ascii=False)
    if not isinstance(content, str):
        raise TunelabError(f"{key}[{i}].content must be a string, got {type(content).__name__}", where=rec.where)
    out = {"role": m["role"], "content": content}
    if m["role"] == "assistant":
        if calls:
            out["tool_calls"] = normalize_calls(calls, rec.where, f"{key}[{i}].tool_calls", counter)
        split_message_reasoning(out, m, rec.where, f"{key}[{i}]")
    if m["role"] == "tool" and m.get("tool_call_id") is not None:
        out["tool_call_id"] = str(m["tool_call_id"])
    return out


def _messages(rec: Record, key: str = "messages", end: str = "assistant") -> list[dict]:
    msgs = rec.data.get(key)
    if not isinstance(msgs, list) or not msgs:
        raise TunelabError(f"field '{key}' must be a non-empty list", where=rec.where)
    counter = [0]
    out = [_message(rec, key, i, m, counter) for i, m in enumerate(msgs)]
    check_conversation(out, rec.where, key, end)
    return out


def _sharegpt(rec: Record) -> list[dict]:
    conv = rec.data.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise TunelabError("field 'conversations' must be a non-empty list", where=rec.where)
    out: list[dict] = []
    counter = [0]
    for i, m in enumerate(conv):
        if not isinstance(m, dict) or "from" not in m or "value" not in m:
            raise TunelabError(f"conversations[{i}] needs 'from' and 'value'", where=rec.where)
        role = SHAREGPT_ROLES.get(m["from"])
        if role is None:
            raise TunelabError(f"conversations[{i}].from '{m['from']}' is not one of {', '.join(SHAREGPT_ROLES)}",
                               where=rec.where)
        if m["from"] == "function_call":  # the call(s) as JSON: {"name", "arguments"} or a list of them
            out.append(_sharegpt_call(rec, i, m["value"], counter))
            continue
        if not isinstance(m["value"], str):
            raise TunelabError(f"conversations[{i}].value must be a string, got {type(m['value']).__name__}",
                               where=rec.where)
        msg = {"role": role, "content": m["value"]}
        if role == "assistant":
            split_message_reasoning(msg, m, rec.where, f"conversations[{i}]")
        out.append(msg)
    check_conversation(out, rec.where, "conversations")
    return out


def _sharegpt_call(rec: Record, i: int, value, counter: list[int]) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise TunelabError(f"conversations[{i}].value: a function_call is not valid JSON ({e.msg})",
                               where=rec.where, hint='write {"name": "f", "arguments": {...}}') from None
    calls = value if isinstance(value, list) else [value]
    return {"role": "assistant", "content": "",
            "tool_calls": normalize_calls(calls, rec.where, f"conversations[{i}].value", counter)}


# ---- one converter per task ----------------------------------------------------------------------------------
def to_chat(rec: Record, fmt: str = "auto") -> ChatExample:
    """Normalize one sft record; raises TunelabError naming file:line and the field."""
    fmt = detect_format(rec) if fmt == "auto" else fmt
    if fmt in ("messages", "sharegpt"):
        key = "messages" if fmt == "messages" else "conversations"
        if key not in rec.data:
            raise TunelabError(f"missing field '{key}'", where=rec.where, hint=f"format {fmt} needs '{key}'")
        msgs = _messages(rec) if fmt == "messages" else _sharegpt(rec)
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
        raise TunelabError(f"unknown format '{fmt}'", where="data.format", hint=f"one of: auto, {', '.join(CHAT_FORMATS)}")
    for i, m in enumerate(msgs):
        if m["role"] == "assistant" and not m["content"].strip() and not m.get("tool_calls"):
            name = {"messages": f"messages[{i}].content", "sharegpt": f"conversations[{i}].value",
                    "prompt_completion": "completion", "alpaca": "output"}[fmt]
            raise TunelabError(f"{name}: empty assistant reply", where=rec.where, hint="every reply must have text to learn")
    tools = normalize_tools(rec.data.get("tools"), rec.where)
    key = "conversations" if fmt == "sharegpt" else "messages"
    check_tool_use(msgs, tools, rec.where, key)
    return ChatExample(msgs, rec.where, tools=tools)


def to_text(rec: Record) -> TextExample:
    return TextExample(_nonempty(rec, "text"), rec.where)


def to_classify(rec: Record, labels: list[str] | None = None) -> ClassifyExample:
    """`text` + `label`; the label (str, int or bool) becomes a string: 3 -> "3", true -> "true"."""
    text = _nonempty(rec, "text")
    if "label" not in rec.data or rec.data["label"] is None:
        raise TunelabError("missing field 'label'", where=rec.where, hint="every record needs 'text' and 'label'")
    raw = rec.data["label"]
    if isinstance(raw, bool):
        label = "true" if raw else "false"
    elif isinstance(raw, (str, int)):
        label = str(raw).strip()
    else:
        raise TunelabError(f"field 'label' must be a string, integer or boolean, got {type(raw).__name__}",
                           where=rec.where)
    if not label:
        raise TunelabError("field 'label' is empty", where=rec.where)
    if labels is not None and label not in labels:
        raise TunelabError(f"field 'label': '{label}' is not in classify.labels", where=rec.where,
                           hint=f"one of: {', '.join(labels)}")
    return ClassifyExample(text, label, rec.where)


def _reply(rec: Record, key: str) -> str:
    """A reply: a string, or a list holding one assistant message."""
    if key not in rec.data or rec.data[key] is None:
        raise TunelabError(f"missing field '{key}'", where=rec.where, hint="every record needs prompt, chosen, rejected")
    val = rec.data[key]
    if isinstance(val, list) and len(val) == 1 and isinstance(val[0], dict) and val[0].get("role") == "assistant":
        val = val[0].get("content")
    if not isinstance(val, str):
        raise TunelabError(f"field '{key}' must be a string or a single assistant message", where=rec.where)
    if not val.strip():
        raise TunelabError(f"field '{key}' is empty", where=rec.where, hint="both replies need text")
    return val


def to_preference(rec: Record) -> PreferenceExample:
    """`prompt` (a string -> one user turn, or messages ending with a user turn) + `chosen` + `rejected`."""
    if "prompt" not in rec.data or rec.data["prompt"] is None:
        raise TunelabError("missing field 'prompt'", where=rec.where, hint="every record needs prompt, chosen, rejected")
    if isinstance(rec.data["prompt"], list):
        prompt = _messages(rec, "prompt", end="user")
    else:
        prompt = [{"role": "user", "content": _nonempty(rec, "prompt")}]
    chosen, rejected = _reply(rec, "chosen"), _reply(rec, "rejected")
    if chosen == rejected:
        raise TunelabError("fields 'chosen' and 'rejected' are identical", where=rec.where,
                           hint="a pair teaches nothing unless the replies differ")
    return PreferenceExample(prompt, chosen, rejected, rec.where)


def to_example(rec: Record, fmt: str = "auto", task: str = "sft", labels: list[str] | None = None) -> Example:
    """The task's Example for one record."""
    check_format(fmt, task)
    if task == "sft":
        return to_chat(rec, fmt)
    if task == "pretrain":
        return to_text(rec)
    if task == "classify":
        return to_classify(rec, labels)
    return to_preference(rec)


def to_examples(records: list[Record], fmt: str = "auto", task: str = "sft", labels: list[str] | None = None,
                columns: dict[str, str] | None = None) -> list:
    check_format(fmt, task)
    return [to_example(apply_columns(r, columns), fmt, task, labels) for r in records]
