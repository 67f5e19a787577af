"""Find the chunks that answer a question: `query(kb, question, k=3, cutoff=None)`.

    vectors (default)   the question is embedded with the KB's embedder; nearest chunks by
                        cosine similarity (ANN index once the KB is large, re-ranked exactly)
    hybrid=True         + BM25 over heading path + text; candidates of both searches are scored
                        score = alpha * similarity + (1 - alpha) * bm25 / best bm25
                        alpha: the KB's fitted weight (manifest "fusion", set by
                        tunelab.rag.fusion.fit_fusion on held-out questions) or 0.5
                        (convex fusion was chosen over reciprocal rank fusion on the
                        Python-docs FAQ check: docs/rag.md, "Fusion check")
    reranker            any callable (question, hits) -> hits, applied to the candidates
                        (4 x k of them) before the top k are kept: a cross-encoder, an LLM
                        judge, a recency rule...
    cutoff              drop hits whose cosine similarity to the question is below it
    sentences           a KB indexed with sentences=True (rag/sentences.py) adds the chunks of the
                        best-matching sentences to the candidates, and its vector score becomes
                        w * similarity + (1 - w) * the chunk's best sentence cosine
                        (w: `sentence_weight`, else the manifest's, else SENTENCE_WEIGHT); hybrid
                        fuses that score with BM25 as it fuses the similarity

Every `Hit` carries `similarity` (cosine, comparable across modes) and `score` (what ranked
it: the similarity, the hybrid score, or whatever the reranker set). Opened KBs and loaded
embedders are cached per process, so only the first query pays for loading them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tunelab.rag.embedders import kb_embedder
from tunelab.rag.sentences import SENTENCE_WEIGHT, mixed_score
from tunelab.rag.store import KnowledgeBase, kb_dir

HYBRID_ALPHA = 0.5


@dataclass
class Hit:
    rank: int
    score: float
    similarity: float
    text: str
    source: str
    section: str
    section_path: str
    start: int
    end: int
    id: str = ""
    bm25: float = 0.0  # BM25 / best BM25 among the candidates (hybrid only), in [0, 1]
    sentence: float | None = None  # the cosine of the chunk's best sentence (a KB with sentences), else None

    def to_dict(self) -> dict:
        return asdict(self)

    def cite(self) -> str:
        """`source § section` — how a citation names this chunk."""
        return f"{self.source} § {self.section}" if self.section else self.source


Reranker = Callable[[str, list[Hit]], list[Hit]]

_open_cache: dict[tuple[str, float], KnowledgeBase] = {}


def open_kb(kb: str | KnowledgeBase | None = None, directory: str | Path | None = None) -> KnowledgeBase:
    """The KB named `kb` (or at `directory`), cached until its manifest changes."""
    if isinstance(kb, KnowledgeBase):
        return kb
    d = kb_dir(kb, directory)
    mf = d / "manifest.json"
    key = (str(d.resolve()), mf.stat().st_mtime if mf.exists() else 0.0)
    if key not in _open_cache:
        _open_cache[key] = KnowledgeBase.open(kb, directory)
    return _open_cache[key]


def query(kb: str | KnowledgeBase | None, question: str, k: int = 3, cutoff: float | None = None, *,
          directory: str | Path | None = None, hybrid: bool = False,
          reranker: Reranker | None = None, candidates: int | None = None,
          alpha: float | None = None, vector: np.ndarray | None = None,
          sentence_weight: float | None = None) -> list[Hit]:
    """The `k` best chunks for `question`, best first (see the module docstring). `vector` (a unit vector)
    replaces the question's embedding for the vector search (HyDE, tunelab.rag.rewrite); BM25 still reads `question`."""
    store = open_kb(kb, directory)
    qv = vector if vector is not None else kb_embedder(store.manifest, store.dir).encode([question])[0]
    n = max(k, candidates or (4 * k if (hybrid or reranker) else k))
    if alpha is None:
        alpha = float(store.manifest.get("fusion", {}).get("alpha", HYBRID_ALPHA))
    by_id: dict[str, dict] = {}
    for row in store.search_vector(qv, n):
        by_id.setdefault(row["id"], row)
    sent = store.sentences
    best_sentence: dict[str, float] = {}
    if sent is not None:
        best_sentence = sent.best_per_chunk(qv)
        top = sorted(best_sentence, key=best_sentence.__getitem__, reverse=True)[:n]
        for row in store.rows_for([c for c in top if c not in by_id]):
            by_id.setdefault(row["id"], row)
        if sentence_weight is None:
            sentence_weight = float(store.manifest.get("sentence_weight", SENTENCE_WEIGHT))
    bm25: dict[str, float] = {}
    if hybrid:
        for row in store.search_text(question, n):
            by_id.setdefault(row["id"], row)
            bm25[row["id"]] = float(row["_score"])
    best = max(bm25.values(), default=0.0) or 1.0
    hits = []
    for cid, row in by_id.items():
        sim = float(np.dot(np.asarray(row["vector"], dtype=np.float32), qv))
        share = bm25.get(cid, 0.0) / best
        dense = mixed_score(sim, best_sentence.get(cid), sentence_weight) if sent is not None else sim
        score = alpha * dense + (1 - alpha) * share if hybrid else dense
        hits.append(Hit(0, score, sim, row["text"], row["source"], row["section"], row["section_path"],
                        int(row["start"]), int(row["end"]), cid, share, best_sentence.get(cid)))
    if cutoff is not None:
        hits = [h for h in hits if h.similarity >= cutoff]
    hits.sort(key=lambda h: (-h.score, -h.similarity))
    if reranker is not None:
        hits = list(reranker(question, hits))
    hits = hits[:k]
    for i, h in enumerate(hits, 1):
        h.rank = i
    return hits
