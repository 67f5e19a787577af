"""Paraphrase retrieval benchmark: the Python FAQ with its headings removed, asked in other words.

    python benchmarks/rag_paraphrase.py                     # every setting but the LLM reranker's, JSON
    python benchmarks/rag_paraphrase.py --settings dense,hybrid --headings-kept
    python benchmarks/rag_paraphrase.py --every 5 --settings dense+context,dense+context+rerank

Data (shared/DATA.md; nothing copied into the repo): the `faq/*.rst.txt` pages of Debian's
`python3.11-doc`, fetched by benchmarks/rag.py into $TUNELAB_HOME/datasets. From them this script
writes a *headings-removed* copy (`neutral_headings`: every section heading but the page title
becomes "Section N", N counting the page's headings from 1), so a question can only match a
section by its content. Questions: benchmarks/data/faq_paraphrases.jsonl, 60 FAQ questions
rewritten in other words (ours), gold = (page, original heading), mapped to that heading's label.
Tuning split (for settings that fit something, e.g. fusion weights): the FAQ's own 175 question
headings, asked against the same headings-removed pages; they are never among the 60.

Per setting: recall@1, recall@3, MRR (first gold within 10) and p50/p95 ms per query (after a
warm-up; the 2 cores may be shared, so latencies are upper bounds), plus the 1-minute load.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE / "data" / "faq_paraphrases.jsonl"
_ADORN = re.compile(r"^([=\-~^\"'`#*+<>:._])\1{2,}\s*$")


def neutral_headings(text: str, keep_title: bool = True) -> tuple[str, list[tuple[str, str]]]:
    """reStructuredText with each section heading replaced by "Section N" (N = 1, 2, ... in page order).

    A heading is a title line under a blank line (or the file start, or its overline) followed by
    an adornment line at least as long (`====`, `----`, `~~~~`, ...), optionally overlined too.
    With `keep_title` the page's first heading (its title) stays. Adornments are resized to the
    label. Returns the new text and [(original heading, label)] in order."""
    lines = text.splitlines()
    out: list[str] = []
    pairs: list[tuple[str, str]] = []
    i, n = 0, 0
    while i < len(lines):
        line = lines[i]
        prev_blank = not out or not out[-1].strip()
        over = (_ADORN.match(line) and i + 2 < len(lines) and lines[i + 1].strip()
                and _ADORN.match(lines[i + 2]) and lines[i + 2].strip()[0] == line.strip()[0])
        under = (line.strip() and not line[0].isspace() and not _ADORN.match(line) and i + 1 < len(lines)
                 and _ADORN.match(lines[i + 1]) and len(lines[i + 1].rstrip()) >= len(line.rstrip()))
        if prev_blank and (over or under):
            title = (lines[i + 1] if over else line).strip()
            mark = (lines[i + 2] if over else lines[i + 1]).strip()[0]
            first = not pairs and n == 0
            n += 1
            label = title if (first and keep_title) else f"Section {n - (1 if keep_title else 0)}"
            if not (first and keep_title):
                pairs.append((title, label))
            bar = mark * len(label)
            out.extend([bar, label, bar] if over else [label, bar])
            i += 3 if over else 2
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + ("\n" if text.endswith("\n") else ""), pairs


def build_variant(src_faq: Path, dst: Path) -> dict[tuple[str, str], str]:
    """Write the headings-removed copy of every `*.rst.txt` under `src_faq` into `dst` (same names).
    Returns (file name, original heading) -> label; a heading used twice on a page keeps its first."""
    dst.mkdir(parents=True, exist_ok=True)
    labels: dict[tuple[str, str], str] = {}
    for f in sorted(src_faq.glob("*.rst.txt")):
        new, pairs = neutral_headings(f.read_text(encoding="utf-8"))
        out = dst / f.name
        if not out.exists() or out.read_text(encoding="utf-8") != new:
            out.write_text(new, encoding="utf-8")
        for title, label in pairs:
            labels.setdefault((f.name, _norm_title(title)), label)
    return labels


def _norm_title(title: str) -> str:
    from tunelab.rag.ingest import _rst_inline

    return re.sub(r"\s+", " ", _rst_inline(title)).strip().lower()


def relabel(questions: list[dict], labels: dict[tuple[str, str], str]) -> list[dict]:
    """Questions whose gold section is the original heading -> the same with the neutral label."""
    out = []
    for q in questions:
        name = Path(q["source"]).name
        label = labels.get((name, _norm_title(q["section"])))
        if label is None:
            raise SystemExit(f"gold heading not found in {name}: {q['section']!r}")
        out.append({**q, "section": label, "heading": q["section"]})
    return out


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _rag_bench():
    spec = importlib.util.spec_from_file_location("rag_bench", HERE / "rag.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# name -> (index keyword arguments, query keyword arguments). The KB is built once per distinct
# index arguments. "fit" settings derive their query arguments from the tuning split first.
def settings(reranker_model: str) -> dict[str, tuple[dict, dict]]:
    return {
        "dense": ({"context": "path"}, {}),
        "hybrid": ({"context": "path"}, {"hybrid": True}),
        "dense+context": ({"context": "title+path"}, {}),
        "hybrid+context": ({"context": "title+path"}, {"hybrid": True}),
        "hybrid+context+fitted": ({"context": "title+path"}, {"hybrid": True, "fit": True}),
        "dense+context+chunk128": (SMALL, {}),
        "dense+context+sentences": ({"context": "title+path", "sentences": True}, {}),
        "hybrid+context+sentences+fitted": ({"context": "title+path", "sentences": True},
                                            {"hybrid": True, "fit": True, "fit_w": True}),
        "hybrid+context+chunk128+fitted": (SMALL, {"hybrid": True, "fit": True}),
        "dense+context+rerank": ({"context": "title+path"}, {"rerank": reranker_model}),
        "dense+context+rerank-mix0.5": ({"context": "title+path"}, {"rerank": reranker_model, "mix": 0.5}),
    }


SMALL = {"context": "title+path", "size": 128, "overlap": 16}


def kb_for(docs: Path, index_kwargs: dict, log) -> Path:
    from tunelab.models.registry import tunelab_home
    from tunelab.rag import index

    key = hashlib.sha1(json.dumps({"docs": str(docs), **index_kwargs}, sort_keys=True).encode()).hexdigest()[:8]
    d = tunelab_home() / "kb" / f"bench-paraphrase-{key}"
    rep = index([docs], directory=d, **index_kwargs)
    log(f"KB {d.name} {index_kwargs}: {rep.chunks_total} chunks, {rep.chunks_embedded} embedded, {rep.seconds} s")
    return d


def measure(kb: Path, qs: list[dict], k: int, query_kwargs: dict) -> dict:
    """recall@1/@k, MRR within 10, p50/p95 ms per query, per-question ranks."""
    from tunelab.rag.evaluate import is_gold
    from tunelab.rag.retrieve import query

    depth = max(k, 10)
    for q in qs[:3]:  # warm-up: model, table and index caches
        query(None, q["question"], k=depth, directory=kb, **query_kwargs)
    ranks, times = [], []
    for q in qs:
        t0 = time.perf_counter()
        hits = query(None, q["question"], k=depth, directory=kb, **query_kwargs)
        times.append(1000 * (time.perf_counter() - t0))
        ranks.append(next((h.rank for h in hits if is_gold(h, q["source"], q["section"])), None))
    n, times = len(qs), sorted(times)
    return {"recall@1": round(sum(r == 1 for r in ranks) / n, 4),
            f"recall@{k}": round(sum(1 for r in ranks if r and r <= k) / n, 4),
            "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
            "ms_p50": round(times[n // 2], 1), "ms_p95": round(times[min(n - 1, int(0.95 * n))], 1),
            "ranks": ranks}


def query_args(name: str, spec: dict, kb: Path, tuning: list[dict], log) -> dict:
    """The query keyword arguments of a setting: fit the fusion weight, load the reranker."""
    args = dict(spec)
    if args.pop("fit", False):
        from tunelab.rag.fusion import fit_fusion

        # not saved into the KB: the settings share one KB, and a saved weight would change the others' rows
        fit = fit_fusion(None, tuning, directory=kb, save=False, sentence_weight=args.pop("fit_w", False))
        log(f"{name}: fusion fitted on {len(tuning)} tuning questions: {fit}")
        args["alpha"] = fit["alpha"]
        if "sentence_weight" in fit:
            args["sentence_weight"] = fit["sentence_weight"]
    model, mix = args.pop("rerank", None), args.pop("mix", 1.0)
    if model:
        from tunelab.rag.rerank import LLMReranker

        args["reranker"] = LLMReranker.load(model, mix=mix)
    return args


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="", help="comma-separated names (default: all but the reranker's)")
    ap.add_argument("--reranker", default="smollm2-135m-instruct")
    ap.add_argument("--headings-kept", action="store_true", help="also the original pages (dense), for reference")
    ap.add_argument("--per-question", action="store_true")
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("--every", type=int, default=1, help="ask every N-th question only (the LLM reranker is slow)")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    bench = _rag_bench()
    src = bench.fetch()
    if isinstance(src, str):
        print(json.dumps({"skipped": src}))
        return
    variant = bench.data_dir() / "faq-headings-removed"
    labels = build_variant(src / "faq", variant)
    qs = relabel(load_jsonl(QUESTIONS), labels)[:: args.every]
    tuning = relabel([q for q in bench.faq_questions(src) if q["source"] != "faq/index.rst.txt"], labels)
    table = settings(args.reranker)
    names = [s for s in args.settings.split(",") if s] or [s for s in table if "rerank" not in s]
    unknown = [s for s in names if s not in table]
    if unknown:
        raise SystemExit(f"unknown settings {unknown}; known: {', '.join(table)}")
    res: dict = {"data": "python3.11-doc faq/*.rst.txt, headings removed", "questions": len(qs),
                 "tuning_questions": len(tuning), "k": args.k, "cpu": _cpu(), "settings": {}}
    kbs: dict[str, Path] = {}
    for name in names:
        index_kwargs, spec = table[name]
        key = json.dumps(index_kwargs, sort_keys=True)
        if key not in kbs:
            kbs[key] = kb_for(variant, index_kwargs, log)
        load0 = os.getloadavg()[0]
        m = measure(kbs[key], qs, args.k, query_args(name, spec, kbs[key], tuning, log))
        m["load_avg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        if args.per_question:
            m["misses"] = [q["question"] for q, r in zip(qs, m["ranks"]) if not r or r > args.k]
        m.pop("ranks")
        res["settings"][name] = m
        log(f"{name}: {m}")
    if args.headings_kept:
        kb = kb_for(src / "faq", {"context": "path"}, log)
        res["reference_headings_kept_dense"] = {k: v for k, v in measure(kb, load_jsonl(QUESTIONS), args.k, {}).items()
                                                if k != "ranks"}
    print(json.dumps(res, indent=1))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    main()
