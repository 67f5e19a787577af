"""The paraphrase benchmark (benchmarks/rag_paraphrase.py) for a tuned embedder and for query rewriting.

    python benchmarks/rag_tune_rewrite.py --tuned-kb ragtune-faq          # after `tunelab rag tune ragtune-faq`
    python benchmarks/rag_tune_rewrite.py --rewrites multi,hyde --single 5

Same data, questions, gold and metrics as rag_paraphrase.py (whose functions this imports): the
headings-removed Python FAQ, 60 paraphrased questions, recall@1/@3, MRR within 10, ms per query.

    base            the paraphrase benchmark's "dense+context" KB (title+path context, 256-token chunks)
    tuned           `--tuned-kb`: a copy of that KB after `tunelab rag tune` (questions written by a teacher
                    from the FAQ chunks themselves, never from the 60 paraphrases); its hybrid fusion weight
                    is refitted on the benchmark's tuning split (the FAQ's own question headings)
    +multi / +hyde  the question rewritten by SmolLM2-135M-Instruct first (tunelab.rag.rewrite); all
                    rewrites are written in batches of 16 before retrieval, so `ms_p50` is retrieval only,
                    `rewrite_ms_per_question` the batched generation per question, and `single_ms` the
                    median of `--single` questions rewritten and retrieved one at a time (what a user waits)

Prints JSON. The 2 cores may be shared: every time is an upper bound.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, HERE / file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure_rewrite(kb: Path, qs: list[dict], k: int, rewriter, single: int, query_kwargs: dict) -> dict:
    """recall@1/@k and MRR after rewriting; batched generation first, then retrieval (see module docstring)."""
    from tunelab.rag.evaluate import is_gold

    depth = max(k, 10)
    rewriter.prepare([q["question"] for q in qs])
    per_q = 1000 * rewriter.seconds / max(1, rewriter.generated)
    ranks, times = [], []
    for q in qs:
        t0 = time.perf_counter()
        hits = rewriter.query(None, q["question"], k=depth, directory=kb, **query_kwargs)
        times.append(1000 * (time.perf_counter() - t0))
        ranks.append(next((h.rank for h in hits if is_gold(h, q["source"], q["section"])), None))
    singles = []
    for q in qs[:single]:  # one at a time, generation included: a fresh rewriter has nothing cached
        fresh = type(rewriter)(rewriter.kind.name, rewriter.generator)
        t0 = time.perf_counter()
        fresh.query(None, q["question"], k=depth, directory=kb, **query_kwargs)
        singles.append(1000 * (time.perf_counter() - t0))
    n, times, singles = len(qs), sorted(times), sorted(singles)
    return {"recall@1": round(sum(r == 1 for r in ranks) / n, 4),
            f"recall@{k}": round(sum(1 for r in ranks if r and r <= k) / n, 4),
            "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
            "ms_p50": round(times[n // 2], 1), "rewrite_ms_per_question": round(per_q, 1),
            "single_ms": round(singles[len(singles) // 2], 1) if singles else None,
            "single_n": len(singles)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tuned-kb", default="", help="name of a KB tuned by `tunelab rag tune` (a copy of the base KB)")
    ap.add_argument("--rewrites", default="", help="comma-separated: multi, hyde")
    ap.add_argument("--rewrite-model", default="smollm2-135m-instruct")
    ap.add_argument("--single", type=int, default=3, help="questions also rewritten one at a time, for latency")
    ap.add_argument("--every", type=int, default=1, help="ask every N-th question only (rewriting is slow)")
    ap.add_argument("--no-hybrid", action="store_true")
    ap.add_argument("-k", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    para = _load("rag_paraphrase", "rag_paraphrase.py")
    bench = para._rag_bench()
    src = bench.fetch()
    if isinstance(src, str):
        print(json.dumps({"skipped": src}))
        return
    variant = bench.data_dir() / "faq-headings-removed"
    labels = para.build_variant(src / "faq", variant)
    qs = para.relabel(para.load_jsonl(para.QUESTIONS), labels)[:: args.every]
    tuning = para.relabel([q for q in bench.faq_questions(src) if q["source"] != "faq/index.rst.txt"], labels)
    base = para.kb_for(variant, {"context": "title+path"}, log)
    res: dict = {"data": "python3.11-doc faq/*.rst.txt, headings removed", "questions": len(qs), "k": args.k,
                 "cpu": para._cpu(), "base_kb": base.name, "settings": {}}
    modes = {"dense": {}} if args.no_hybrid else {"dense": {}, "hybrid": {"hybrid": True}}

    def record(name, m, load0):
        m["load_avg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        m.pop("ranks", None)
        res["settings"][name] = m
        log(f"{name}: {m}")

    for mode, kw in modes.items():
        load0 = os.getloadavg()[0]
        record(f"{mode}+context", para.measure(base, qs, args.k, kw), load0)
    if args.tuned_kb:
        from tunelab.rag.fusion import fit_fusion
        from tunelab.rag.store import kb_dir

        tuned = kb_dir(args.tuned_kb)
        info = json.loads((tuned / "manifest.json").read_text()).get("tuned_embedder")
        if not info:
            raise SystemExit(f"{tuned} has no tuned embedder: run `tunelab rag tune {args.tuned_kb}` first")
        res["tuned"] = {k: info[k] for k in ("teacher", "train_pairs", "heldout_questions", "epochs", "lr",
                                             "before", "after") if k in info}
        if not args.no_hybrid:
            fit = fit_fusion(None, tuning, directory=tuned)
            log(f"tuned: fusion refitted on {len(tuning)} tuning questions: alpha {fit['alpha']}")
        for mode, kw in modes.items():
            load0 = os.getloadavg()[0]
            record(f"{mode}+context+tuned", para.measure(tuned, qs, args.k, kw), load0)
    if args.rewrites:
        from tunelab.infer.generate import Generator
        from tunelab.rag.rewrite import QueryRewriter

        gen = Generator.from_model(args.rewrite_model)
        for kind in args.rewrites.split(","):
            load0 = os.getloadavg()[0]
            record(f"dense+context+{kind}", measure_rewrite(base, qs, args.k, QueryRewriter(kind, gen),
                                                            args.single, {}), load0)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
