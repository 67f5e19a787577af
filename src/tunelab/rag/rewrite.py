"""Query rewriting before retrieval, by a local model: multi-query and HyDE (`--rewrite multi|hyde`).

    multi   the model writes up to 3 rephrasings of the question, one a line; the question and each
            rephrasing are retrieved separately (`depth` = max(k, 10) hits each) and the rankings are
            fused by reciprocal rank:  score(c) = sum over rankings r of 1 / (RRF_K + rank_r(c)),
            RRF_K = 60; equal scores keep the order of first appearance (the question's own ranking
            first). A chunk's `similarity` is its best cosine over the rankings.
    hyde    the model writes a short passage that would answer the question (a hypothetical
            document); the search vector is  normalize(e(question) + e(passage))  with e the KB's
            embedder, so the passage moves the query towards answer-like text without replacing it.
            BM25 (`hybrid`) still reads the question itself.

The generator is anything with `reply_batch(conversations, max_new_tokens=..., temperature=...)`
(tunelab.infer.generate.Generator; tests pass a scripted one), greedy. `QueryRewriter.prepare(questions)`
writes the rewrites of many questions in batches (what `evaluate` does); `query` writes a missing
one alone. `seconds` accumulates generation time and `generated` counts the questions rewritten, so
the cost per question is `seconds / generated`.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace

import numpy as np

from tunelab.errors import TunelabError
from tunelab.rag.retrieve import Hit, open_kb, query

RRF_K = 60
_NUMBER = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022])\s*")
_LABEL = re.compile(r"^\s*(?:rephrasing|rewrite|question|version|query)\s*\d*\s*:\s*", re.IGNORECASE)


def fuse_rrf(rankings: list[list[Hit]], k: int, rrf_k: int = RRF_K) -> list[Hit]:
    """The top `k` chunks of `rankings` (each best first) by reciprocal rank fusion; see the module docstring."""
    score: dict[str, float] = {}
    best: dict[str, Hit] = {}
    for hits in rankings:
        for rank, h in enumerate(hits, 1):
            key = h.id or f"{h.source}:{h.start}:{h.end}"
            score[key] = score.get(key, 0.0) + 1.0 / (rrf_k + rank)
            if key not in best:
                best[key] = h
            elif h.similarity > best[key].similarity:
                best[key] = replace(best[key], similarity=h.similarity)
    order = sorted(score, key=lambda c: -score[c])  # stable: first appearance breaks ties
    return [replace(best[c], rank=rank, score=round(score[c], 6)) for rank, c in enumerate(order[:k], 1)]


class MultiQuery:
    """Rephrasings, one retrieval each, reciprocal rank fusion."""

    name = "multi"
    max_new_tokens = 80
    prompt = ("Rewrite the question below in 3 different ways, using other words with the same meaning. "
              "Write one question per line and nothing else.\n\nQuestion: {question}")

    @staticmethod
    def parse(text: str, question: str) -> list[str]:
        """Up to 3 distinct rephrasings: list numbers and labels stripped, blanks and copies of the question dropped."""
        seen = {question.strip().lower()}
        out = []
        for line in text.splitlines():
            line = _LABEL.sub("", _NUMBER.sub("", line)).strip().strip('"').strip()
            if len(line) < 4 or line.lower() in seen:
                continue
            seen.add(line.lower())
            out.append(line)
            if len(out) == 3:
                break
        return out

    def retrieve(self, search, embed, question: str, written: str, k: int) -> list[Hit]:
        depth = max(k, 10)
        rankings = [search(q, depth, None) for q in [question, *self.parse(written, question)]]
        return fuse_rrf(rankings, k)


class HyDE:
    """A hypothetical answer passage, embedded with the question."""

    name = "hyde"
    max_new_tokens = 96
    prompt = ("Write a short paragraph, as it would appear in the documentation, that answers the question. "
              "Write the paragraph only.\n\nQuestion: {question}")

    @staticmethod
    def search_vector(q: np.ndarray, passage: np.ndarray) -> np.ndarray:
        v = q + passage
        return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)

    def retrieve(self, search, embed, question: str, written: str, k: int) -> list[Hit]:
        if not written.strip():
            return search(question, k, None)
        q, p = embed([question, written])
        return search(question, k, self.search_vector(q, p))


REWRITES = {"multi": MultiQuery(), "hyde": HyDE()}


def rewrite_kind(name: str):
    try:
        return REWRITES[name]
    except KeyError:
        raise TunelabError(f"unknown rewrite {name!r}", where="--rewrite", hint=f"use one of {', '.join(REWRITES)}") \
            from None


class QueryRewriter:
    """`QueryRewriter("multi" | "hyde", generator)`; `.query(kb, question, k=3, ...)` -> hits (module docstring)."""

    def __init__(self, kind: str, generator, batch_size: int = 16):
        self.kind = rewrite_kind(kind)
        self.generator = generator
        self.batch_size = batch_size
        self.written: dict[str, str] = {}
        self.seconds = 0.0
        self.generated = 0

    def prepare(self, questions: list[str]) -> None:
        """Write the rewrites of every question not yet rewritten, `batch_size` per generate call."""
        todo = list(dict.fromkeys(q for q in questions if q not in self.written))
        if not todo:
            return
        t0 = time.perf_counter()
        convs = [[{"role": "user", "content": self.kind.prompt.replace("{question}", q)}] for q in todo]
        replies = self.generator.reply_batch(convs, max_new_tokens=self.kind.max_new_tokens, temperature=0.0,
                                             batch_size=self.batch_size)
        self.seconds += time.perf_counter() - t0
        self.generated += len(todo)
        self.written.update(zip(todo, replies))

    def query(self, kb, question: str, k: int = 3, *, directory=None, **query_kw) -> list[Hit]:
        """The `k` best chunks for `question` after rewriting; `query_kw` go to `tunelab.rag.retrieve.query`."""
        from tunelab.rag.embedders import kb_embedder

        self.prepare([question])
        store = open_kb(kb, directory)

        def search(text: str, n: int, vector):
            return query(store, text, k=n, vector=vector, **query_kw)

        def embed(texts: list[str]) -> np.ndarray:
            return kb_embedder(store.manifest, store.dir).encode(texts)

        return self.kind.retrieve(search, embed, question, self.written[question], k)
