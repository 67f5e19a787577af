"""Scores of one generated reply against its reference (each in [0, 1] except length).

exact     1 when reply and reference are equal after stripping and collapsing whitespace
contains  1 when the reply contains TEXT (`--contains`)
regex     1 when the regular expression matches anywhere in the reply (`--regex`, re.search)
keywords  1 when the reply contains every one of the example's own `keywords` (a field of the data
          file: a string or a list of strings), compared case-folded with whitespace collapsed:
          the key fact of a question ("1743", "Hallowport"), per example
rouge_l   ROUGE-L F-measure (the `rouge-score` package, stemmed), longest common subsequence of words
chrf      chrF (sacrebleu's sentence_chrf) / 100: character n-gram F-score
length    words in the reply (str.split)
"""

from __future__ import annotations

import re
from functools import lru_cache

from tunelab.errors import TunelabError

GENERATED = ("exact", "contains", "regex", "keywords", "rouge_l", "chrf", "length")
TEACHER_FORCED = ("nll", "perplexity")
ALL = TEACHER_FORCED + GENERATED


def _norm(s: str) -> str:
    return " ".join(s.split())


@lru_cache(maxsize=1)
def _rouge():
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:
        raise TunelabError("ROUGE-L needs the rouge-score package", where="--metrics",
                           hint="pip install 'tunelab[eval]', or leave rouge_l out of --metrics") from e
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(reply: str, reference: str) -> float:
    return float(_rouge().score(reference, reply)["rougeL"].fmeasure)


def chrf(reply: str, reference: str) -> float:
    try:
        from sacrebleu.metrics import CHRF
    except ImportError as e:
        raise TunelabError("chrF needs the sacrebleu package", where="--metrics",
                           hint="pip install 'tunelab[eval]', or leave chrf out of --metrics") from e
    return CHRF().sentence_score(reply, [reference]).score / 100.0


def compile_regex(pattern: str | None):
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise TunelabError(f"invalid regular expression ({e})", where="--regex") from None


def select(metrics: list[str] | None, contains: str | None, regex: str | None) -> list[str]:
    """The metrics to compute: `metrics` (validated) or all; contains/regex only with their text
    (keywords is kept here and dropped by `drop_keywords` when the data has none)."""
    chosen = list(metrics) if metrics else list(ALL)
    bad = [m for m in chosen if m not in ALL]
    if bad:
        raise TunelabError(f"unknown metric '{bad[0]}'", where="--metrics", hint=", ".join(ALL))
    if "contains" in chosen and contains is None:
        if metrics and "contains" in metrics:
            raise TunelabError("metric contains needs --contains TEXT", where="--metrics")
        chosen.remove("contains")
    if "regex" in chosen and regex is None:
        if metrics and "regex" in metrics:
            raise TunelabError("metric regex needs --regex RE", where="--metrics")
        chosen.remove("regex")
    return chosen


def drop_keywords(chosen: list[str], asked: list[str] | None, has_keywords: bool, where: str) -> list[str]:
    """`chosen` without keywords when no example has them (an error when --metrics asked for it)."""
    if "keywords" not in chosen or has_keywords:
        return chosen
    if asked and "keywords" in asked:
        raise TunelabError("metric keywords needs a 'keywords' field in the data", where=where,
                           hint='give each example "keywords": ["key fact", ...] (the words a right answer contains)')
    return [m for m in chosen if m != "keywords"]


def keywords_field(value, where: str) -> list[str]:
    """An example's `keywords`: a non-empty string or a non-empty list of non-empty strings."""
    kws = [value] if isinstance(value, str) else value
    if not isinstance(kws, list) or not kws or not all(isinstance(k, str) and k.strip() for k in kws):
        raise TunelabError("field 'keywords' must be a non-empty string or a list of non-empty strings",
                           where=where, hint='e.g. "keywords": ["1743"]')
    return [k.strip() for k in kws]


def has_all_keywords(reply: str, keywords: list[str]) -> float:
    text = _norm(reply).casefold()
    return float(all(_norm(k).casefold() in text for k in keywords))


def score(reply: str, reference: str, metrics: list[str], contains: str | None = None, regex=None,
          keywords: list[str] | None = None) -> dict:
    """{metric: value} for the generated-reply metrics among `metrics` (`keywords`: the example's own)."""
    out = {}
    if "exact" in metrics:
        out["exact"] = float(_norm(reply) == _norm(reference))
    if "contains" in metrics:
        out["contains"] = float(contains in reply)
    if "regex" in metrics:
        out["regex"] = float(regex.search(reply) is not None)
    if "keywords" in metrics:
        out["keywords"] = has_all_keywords(reply, keywords or [])
    if "rouge_l" in metrics:
        out["rouge_l"] = rouge_l(reply, reference)
    if "chrf" in metrics:
        out["chrf"] = chrf(reply, reference)
    if "length" in metrics:
        out["length"] = float(len(reply.split()))
    return out
