"""Constrained decoding of a tool call's function name: once the reply has opened a call, the
characters of the call's "name" value can only spell one of the request's tools.

The reply is read character by character (the text of each drawn token), by a small JSON lexer that
starts at the tool syntax's `start` marker (data/tool_syntax.py: "<tool_call>", "[TOOL_CALLS]",
'{"name"'):

    depth       +1 at { or [, -1 at } or ], outside strings
    a string    is the call's name when it opens right after `"name" :` at depth == call_depth
                (1 for a call object, 2 for mistral's list of them), the key itself a string that
                opened right after { or ,
    in a name   the name so far must stay a prefix of a tool's name; its closing quote is allowed
                only when the name is whole

Everything else (content before the call, the arguments, reasoning) is not constrained.
A token is allowed when every character of its text keeps the lexer valid; `pick` draws the
model's own choice when it is allowed and otherwise the best allowed token (greedy), or redraws
from the sampler until an allowed token comes, which draws from the model's distribution
restricted to the allowed tokens (after 8 refused draws, from that restriction computed over the
vocabulary). A vocabulary with no allowed token leaves the model's choice as it is: the reply is
then parsed as usual and an unknown name stays text.

This is what guided decoding of tool calls does in vLLM (a named tool_choice, "required") reduced to
the one field a small model most often invents: a function the request does not offer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

_REDRAWS = 8


def token_texts(tokenizer) -> list[str]:
    """The text of every token id on its own (tokenizer.decode([id])); what `ToolNameConstraint` reads."""
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


@dataclass(frozen=True)
class _Lex:
    tail: str = ""  # the last characters before the call started (to find `start`)
    started: bool = False
    depth: int = 0
    in_str: bool = False
    esc: bool = False
    key_str: bool = False  # the open string is a key
    buf: str = ""  # the open key string's characters (only keys are kept)
    last_key: str = ""
    last_sig: str = ""  # the last character outside strings that was not white space
    name: str | None = None  # the open name value's characters; None outside a name


class ToolNameConstraint:
    """The lexer of the module docstring over one reply; `push(text)` advances it, `pick` chooses a
    token, `draw` chooses one and advances over its text."""

    def __init__(self, names: list[str], start: str, call_depth: int, texts: list[str]):
        self.names = sorted(set(names))
        self.start, self.call_depth, self.texts = start, call_depth, texts
        self.state = _Lex()

    @classmethod
    def for_syntax(cls, names: list[str], syntax, texts: list[str]) -> "ToolNameConstraint":
        """The constraint of a data/tool_syntax.ToolSyntax (its start marker and call depth)."""
        return cls(names, syntax.start, syntax.call_depth, texts)

    # ---- the lexer -----------------------------------------------------------------------------------------
    def _char(self, s: _Lex, c: str) -> _Lex | None:
        """The state after character c; None when c would spell a name that no tool has."""
        if not s.started:
            tail = (s.tail + c)[-len(self.start):]
            if tail != self.start:
                return replace(s, tail=tail)
            s = _Lex(started=True)
            for ch in self.start:  # the marker's own brackets count ('{"name"', '[TOOL_CALLS]')
                s = self._char(s, ch)
            return s
        if s.name is not None:
            if c == '"':
                return replace(s, name=None, in_str=False) if s.name in self.names else None
            grown = s.name + c
            if c == "\\" or not any(n.startswith(grown) for n in self.names):
                return None
            return replace(s, name=grown)
        if s.in_str:
            if s.esc:
                return replace(s, esc=False, buf=s.buf + c if s.key_str else s.buf)
            if c == "\\":
                return replace(s, esc=True)
            if c == '"':
                return replace(s, in_str=False, last_key=s.buf if s.key_str else s.last_key, last_sig='"')
            return replace(s, buf=s.buf + c) if s.key_str and len(s.buf) < 16 else s
        if c.isspace():
            return s
        if c == '"':
            if s.last_sig == ":" and s.last_key == "name" and s.depth == self.call_depth:
                return replace(s, name="", last_sig='"')
            return replace(s, in_str=True, key_str=s.last_sig in "{,", buf="")
        if c in "{[":
            return replace(s, depth=s.depth + 1, last_sig=c, last_key="" if c == "{" else s.last_key)
        if c in "}]":
            return replace(s, depth=max(0, s.depth - 1), last_sig=c)
        return replace(s, last_sig=c)

    def _after(self, s: _Lex, text: str) -> _Lex | None:
        for c in text:
            s = self._char(s, c)
            if s is None:
                return None
        return s

    def push(self, text: str) -> None:
        """Advance over text the reply now has (a drawn token's, or the forced opening's)."""
        s = self._after(self.state, text)
        self.state = s if s is not None else _Lex(started=self.state.started)  # a forced breach: start over

    def allows(self, token: int) -> bool:
        return 0 <= token < len(self.texts) and self._after(self.state, self.texts[token]) is not None

    @property
    def active(self) -> bool:
        """True while a name is being written (every token is then checked against the names)."""
        return self.state.name is not None

    # ---- drawing -------------------------------------------------------------------------------------------
    def _mask(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [V] with every token that is not allowed at -inf."""
        allowed = torch.tensor([self.allows(i) for i in range(min(len(self.texts), logits.shape[-1]))])
        out = torch.full_like(logits, float("-inf"))
        out[: allowed.shape[0]][allowed] = logits[: allowed.shape[0]][allowed]
        return out

    def pick(self, logits: torch.Tensor, sampler, choice: int) -> int:
        """The token to draw: `choice` (the sampler's draw, or the argmax) when it is allowed."""
        if self.allows(choice):
            return choice
        if sampler.temperature == 0:
            order = torch.argsort(logits, descending=True).tolist()
            return next((t for t in order if self.allows(t)), choice)
        row = logits.float().cpu().unsqueeze(0)
        for _ in range(_REDRAWS):  # p restricted to the allowed tokens: redraw until one is allowed
            t = int(sampler.pick(row)[0])
            if self.allows(t):
                return t
        masked = self._mask(row[0])
        if torch.isinf(masked).all():
            return choice
        return int(sampler.pick(masked.unsqueeze(0))[0])

    def draw(self, logits: torch.Tensor, sampler, choice: int) -> int:
        """`pick`, then `push` of the picked token's text (a token past the texts adds none)."""
        tok = self.pick(logits, sampler, choice)
        self.push(self.texts[tok] if tok < len(self.texts) else "")
        return tok
