"""Scoring variants on the paraphrase benchmark, computed exhaustively over a KB's stored vectors.

    nice -n 5 .venv/bin/python benchmarks/rag_paraphrase_scoring.py KB_WITH_SENTENCES [--tuned-kb KB] [--questions-of KB]

Reads the chunk vectors and sentences.npz of a KB built by benchmarks/rag_paraphrase.py with sentences
(`dense+context+sentences`), embeds the 60 paraphrases and the 175 FAQ titles (the tuning split) once,
and scores every chunk for every question with numpy, so one run compares variants that the package
does not ship (the package's `dense+context+sentences` row is the `sentences w=0.5` line here):

    chunk only                 cos(q, chunk)
    sentences w                w cos(q, chunk) + (1 - w) max_s cos(q, s)          (rag/sentences.py)
    top-2 sentences            the mean of the chunk's two best sentences instead of the max
    prf m b                    Rocchio feedback: q' = unit(q + b mean of the m best chunks), scored again
    section lambda             + lambda x the best other chunk of the same section
    stripped-question mix a    q' = unit(a q + (1 - a) embed(question without "how do I", "why does", ...))
    + generated questions      `rag tune`'s generated questions (--questions-of KB) as extra sentences of their chunks
    base+tuned a               a x this KB's score + (1 - a) x the tuned KB's (--tuned-kb, its sentences re-embedded)

Prints JSON: per split and variant, recall@1, recall@3, MRR (first gold within 10). Data and gold as in
benchmarks/rag_paraphrase.py (imported). No timing: every variant here is one more small product.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rag_paraphrase as rp  # noqa: E402

STRIP = re.compile(r"^(how (do|can|should|would) (i|you|we)|what('s| is| are| does| do)?|why (do|does|is|are|can't|"
                   r"cannot|can|doesn't|don't)( i| you)?|is there( a| an)?|can (i|you)|which|where|when|are there|"
                   r"does|do)\b\s*", re.I)


class Scorer:
    """One KB's chunk and sentence vectors and its embedder; `score(Q)` = the package's sentence mix."""

    def __init__(self, kb: Path, sentences_of: Path | None = None, reembed: bool = False):
        from tunelab.rag.embedders import kb_embedder
        from tunelab.rag.retrieve import Hit, open_kb
        from tunelab.rag.sentences import SentenceIndex

        store = open_kb(None, kb)
        self.rows = sorted(store.table.to_pandas().to_dict("records"), key=lambda r: r["id"])
        self.ids = [r["id"] for r in self.rows]
        self.pos = {c: i for i, c in enumerate(self.ids)}
        self.C = np.stack([np.asarray(r["vector"], np.float32) for r in self.rows])
        self.emb = kb_embedder(store.manifest, store.dir)
        sent = SentenceIndex.load(sentences_of or kb, self.C.shape[1])
        if reembed:
            sent = sent.reembedded(self.emb)
        self.S, self.owner = sent.vectors, np.array([self.pos[c] for c in sent.chunk_ids])
        self.hits = [Hit(0, 0, 0, r["text"], r["source"], r["section"], r["section_path"], 0, 0, r["id"])
                     for r in self.rows]
        sec = np.array([f'{r["source"]}|{r["section_path"]}' for r in self.rows])
        self.same_section = (sec[:, None] == sec[None, :]) & ~np.eye(len(sec), dtype=bool)

    def embed(self, texts: list[str]) -> np.ndarray:
        v = np.asarray(self.emb.encode(texts), np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def gold(self, qs: list[dict]) -> np.ndarray:
        from tunelab.rag.evaluate import is_gold

        return np.stack([[is_gold(h, q["source"], q["section"]) for h in self.hits] for q in qs])

    def best_sentence(self, Q: np.ndarray, top: int = 1, S=None, owner=None) -> np.ndarray:
        S, owner = (self.S, self.owner) if S is None else (S, owner)
        sims, out = Q @ S.T, np.full((len(Q), len(self.ids)), np.nan, np.float32)
        for c in np.unique(owner):
            s = np.sort(sims[:, owner == c], axis=1)[:, ::-1][:, :top]
            out[:, c] = s.mean(1)
        return out

    def score(self, Q: np.ndarray, w: float = 0.5, top: int = 1, S=None, owner=None) -> np.ndarray:
        cs = Q @ self.C.T
        best = self.best_sentence(Q, top, S, owner)
        return w * cs + (1 - w) * np.where(np.isnan(best), cs, best)


def metrics(sc: np.ndarray, G: np.ndarray, k: int = 3) -> dict:
    order = np.argsort(-sc, axis=1)[:, :10]
    ranks = [int(np.argmax(G[j][order[j]])) + 1 if G[j][order[j]].any() else None for j in range(len(G))]
    n = len(G)
    return {"recall@1": round(sum(r == 1 for r in ranks) / n, 3), f"recall@{k}": round(sum(1 for r in ranks if r and r <= k) / n, 3),
            "mrr": round(sum(1 / r for r in ranks if r) / n, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kb", type=Path)
    ap.add_argument("--tuned-kb", type=Path, help="a `rag tune`d copy of the KB (its sentences re-embedded here)")
    ap.add_argument("--questions-of", type=Path, help="a `rag tune`d KB whose tune/questions-*.jsonl to add")
    a = ap.parse_args()
    bench = rp._rag_bench()
    src = bench.fetch()
    labels = rp.build_variant(src / "faq", bench.data_dir() / "faq-headings-removed")
    splits = {"paraphrases": rp.relabel(rp.load_jsonl(rp.QUESTIONS), labels),
              "tuning": rp.relabel([q for q in bench.faq_questions(src) if q["source"] != "faq/index.rst.txt"], labels)}
    base = Scorer(a.kb)
    tuned = Scorer(a.tuned_kb, sentences_of=a.kb, reembed=True) if a.tuned_kb else None
    res: dict = {"kb": str(a.kb), "splits": {}}
    for split, qs in splits.items():
        Q, G = base.embed([q["question"] for q in qs]), base.gold(qs)
        out = {"chunk only": metrics(Q @ base.C.T, G)}
        for w in (0.3, 0.5, 0.7):
            out[f"sentences w={w}"] = metrics(base.score(Q, w), G)
        mixed = base.score(Q)
        out["top-2 sentences"] = metrics(base.score(Q, top=2), G)
        order = np.argsort(-mixed, axis=1)
        for m in (1, 3, 5):
            for b in (0.3, 0.6, 1.0):
                q2 = Q + b * base.C[order[:, :m]].mean(1)
                out[f"prf m={m} b={b}"] = metrics(base.score(q2 / np.linalg.norm(q2, axis=1, keepdims=True)), G)
        for lam in (0.1, 0.3, 0.5):
            other = np.where(base.same_section[None], mixed[:, None, :], -np.inf).max(2)
            out[f"section lambda={lam}"] = metrics(mixed + lam * np.where(np.isinf(other), mixed, other), G)
        Q2 = base.embed([STRIP.sub("", q["question"]).rstrip("?").strip() or q["question"] for q in qs])
        for mix in (0.3, 0.5, 0.7):
            M = mix * Q + (1 - mix) * Q2
            out[f"stripped-question mix a={mix}"] = metrics(base.score(M / np.linalg.norm(M, axis=1, keepdims=True)), G)
        if a.questions_of:
            gq = [json.loads(x) for f in sorted((a.questions_of / "tune").glob("questions-*.jsonl")) if f.suffixes == [".jsonl"]
                  for x in f.read_text().splitlines() if x.strip()]
            gq = [g for g in gq if g["id"] in base.pos]
            V = base.embed([g["messages"][0]["content"] for g in gq])
            S = np.concatenate([base.S, V])
            owner = np.concatenate([base.owner, [base.pos[g["id"]] for g in gq]])
            out[f"+ {len(gq)} generated questions"] = metrics(base.score(Q, S=S, owner=owner), G)
        if tuned is not None:
            t = tuned.score(tuned.embed([q["question"] for q in qs]))
            t = t[:, [tuned.pos[c] for c in base.ids]]
            out["tuned embedder + sentences"] = metrics(t, G)
            for mix in (0.3, 0.5, 0.7):
                out[f"base+tuned a={mix}"] = metrics(mix * mixed + (1 - mix) * t, G)
        res["splits"][split] = out
        print(split, json.dumps(out), file=sys.stderr, flush=True)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
