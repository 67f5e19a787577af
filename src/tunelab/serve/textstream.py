"""Token ids -> text pieces, with stop strings, the same for streamed and whole replies.

Incremental detokenization (text-generation-inference's offsets): with `prefix` .. `read` the
tokens already shown,

    before = decode(ids[prefix:read]),  after = decode(ids[prefix:])
    new text = after[len(before):]      unless `after` ends in U+FFFD (a character split across
                                        tokens: wait for its last byte)

so each token costs one decode of a few tokens, and a tokenizer's leading-space rules see the
same context as a whole decode. Stop strings (the template's end-of-turn texts and the request's
`stop`) end the reply before their first occurrence; text that could still become a stop string
(a suffix of the text that is a prefix of one) is held back until it cannot.
"""

from __future__ import annotations


class TextAssembler:
    def __init__(self, tokenizer, stops: list[str], stop_ids: frozenset = frozenset()):
        self.tok = tokenizer
        self.stops = [s for s in stops if s]
        self.stop_ids = stop_ids
        self.ids: list[int] = []
        self.prefix = self.read = 0
        self.text = ""  # everything decoded so far
        self.shown = 0  # characters of `text` handed out
        self.stopped = False
        self.n_tokens = 0  # tokens consumed (a stop id included)

    def _held(self) -> int:
        """Characters at the end of `text` that may begin a stop string."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:k]):
                    best = k
                    break
        return best

    def push(self, tok: int) -> str:
        """The text this token makes visible ('' if none yet); sets `stopped` at a stop id or string."""
        if self.stopped:
            return ""
        self.n_tokens += 1
        if tok in self.stop_ids:
            return self.finish()
        self.ids.append(tok)
        self._decode(force=False)
        start = max(0, self.shown - max((len(s) for s in self.stops), default=0))
        cut = min((i for i in (self.text.find(s, start) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            self.stopped = True
            return self.flush()
        end = len(self.text) - self._held()
        piece = self.text[self.shown:end] if end > self.shown else ""
        self.shown = max(self.shown, end)
        return piece

    def _decode(self, force: bool) -> None:
        before = self.tok.decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        after = self.tok.decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(after) > len(before) and (force or not after.endswith("\ufffd")):
            self.text += after[len(before):]
            self.prefix, self.read = self.read, len(self.ids)

    def finish(self) -> str:
        """The end of the reply (a stop id, the token budget): the rest of the text, held-back
        characters and an unfinished character included."""
        if self.stopped:
            return ""
        self.stopped = True
        self._decode(force=True)
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
        return self.flush()

    def flush(self) -> str:
        piece = self.text[self.shown:]
        self.shown = len(self.text)
        return piece
