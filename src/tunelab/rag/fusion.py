"""Hybrid fusion weight per knowledge base, fitted on held-out questions: `fit_fusion(kb, questions)`.

Hybrid search ranks the union of the vector and BM25 candidates by

    score(alpha) = alpha * cosine + (1 - alpha) * bm25 / best bm25

With alpha = 1 the order is the vector search's own (its top n are all among the candidates), so
the fit tries alpha in {0, 0.05, ..., 1} on the questions, keeps the best by (recall@k, MRR) and,
on a tie, the larger alpha (closer to vectors alone). Hence on the fitting questions hybrid never
scores below vectors alone; where BM25 only hurts (questions in other words than the documents)
the fit returns alpha = 1.

Questions: qa.jsonl records (`question`, `source`, optional `section`: tunelab.rag.evaluate), or
records with `chunk_id` (the id of the one gold chunk, as `tunelab rag tune`'s generated questions).
The result is saved in the KB's manifest ("fusion") and used by every later `query(..., hybrid=True)`
that does not pass `alpha`.

On a KB with sentence vectors (rag/sentences.py) the vector score is w * cosine + (1 - w) * best
sentence cosine, and alpha is fitted at the KB's w. With `sentence_weight=True` w is fitted too, on the
same questions and candidates: w in {0, 0.1, ..., 1}, (alpha, w) best by (recall@k, MRR), ties to the
larger alpha, then to w nearest SENTENCE_WEIGHT; saved as manifest["sentence_weight"] and used by every
later query that does not pass one. It is off by default: on the FAQ benchmark the fit chose w = 0.7 by
one tuning question, and scored below the default w on the paraphrased questions (docs/rag.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.rag.evaluate import is_gold, load_questions
from tunelab.rag.retrieve import Hit, open_kb, query
from tunelab.rag.sentences import SENTENCE_WEIGHT, mixed_score

GRID = tuple(round(0.05 * i, 2) for i in range(21))
SENTENCE_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def load_heldout(path: str | Path) -> list[dict]:
    """Questions from a file: lines with `chunk_id` ({"question", "chunk_id"}), else the qa.jsonl format."""
    try:
        lines = [(n, line) for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1)
                 if line.strip()]
    except OSError as e:
        raise TunelabError(f"cannot read questions ({e.strerror})", where=str(path)) from e
    try:
        recs = [(n, json.loads(line)) for n, line in lines]
    except json.JSONDecodeError:
        return load_questions(path)  # reports the bad line as file:line
    if not recs or not all(isinstance(r, dict) and r.get("chunk_id") for _, r in recs):
        return load_questions(path)
    for n, r in recs:
        if not isinstance(r.get("question"), str) or not r["question"].strip():
            raise TunelabError("missing or empty 'question'", where=f"{path}:{n}")
    return [{"question": r["question"], "chunk_id": str(r["chunk_id"])} for _, r in recs]


def _gold(hit: Hit, q: dict) -> bool:
    if q.get("chunk_id"):
        return hit.id == q["chunk_id"]
    return is_gold(hit, q["source"], q.get("section"))


def _first_gold(hits: list[Hit], q: dict, alpha: float, depth: int, w: float = 1.0) -> int | None:
    """Rank (1-based, within `depth`) of the first gold hit when the candidates are ordered by score(alpha),
    the vector score mixed with the best sentence's at weight `w` (1: the chunk's cosine alone)."""
    def score(h: Hit) -> float:
        return alpha * mixed_score(h.similarity, h.sentence, w) + (1 - alpha) * h.bm25

    order = sorted(hits, key=lambda h: (-score(h), -h.similarity))
    return next((i for i, h in enumerate(order[:depth], 1) if _gold(h, q)), None)


def scores_at(ranks: list[int | None], k: int) -> dict:
    """recall@1, recall@k and MRR of first-gold ranks (None = not found)."""
    n = max(1, len(ranks))
    return {"recall@1": round(sum(r == 1 for r in ranks) / n, 4),
            f"recall@{k}": round(sum(1 for r in ranks if r and r <= k) / n, 4),
            "mrr": round(sum(1 / r for r in ranks if r) / n, 4)}


def fit_alpha(candidates: list[list[Hit]], questions: list[dict], k: int = 3, w: float = 1.0) -> tuple[float, dict]:
    """(best alpha, {alpha: scores}) over `GRID` for each question's hybrid candidates (Hits carrying
    `similarity` and `bm25`, and `sentence` when w < 1); best by (recall@k, MRR, alpha), so never below
    alpha = 1 (vectors alone)."""
    depth = max(k, 10)
    table = {a: scores_at([_first_gold(h, q, a, depth, w) for h, q in zip(candidates, questions)], k) for a in GRID}
    key = f"recall@{k}"
    return max(GRID, key=lambda a: (table[a][key], table[a]["mrr"], a)), table


def fit_alpha_and_sentence_weight(candidates: list[list[Hit]], questions: list[dict], k: int = 3
                                  ) -> tuple[float, float, dict]:
    """(alpha, w, {w: {alpha: scores}}) over GRID x SENTENCE_GRID (the module docstring)."""
    tables = {w: fit_alpha(candidates, questions, k, w)[1] for w in SENTENCE_GRID}
    key = f"recall@{k}"
    a, w = max(((a, w) for w in SENTENCE_GRID for a in GRID),
               key=lambda aw: (tables[aw[1]][aw[0]][key], tables[aw[1]][aw[0]]["mrr"], aw[0],
                               -abs(aw[1] - SENTENCE_WEIGHT)))
    return a, w, tables


def fit_fusion(kb, questions: str | Path | list[dict], *, directory=None, k: int = 3,
               save: bool = True, sentence_weight: bool = False) -> dict:
    """Fit the hybrid weight alpha of `kb` on `questions` (see the module docstring).

    Returns {"alpha", "questions", "k", "fitted": scores at alpha, "vectors": scores at alpha = 1,
    "bm25_weight_0.5": scores at the old default 0.5}; with `save`, stored as manifest["fusion"]."""
    qs = load_heldout(questions) if isinstance(questions, (str, Path)) else list(questions)
    if not qs:
        raise TunelabError("no questions to fit the fusion weight on", where="fusion")
    store = open_kb(kb, directory)
    depth = max(k, 10)
    pool = 4 * depth  # as many candidates per search as `evaluate` gets (4 x its depth)
    cands = [query(store, q["question"], k=2 * pool, hybrid=True, alpha=1.0, candidates=pool) for q in qs]
    if store.sentences is None or not sentence_weight:
        w = 1.0 if store.sentences is None else float(store.manifest.get("sentence_weight", SENTENCE_WEIGHT))
        best, table = fit_alpha(cands, qs, k, w)
        fit = {"alpha": best, "questions": len(qs), "k": k, "fitted": table[best], "vectors": table[1.0],
               "bm25_weight_0.5": table[0.5]}
    else:
        best, w, tables = fit_alpha_and_sentence_weight(cands, qs, k)
        fit = {"alpha": best, "sentence_weight": w, "questions": len(qs), "k": k, "fitted": tables[w][best],
               "vectors": tables[1.0][1.0], "vectors_and_sentences": tables[SENTENCE_WEIGHT][1.0],
               "bm25_weight_0.5": tables[w][0.5]}
    if save:
        store.manifest["fusion"] = fit
        if "sentence_weight" in fit:
            store.manifest["sentence_weight"] = fit["sentence_weight"]
        store.save_manifest()
    return fit
