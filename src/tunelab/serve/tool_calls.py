"""A reply's reasoning, content and tool calls, read as the text streams (data/tool_syntax.py parses the calls).

    parser = ReplyParser(syntax, thinking=False, parallel=True)
    events = parser.push(piece)        # [("reasoning" | "content", text), ...] safe to show now
    events += parser.finish()          # the rest, then ("call", OpenAI call) for each call

The whole reply gives the same result whether it arrives in one piece or token by token (a stream and
a plain reply of the same text agree), and that result is, with `reply` the whole text:

    reasoning, answer  = when the reply opens with <think> (leading white space allowed) or the prompt
                         ended with it (`thinking`): the text up to </think> and the text after it,
                         both stripped; no </think>: all reasoning, answer "" (DeepSeek's and vLLM's
                         reasoning parsers); else (None, reply)
    content, calls     = syntax.parse(answer) (white space before the first call dropped); a call
                         that does not parse leaves the answer as content, so nothing is lost
    calls              = calls[:1] when `parallel` is false

Held back while undecided: a reply's start that may still become <think>; the end of the reasoning
that may become </think>; text that may become the syntax's `start` (e.g. "<tool_" before
"<tool_call>"); trailing white space (dropped before a call, and at the end of a stripped answer).
From the syntax's start on, the text is held to the end of the reply and parsed whole: the calls
come out at `finish`, after any content.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def held_prefix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper prefix of `marker` (it may still become it)."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


def _trailing_space(text: str) -> int:
    return len(text) - len(text.rstrip())


class ReplyParser:
    """The streaming state machine of the module docstring: phases start -> (think ->) content."""

    def __init__(self, syntax=None, thinking: bool = False, parallel: bool = True):
        self.syntax, self.parallel = syntax, parallel
        self.phase = "think" if thinking else "start"
        self.strip = thinking  # a think block: the answer is stripped at both ends
        self.pending = ""  # received, not given out yet
        self.call_text: str | None = None  # from the syntax's start on, held to the end
        self.before_call = ""  # the white space held when the call started
        self.shown = {"reasoning": False, "content": False}  # leading white space is dropped until something shows
        self.calls: list[dict] = []

    def push(self, piece: str) -> list[tuple[str, object]]:
        self.pending += piece
        return self._advance(final=False)

    def finish(self) -> list[tuple[str, object]]:
        out = self._advance(final=True)
        if self.call_text is not None:
            content, calls = self.syntax.parse(self.call_text)
            if calls:
                self.calls = calls if self.parallel else calls[:1]
                out += self._emit("content", self.before_call.rstrip("\n "))
                out += [("call", c) for c in self.calls]
            else:  # not a call after all: the text as it was written
                text = self.before_call + self.call_text
                out += self._emit("content", text.rstrip() if self.strip else text)
        elif self.pending:
            out += self._emit("content", self.pending.rstrip() if self.strip else self.pending)
        self.pending = ""
        return out

    def _emit(self, kind: str, text: str) -> list[tuple[str, object]]:
        if not self.shown[kind] and (kind == "reasoning" or self.strip):
            text = text.lstrip()
        if not text:
            return []
        self.shown[kind] = True
        return [(kind, text)]

    def _advance(self, final: bool) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        while True:
            if self.phase == "start":
                s = self.pending.lstrip()
                if s.startswith(THINK_OPEN):
                    self.phase, self.strip, self.pending = "think", True, s[len(THINK_OPEN):]
                    continue
                if not final and THINK_OPEN.startswith(s):  # "", "<", "<th", ...: not decided yet
                    return out
                self.phase = "content"
                continue
            if self.phase == "think":
                at = self.pending.find(THINK_CLOSE)
                if at >= 0:
                    out += self._emit("reasoning", self.pending[:at].rstrip())
                    self.phase, self.pending = "content", self.pending[at + len(THINK_CLOSE):]
                    continue
                if final:  # never closed: all reasoning
                    out += self._emit("reasoning", self.pending.rstrip())
                    self.pending = ""
                    return out
                keep = held_prefix(self.pending, THINK_CLOSE)
                keep += _trailing_space(self.pending[:len(self.pending) - keep])
                out += self._emit("reasoning", self.pending[:len(self.pending) - keep])
                self.pending = self.pending[len(self.pending) - keep:]
                return out
            return out + self._content(final)

    def _content(self, final: bool) -> list[tuple[str, object]]:
        if self.call_text is not None:
            self.call_text += self.pending
            self.pending = ""
            return []
        text, out = self.pending, []
        start = self.syntax.start if self.syntax is not None else None
        at = text.find(start) if start else -1
        if at >= 0:
            body = text[:at]
            cut = len(body) - _trailing_space(body)
            out += self._emit("content", body[:cut])
            self.before_call, self.call_text, self.pending = body[cut:], text[at:], ""
            return out
        if final:
            return out  # finish() gives out what is pending
        keep = held_prefix(text, start) if start else 0
        if start or self.strip:
            keep += _trailing_space(text[:len(text) - keep])
        out += self._emit("content", text[:len(text) - keep])
        self.pending = text[len(text) - keep:]
        return out


def parse_reply(text: str, syntax=None, thinking: bool = False, parallel: bool = True) -> dict:
    """The whole reply at once: {"reasoning": str | None, "content": str | None, "calls": [...]}."""
    parser = ReplyParser(syntax, thinking, parallel)
    return collect(parser.push(text) + parser.finish())


def collect(events) -> dict:
    """Events joined: reasoning and content texts (None when empty), the calls in order."""
    parts: dict[str, list] = {"reasoning": [], "content": [], "call": []}
    for kind, value in events:
        parts[kind].append(value)
    return {"reasoning": "".join(parts["reasoning"]) or None, "content": "".join(parts["content"]) or None,
            "calls": parts["call"]}
