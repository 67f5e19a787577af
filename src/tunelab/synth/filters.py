"""Which generated pairs are kept: length, refusal and echo filters, and dedupe of pairs.

A generated text is dropped, with the first reason that applies, when it is
  empty        nothing left after cleanup
  too_short    fewer than `min_chars` characters
  too_long     more than `max_chars` characters (0 = no limit)
  refusal      one of the refusal phrases occurs in its first 160 characters (case-insensitive)
  echo         its words equal the input's words (the teacher copied its input; case and punctuation ignored)
  prompt_copy  it repeats 8 or more consecutive words of the prompt template's own instructions
               (small teachers often answer "Write the short request..." by restating it)
  duplicate    the (user, assistant) pair, normalized, was already kept (in this run or an earlier one)
normalize(s) = lowercase, whitespace runs collapsed to one space, stripped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_REFUSALS = (
    "i'm sorry", "i am sorry", "i cannot", "i can't", "i can not", "i'm unable", "i am unable",
    "as an ai", "as a language model", "i won't be able",
)
REFUSAL_WINDOW = 160  # a refusal opens the reply; later "I can't" is usually content


def normalize(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().lower()


def pair_key(user: str, assistant: str) -> str:
    return normalize(user) + "\x00" + normalize(assistant)


@dataclass
class Filters:
    min_chars: int = 3
    max_chars: int = 0
    refusals: tuple[str, ...] = DEFAULT_REFUSALS

    def reason(self, generated: str, source: str, template: str = "") -> str | None:
        """Why `generated` (made from `source` with prompt `template`) is dropped, or None to keep it."""
        g = generated.strip()
        if not g:
            return "empty"
        if len(g) < self.min_chars:
            return "too_short"
        if self.max_chars and len(g) > self.max_chars:
            return "too_long"
        head = normalize(g[:REFUSAL_WINDOW]).replace("\u2019", "'")
        if any(p.lower() in head for p in self.refusals):
            return "refusal"
        if _words(g) == _words(source):
            return "echo"
        if template and _ngrams(g, COPY_WORDS) & _ngrams(template.replace("{input}", " "), COPY_WORDS):
            return "prompt_copy"
        return None


COPY_WORDS = 8


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = _words(text)
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
