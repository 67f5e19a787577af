"""Pairwise LLM-as-judge through any OpenAI-compatible endpoint (`tunelab serve` included).

For each example and each pair (the first model vs each other one) the judge is asked twice, with
the replies in both orders (A = first, B = other; then A = other, B = first), which cancels a judge's
preference for a position. Each verdict is mapped to the first model's side (win 1, tie 0.5, loss 0);
an example's outcome is the mean of its two verdicts: win when > 0.5, loss when < 0.5, tie otherwise
(so a verdict that flips with the order is a tie). Rates are over examples, with bootstrap intervals.
"""

from __future__ import annotations

import re

from tunelab.errors import TunelabError
from tunelab.eval.bootstrap import summary

PROMPT = (
    "You are judging two assistant replies to the same conversation.\n\n"
    "Conversation:\n{prompt}\n\nReference answer (may be imperfect):\n{reference}\n\n"
    "Reply A:\n{a}\n\nReply B:\n{b}\n\n"
    "Which reply is better: more correct, helpful and closer in style to the reference? "
    "Answer with exactly one word: A, B or tie."
)
TIMEOUT_S = 30.0


def parse_verdict(text: str) -> str:
    """'A', 'B' or 'tie' from a judge's answer (its first A/B/tie word; tie when none)."""
    m = re.search(r"\b(A|B|tie)\b", text or "", flags=re.IGNORECASE)
    if not m:
        return "tie"
    w = m.group(1)
    return "tie" if w.lower() == "tie" else w.upper()


class Judge:
    def __init__(self, url: str, model: str, api_key: str = "none", timeout: float = TIMEOUT_S):
        try:
            import openai
        except ImportError as e:
            raise TunelabError("--judge needs the openai package", where="--judge", hint="pip install openai") from e
        self.url, self.model = url, model
        self.client = openai.OpenAI(base_url=url, api_key=api_key, timeout=timeout, max_retries=0)

    def check(self) -> None:
        """One short request before anything is generated: TunelabError when the judge cannot answer."""
        try:
            self.ask("Answer with one word: A, B or tie.")
        except Exception as e:  # connection refused, timeout, HTTP error, unknown model
            raise TunelabError(f"the judge at {self.url} did not answer ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:120] if str(e) else ''})", where="--judge",
                               hint="start an OpenAI-compatible server there (e.g. `tunelab serve`), "
                                    "or check --judge-model") from None

    def ask(self, content: str) -> str:
        r = self.client.chat.completions.create(model=self.model, temperature=0.0, max_tokens=8,
                                                messages=[{"role": "user", "content": content}])
        return r.choices[0].message.content or ""

    def verdict(self, prompt: str, reference: str, a: str, b: str) -> str:
        return parse_verdict(self.ask(PROMPT.format(prompt=prompt, reference=reference, a=a, b=b)))


def _side(verdict: str, first_is: str) -> float:
    """The first model's score for a verdict when it was shown as `first_is` ('A' or 'B')."""
    if verdict == "tie":
        return 0.5
    return 1.0 if verdict == first_is else 0.0


def compare(judge: Judge, prompts: list[str], references: list[str], first: list[str], other: list[str]) -> dict:
    """Win/tie/loss of `first` against `other` (replies per example), both orders asked."""
    outcomes, per_example = [], []
    for p, ref, x, y in zip(prompts, references, first, other):
        v1 = judge.verdict(p, ref, x, y)  # first shown as A
        v2 = judge.verdict(p, ref, y, x)  # first shown as B
        s = (_side(v1, "A") + _side(v2, "B")) / 2
        outcome = "win" if s > 0.5 else "loss" if s < 0.5 else "tie"
        outcomes.append(outcome)
        per_example.append({"first_as_a": v1, "first_as_b": v2, "outcome": outcome})
    rates = {k: summary([float(o == k) for o in outcomes]) for k in ("win", "tie", "loss")}
    return {"rates": rates, "per_example": per_example}
