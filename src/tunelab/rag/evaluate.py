"""Retrieval quality of a knowledge base: recall@k and MRR against gold sources.

`qa.jsonl`, one question per line:

    {"question": "How do I make a script executable?", "source": "faq/windows.rst.txt",
     "section": "How do I make Python scripts executable?"}

`source` (required) matches a hit whose source equals it or ends with "/" + it; `section`
(optional) must also equal the hit's section (case and whitespace ignored) or one heading of
its path. `gold` = "source#section" is accepted as a shorthand.

    recall@k  fraction of questions with a gold chunk among the top k
    mrr       mean of 1 / rank of the first gold chunk within the top `depth` (max(k, 10)); 0 if none

Raises:
    TunelabError: missing file, empty file, or a bad line (reported as file:line).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.rag.retrieve import Hit, query


def load_questions(path: str | Path) -> list[dict]:
    """Parse and validate qa.jsonl (format in the module docstring)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TunelabError(f"cannot read questions ({e.strerror})", where=str(path)) from e
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise TunelabError(f"invalid JSON ({e.msg})", where=where, hint="one JSON object per line") from e
        if not isinstance(rec, dict):
            raise TunelabError("expected a JSON object", where=where)
        if "gold" in rec and "source" not in rec:
            src, _, sec = str(rec["gold"]).partition("#")
            rec["source"], rec["section"] = src, sec or rec.get("section")
        q, src = rec.get("question"), rec.get("source")
        if not isinstance(q, str) or not q.strip():
            raise TunelabError("missing or empty 'question'", where=where)
        if not isinstance(src, str) or not src.strip():
            raise TunelabError("missing or empty 'source' (the gold file)", where=where,
                               hint='add "source": "path/of/the/file" (and optionally "section")')
        sec = rec.get("section")
        if sec is not None and not isinstance(sec, str):
            raise TunelabError("'section' must be a string", where=where)
        out.append({"question": q, "source": src, "section": sec or None, "line": n})
    if not out:
        raise TunelabError("no questions", where=str(path))
    return out


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().lower()


def is_gold(hit: Hit, source: str, section: str | None) -> bool:
    """Does `hit` come from the gold file (and section, when given)?"""
    src = source.strip().lstrip("./")
    if not (hit.source == src or hit.source.endswith("/" + src) or src.endswith("/" + hit.source)):
        return False
    if not section:
        return True
    want = _norm(section)
    return _norm(hit.section) == want or want in (_norm(s) for s in hit.section_path.split(" > "))


def evaluate(kb, questions: str | Path | list[dict], k: int = 3, *, directory=None, hybrid: bool = False,
             reranker=None, rewriter=None) -> dict:
    """recall@1, recall@k and MRR of `kb` on `questions` (a qa.jsonl path or loaded records).

    With `rewriter` (tunelab.rag.rewrite.QueryRewriter) every question is rewritten first, in batches;
    `query_ms_p50` is then retrieval only and `rewrite_ms_per_question` the generation time per question."""
    qs = load_questions(questions) if isinstance(questions, (str, Path)) else questions
    depth = max(k, 10)
    if rewriter is not None:
        rewriter.prepare([q["question"] for q in qs])
    ranks, per_q, times = [], [], []
    for q in qs:
        t0 = time.perf_counter()
        if rewriter is not None:
            hits = rewriter.query(kb, q["question"], k=depth, directory=directory, hybrid=hybrid, reranker=reranker)
        else:
            hits = query(kb, q["question"], k=depth, directory=directory, hybrid=hybrid, reranker=reranker)
        times.append(time.perf_counter() - t0)
        rank = next((h.rank for h in hits if is_gold(h, q["source"], q.get("section"))), None)
        ranks.append(rank)
        per_q.append({"question": q["question"], "rank": rank,
                      "top": [h.cite() for h in hits[:k]]})
    n = len(qs)
    times.sort()
    extra = {} if rewriter is None else {"rewrite": rewriter.kind.name, "rewrite_ms_per_question": round(
        1000 * rewriter.seconds / max(1, rewriter.generated), 1)}
    return {
        **extra,
        "questions": n,
        "k": k,
        f"recall@{k}": round(sum(1 for r in ranks if r and r <= k) / n, 4),
        "recall@1": round(sum(1 for r in ranks if r == 1) / n, 4),
        "mrr": round(sum(1.0 / r for r in ranks if r) / n, 4),
        "mrr_depth": depth,
        "hybrid": hybrid,
        "query_ms_p50": round(1000 * times[n // 2], 1),
        "per_question": per_q,
    }
