"""Reasoning ("thinking") in assistant turns: where it comes from, what a template sees, what is learned.

  in the data     `reasoning_content` (or `reasoning` / `thinking`) on an assistant message, or an inline
                  "<think>...</think>" opening its content; both become message["reasoning_content"] (a string,
                  "" for an empty think block) and the content keeps only the answer
  earlier turns   data.earlier_reasoning: drop (default, what Qwen3's own template does) removes the reasoning of
                  every assistant turn before the last user message, so training sees what inference sees;
                  keep leaves it (a template that drops it itself, like Qwen3's, still drops it)
  rendering       a template that reads `reasoning_content` (Qwen3's, the built-in qwen3) gets the field; any other
                  gets it inline: "<think>\\n{reasoning}\\n</think>\\n\\n{content}" (Qwen3's layout)
  the loss        data.reasoning: learn (default) keeps the think block in the learned reply; mask takes it out;
                  an empty think block ("<think>\\n\\n</think>\\n\\n") is never learned
"""

from __future__ import annotations

import re

from tunelab.data.tool_syntax import split_reasoning
from tunelab.errors import TunelabError

OPEN, CLOSE = "<think>", "</think>"
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")


def split_message_reasoning(out: dict, raw: dict, where: str, key: str) -> None:
    """Set out["reasoning_content"] from `raw`'s reasoning field or an inline think block (in place)."""
    field = next((f for f in REASONING_FIELDS if raw.get(f) is not None), None)
    if field is not None:
        if not isinstance(raw[field], str):
            raise TunelabError(f"{key}.{field} must be a string, got {type(raw[field]).__name__}", where=where)
        out["reasoning_content"] = raw[field].strip("\n")
        return
    content = out["content"]
    if content.lstrip().startswith(OPEN) or (CLOSE in content and OPEN not in content):
        reasoning, answer = split_reasoning(content, OPEN, CLOSE)
        out["reasoning_content"], out["content"] = reasoning, answer


def drop_earlier_reasoning(msgs: list[dict]) -> list[dict]:
    """A copy without the reasoning of assistant turns before the last user message."""
    last_user = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=-1)
    return [{k: v for k, v in m.items() if k != "reasoning_content"} if i < last_user and m["role"] == "assistant"
            else m for i, m in enumerate(msgs)]


def inline_reasoning(msgs: list[dict]) -> list[dict]:
    """A copy with each reasoning_content written into the content, as Qwen3 lays it out."""
    out = []
    for m in msgs:
        if m.get("reasoning_content") is not None:
            reasoning = m["reasoning_content"].strip("\n")
            m = {k: v for k, v in m.items() if k != "reasoning_content"}
            m["content"] = f"{OPEN}\n{reasoning}\n{CLOSE}\n\n" + m["content"].lstrip("\n")
        out.append(m)
    return out


_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE) + r"\s*", re.S)


def mask_reasoning(segments: list[tuple[str, bool]], learn: bool = True) -> list[tuple[str, bool]]:
    """Take think blocks out of the learned segments: every block when not `learn`, empty ones always.

    ("<think>\\n\\n</think>\\n\\nHi<|im_end|>\\n", True) -> [("<think>\\n\\n</think>\\n\\n", False),
    ("Hi<|im_end|>\\n", True)]."""
    out: list[tuple[str, bool]] = []
    for text, target in segments:
        if not target:
            out.append((text, False))
            continue
        pos = 0
        for m in _BLOCK.finditer(text):
            if learn and m.group(1).strip():
                continue
            out += [(text[pos:m.start()], True), (m.group(0), False)]
            pos = m.end()
        out.append((text[pos:], True))
    merged: list[tuple[str, bool]] = []
    for text, target in out:
        if not text:
            continue
        if merged and merged[-1][1] == target:
            merged[-1] = (merged[-1][0] + text, target)
        else:
            merged.append((text, target))
    return merged
