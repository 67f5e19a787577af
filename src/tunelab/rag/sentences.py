"""Sentence vectors beside chunk vectors: a question that restates one sentence of a chunk in other
words finds it, though the chunk's own vector averages that sentence with everything else.

At index time (`index(..., sentences=True)`) every chunk's text is split into sentences
(`split_sentences`), each embedded alone (no context lines), and kept in the KB folder as
`sentences.npz`: vectors [n, dim] (unit), and the text, chunk id and file path of each (`rag tune`
re-embeds the texts with its tuned model). At query time

    score(chunk) = w * cos(q, chunk) + (1 - w) * max over its sentences cos(q, sentence)

with w = `SENTENCE_WEIGHT` (or the query's `sentence_weight`), over the chunks the vector search
found and the chunks of the best-matching sentences. The arithmetic is one product of the question
with every sentence vector (n x dim multiply-adds: 2 M for 5,000 sentences of 384 dimensions).
docs/rag.md measures it on paraphrased questions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

FILE = "sentences.npz"
SENTENCE_WEIGHT = 0.5  # w above; chosen on the FAQ's own 175 question titles (docs/rag.md)
MIN_CHARS = 16  # shorter pieces ("e.g.", a list marker) are not sentences of their own
_SPLIT = re.compile(r"(?<=[.!?:])\s+|\n\s*\n")


def split_sentences(text: str) -> list[str]:
    """The sentences of a chunk: split after . ! ? : before whitespace, and at blank lines; pieces under
    MIN_CHARS characters are dropped; a chunk with none is one sentence, itself."""
    parts = [p.strip() for p in _SPLIT.split(text)]
    return [p for p in parts if len(p) >= MIN_CHARS] or [text.strip()]


@dataclass
class SentenceIndex:
    """Unit vectors of every sentence of a KB, each with its text, its chunk's id and its file path."""

    vectors: np.ndarray  # [n, dim] float32
    texts: np.ndarray  # [n] str
    chunk_ids: np.ndarray  # [n] str
    paths: np.ndarray  # [n] str

    @classmethod
    def empty(cls, dim: int) -> "SentenceIndex":
        none = np.array([], dtype=str)
        return cls(np.zeros((0, dim), np.float32), none, none, none)

    @classmethod
    def load(cls, directory: Path, dim: int) -> "SentenceIndex":
        path = Path(directory) / FILE
        if not path.is_file():
            return cls.empty(dim)
        with np.load(path, allow_pickle=False) as z:
            return cls(z["vectors"].astype(np.float32), z["texts"], z["chunk_ids"], z["paths"])

    def save(self, directory: Path) -> None:
        """Written whole to a temporary file, then renamed over the old one."""
        path = Path(directory) / FILE
        tmp = path.with_name(FILE + ".tmp.npz")
        np.savez(tmp, vectors=self.vectors, texts=self.texts, chunk_ids=self.chunk_ids, paths=self.paths)
        os.replace(tmp, path)

    def without_paths(self, paths: list[str]) -> "SentenceIndex":
        keep = ~np.isin(self.paths, list(paths)) if paths else np.ones(len(self.paths), bool)
        return SentenceIndex(self.vectors[keep], self.texts[keep], self.chunk_ids[keep], self.paths[keep])

    def plus(self, vectors: np.ndarray, texts: list[str], chunk_ids: list[str], paths: list[str]) -> "SentenceIndex":
        v = _unit(np.asarray(vectors, np.float32).reshape(-1, self.vectors.shape[1]))
        cat = lambda a, b: np.concatenate([a, np.array(b, dtype=str)])  # noqa: E731
        return SentenceIndex(np.concatenate([self.vectors, v]), cat(self.texts, texts), cat(self.chunk_ids, chunk_ids),
                             cat(self.paths, paths))

    def reembedded(self, embedder) -> "SentenceIndex":
        """The same sentences embedded by `embedder` (rag tune's tuned model)."""
        v = embedder.encode(self.texts.tolist()) if len(self) else self.vectors
        return SentenceIndex(_unit(np.asarray(v, np.float32)), self.texts, self.chunk_ids, self.paths)

    def __len__(self) -> int:
        return len(self.chunk_ids)

    @cached_property
    def _chunks(self) -> tuple[list[str], np.ndarray]:
        """(distinct chunk ids, each sentence's index among them): sorted once per index, not per query."""
        ids, inverse = np.unique(self.chunk_ids, return_inverse=True)
        return ids.tolist(), inverse

    def best_per_chunk(self, qv: np.ndarray) -> dict[str, float]:
        """{chunk id: max over its sentences of cos(q, sentence)} for every chunk, `qv` a unit vector."""
        if not len(self):
            return {}
        sims = self.vectors @ np.asarray(qv, np.float32)
        ids, inverse = self._chunks
        best = np.full(len(ids), -np.inf, np.float32)
        np.maximum.at(best, inverse, sims)
        return dict(zip(ids, best.tolist()))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def sentence_rows(rows: list[dict]) -> tuple[list[str], list[str], list[str]]:
    """(sentences, their chunk ids, their paths) of chunk rows with `id`, `path` and `text`."""
    texts, ids, paths = [], [], []
    for r in rows:
        for s in split_sentences(r["text"]):
            texts.append(s)
            ids.append(r["id"])
            paths.append(r["path"])
    return texts, ids, paths


def mixed_score(chunk_sim: float, sentence_sim: float | None, weight: float) -> float:
    """w * cos(q, chunk) + (1 - w) * best sentence cosine (the chunk's own cosine when it has none)."""
    best = chunk_sim if sentence_sim is None else sentence_sim
    return weight * chunk_sim + (1 - weight) * best
