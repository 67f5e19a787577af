"""Teacher prompts per mode, the cleanup of a teacher reply, and how a reply becomes a training pair.

A prompt template is any string containing `{input}`; it is filled by plain replacement (no
str.format), so braces elsewhere in the template or the item text are left alone.

    mode     teacher writes                      training pair (user -> assistant)
    reverse  the instruction behind an output    generated instruction -> the input text
    respond  a response to an instruction        the input text -> generated response
    augment  a rephrasing of an instruction      generated rephrasing -> the item's original reply
"""

from __future__ import annotations

import re

from tunelab.errors import TunelabError

DEFAULT_PROMPTS = {
    "reverse": (
        "Here is a text that an AI assistant wrote for a user:\n\n{input}\n\n"
        "Write the short request the user typed to get it. Reply with the request only."
    ),
    "respond": "{input}",
    "augment": (
        "Rewrite this request in different words, keeping its meaning:\n\n{input}\n\n"
        "Reply with the rewritten request only."
    ),
}

# Labels small models put in front of the answer ("Request: ...") in reverse/augment modes.
_LABEL = re.compile(r"^\s*(?:the\s+)?(?:user(?:'s)?\s+)?(?:rewritten\s+)?(?:request|instruction|prompt|query|"
                    r"question|paraphrase|rephrasing|user)\s*:\s*", re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "`": "`"}


def check_template(template: str, where: str = "--prompt") -> str:
    if "{input}" not in template:
        raise TunelabError("the prompt template has no {input}", where=where,
                           hint="put {input} where the item text goes")
    return template


def render(template: str, text: str) -> str:
    return template.replace("{input}", text)


def clean_reply(mode: str, text: str) -> str:
    """Strip whitespace; for reverse/augment also one leading label ('Request:') and one pair of
    surrounding quotes, since those replies are used as a user turn verbatim."""
    text = text.strip()
    if mode == "respond":
        return text
    text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] == _QUOTES[text[0]]:
        text = text[1:-1].strip()
    return text


def make_pair(mode: str, text: str, reply: str | None, generated: str) -> tuple[str, str]:
    """(user, assistant) of the training pair for one item (see the table above)."""
    if mode == "reverse":
        return generated, text
    if mode == "respond":
        return text, generated
    return generated, reply or ""
