"""The text_similarity metrics, each a pure function (hypothesis, reference) -> score in [0, 1].

    fuzzy_match  2 LCS(a, b) / (|a| + |b|) over characters: the normalized Indel similarity
                 (rapidfuzz's fuzz.ratio / 100); two empty strings score 1
    bleu         sentence BLEU of whitespace tokens, one reference, n = 1..4, weights 1/4 (nltk's
                 sentence_bleu, no smoothing): BP exp(sum_n 1/4 log p_n); p_n the clipped n-gram
                 precision; a p_n of 0 is taken as the smallest float (as nltk), no unigram match -> 0;
                 BP = 1 if c > r else exp(1 - r / c) (c, r: hypothesis and reference lengths)
    gleu         Google-BLEU of whitespace tokens, n = 1..4 (nltk's sentence_gleu):
                 min(matches / hypothesis n-grams, matches / reference n-grams), counts summed over n
    rouge_n      ROUGE-N F-measure (rouge_score, no stemmer): tokens = lower-cased runs of [a-z0-9];
                 P = overlap / hypothesis n-grams, R = overlap / reference n-grams, F = 2PR / (P + R)
    rouge_l      the same with the longest common subsequence of tokens: P = LCS / |hyp|, R = LCS / |ref|
"""

from __future__ import annotations

import math
import re
import sys
from collections import Counter


def lcs_length(a, b) -> int:
    """Length of the longest common subsequence of two sequences (dynamic programming, O(|a| |b|))."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def fuzzy_match(hyp: str, ref: str) -> float:
    total = len(hyp) + len(ref)
    return 1.0 if total == 0 else 2 * lcs_length(hyp, ref) / total


def ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(hyp: str, ref: str) -> float:
    h, r = hyp.split(), ref.split()
    if not h:
        return 0.0
    logs = []
    for n in range(1, 5):
        hn, rn = ngrams(h, n), ngrams(r, n)
        matches = sum(min(c, rn[g]) for g, c in hn.items())
        if n == 1 and matches == 0:
            return 0.0
        p = matches / max(1, sum(hn.values())) if matches else sys.float_info.min
        logs.append(0.25 * math.log(p))
    bp = 1.0 if len(h) > len(r) else math.exp(1 - len(r) / len(h))
    return bp * math.exp(sum(logs))


def gleu(hyp: str, ref: str) -> float:
    h, r = hyp.split(), ref.split()
    matches = hyp_total = ref_total = 0
    for n in range(1, 5):
        hn, rn = ngrams(h, n), ngrams(r, n)
        matches += sum((hn & rn).values())
        hyp_total += sum(hn.values())
        ref_total += sum(rn.values())
    if hyp_total == 0 or ref_total == 0:
        return 0.0
    return min(matches / hyp_total, matches / ref_total)


def rouge_tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _f(overlap: int, hyp_count: int, ref_count: int) -> float:
    p = overlap / max(hyp_count, 1)
    r = overlap / max(ref_count, 1)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def rouge_n(n: int):
    def rouge(hyp: str, ref: str) -> float:
        hn, rn = ngrams(rouge_tokens(hyp), n), ngrams(rouge_tokens(ref), n)
        return _f(sum((hn & rn).values()), sum(hn.values()), sum(rn.values()))
    rouge.__name__ = f"rouge_{n}"
    return rouge


def rouge_l(hyp: str, ref: str) -> float:
    h, r = rouge_tokens(hyp), rouge_tokens(ref)
    if not h or not r:
        return 0.0
    return _f(lcs_length(h, r), len(h), len(r))


METRICS = {"fuzzy_match": fuzzy_match, "bleu": bleu, "gleu": gleu,
           **{f"rouge_{n}": rouge_n(n) for n in range(1, 6)}, "rouge_l": rouge_l}
