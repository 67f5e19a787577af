"""RAG benchmark on the Python 3.11 documentation (Debian python3.11-doc, 497 pages).

    python benchmarks/rag.py                      # index + evaluate, prints JSON
    python benchmarks/rag.py --embedder minilm-l6 --no-headings --reuse

Data (see shared/DATA.md; nothing is copied into the repo): `apt-get download python3.11-doc`
+ `dpkg-deb -x` into $TUNELAB_HOME/datasets/python3.11-doc; prints {"skipped": reason} and
exits 0 when that is impossible.
Questions: every FAQ section title ending in '?' (faq/*.rst.txt); gold = that FAQ page + section.
Figures: index seconds for all pages (fresh KB), recall@1/@3 and MRR (vector and hybrid),
query p50/p90 in ms after 5 warm-up queries, and the load average (the 2 cores are shared:
a load above 2 means the timings are pessimistic).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def data_dir() -> Path:
    from tunelab.models.registry import tunelab_home

    return tunelab_home() / "datasets" / "python3.11-doc"


def sources_dir(root: Path) -> Path:
    return root / "usr/share/doc/python3.11/html/_sources"


def fetch() -> Path | str:
    """The _sources folder, fetched if needed; a string says why it is unavailable."""
    root = data_dir()
    if len(glob.glob(str(sources_dir(root) / "**/*.rst.txt"), recursive=True)) >= 400:
        return sources_dir(root)
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return "apt-get / dpkg-deb not available"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(["apt-get", "download", "python3.11-doc"], cwd=tmp, capture_output=True, text=True)
        debs = glob.glob(os.path.join(tmp, "python3.11-doc_*.deb"))
        if r.returncode != 0 or not debs:
            return f"apt-get download python3.11-doc failed: {(r.stderr or r.stdout).strip()[-200:]}"
        subprocess.run(["dpkg-deb", "-x", debs[0], str(root)], check=True)
    return sources_dir(root)


def faq_questions(src: Path) -> list[dict]:
    """FAQ section titles ending in '?' -> gold (faq page, section)."""
    from tunelab.rag.ingest import read_document

    out, seen = [], set()
    for f in sorted((src / "faq").glob("*.rst.txt")):
        for b in read_document(f).blocks:
            if b.section.endswith("?") and (f.name, b.section) not in seen:
                seen.add((f.name, b.section))
                out.append({"question": b.section, "source": f"faq/{f.name}", "section": b.section})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embedder", default="minilm-l6")
    ap.add_argument("--no-headings", action="store_true", help="embed/BM25 the body only (strict check)")
    ap.add_argument("--reuse", action="store_true", help="keep an existing benchmark KB (incremental)")
    ap.add_argument("-k", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    src = fetch()
    if isinstance(src, str):
        print(json.dumps({"skipped": src}))
        return
    from tunelab.rag import evaluate, index, query
    from tunelab.rag.store import kb_dir

    name = f"bench-pydocs-{args.embedder}" + ("-body" if args.no_headings else "")
    if not args.reuse and kb_dir(name).exists():
        shutil.rmtree(kb_dir(name))
    pages = len(glob.glob(str(src / "**/*.rst.txt"), recursive=True))
    load0 = os.getloadavg()[0]
    rep = index([src], kb=name, embedder=args.embedder, headings=not args.no_headings,
                log=lambda m: print(m, file=sys.stderr))
    load1 = os.getloadavg()[0]
    qs = faq_questions(src)
    for q in qs[:5]:  # warm-up: model, table and index caches
        query(name, q["question"], k=args.k)
    res = {"data": "python3.11-doc", "pages": pages, "embedder": args.embedder,
           "headings_embedded": not args.no_headings, "cpu_cores": os.cpu_count(),
           "index": rep.to_dict(), "questions": len(qs)}
    for mode, hybrid in (("vector", False), ("hybrid", True)):
        t0 = time.perf_counter()
        ev = evaluate(name, qs, k=args.k, hybrid=hybrid)
        lat = sorted(1000 * x for x in _latencies(name, qs, args.k, hybrid))
        res[mode] = {key: ev[key] for key in (f"recall@{args.k}", "recall@1", "mrr")}
        res[mode]["query_ms_p50"] = round(lat[len(lat) // 2], 1)
        res[mode]["query_ms_p90"] = round(lat[int(len(lat) * 0.9)], 1)
        res[mode]["misses"] = [p["question"] for p in ev["per_question"] if not p["rank"] or p["rank"] > args.k][:10]
        res[mode]["eval_seconds"] = round(time.perf_counter() - t0, 1)
    res["ann_top3_same_as_exact"] = _ann_agreement(name, qs, args.k)
    res["load_avg_1min"] = {"index_start": round(load0, 2), "index_end": round(load1, 2),
                            "end": round(os.getloadavg()[0], 2)}
    res["targets"] = {"recall@3>=0.85": res["vector"][f"recall@{args.k}"] >= 0.85,
                      "index<120s": rep.seconds < 120, "query_p50<50ms": res["vector"]["query_ms_p50"] < 50}
    print(json.dumps(res, indent=1))


def _latencies(name: str, qs: list[dict], k: int, hybrid: bool) -> list[float]:
    from tunelab.rag import query

    out = []
    for q in qs:
        t0 = time.perf_counter()
        query(name, q["question"], k=k, hybrid=hybrid)
        out.append(time.perf_counter() - t0)
    return out


def _ann_agreement(name: str, qs: list[dict], k: int) -> float | None:
    """Fraction of questions whose top-k ids from the ANN index equal an exact scan's."""
    from tunelab.rag.embedders import load_embedder
    from tunelab.rag.retrieve import open_kb

    kb = open_kb(name)
    if not kb.manifest.get("ann_rows"):
        return None
    emb = load_embedder(kb.manifest["embedder"])
    same = 0
    for q in qs:
        v = emb.encode([q["question"]])[0]
        same += [r["id"] for r in kb.search_vector(v, k)] == [r["id"] for r in kb.search_vector(v, k, exact=True)]
    return round(same / len(qs), 4)


if __name__ == "__main__":
    main()
