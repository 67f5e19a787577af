"""Fine-tune or knowledge base? (seed 003), measured on SmolLM2-135M-Instruct with `tunelab eval`.

    python benchmarks/kb_vs_sft.py [--out DIR] [--only knowledge|style] [--persona-run runs/quickstart]
                                   [--limit N] [--max-new-tokens 32] [-k 2] [--cache DIR] [train overrides ...]

Two sets, four contenders each (base, base+RAG, SFT, SFT+RAG), all through the CLI a user would run:

- knowledge: 46 invented facts (examples/data/knowledge-tolvaris: an island, a company, a product, a
  tram network). SFT = `tunelab train examples/data/knowledge-tolvaris/sft-facts.yaml` (LoRA on 92
  question/answer pairs, 2 phrasings per fact); the knowledge base = `tunelab rag index` of the 4
  markdown documents (MiniLM embedder). Scored on the 46 held-out paraphrased questions by
  `keywords` (the reply contains the fact's key words, per example), ROUGE-L, reply NLL, length.
- style: the TuneBot persona (examples/data/tunebot). SFT = the quickstart run (`--persona-run`, else
  trained here from examples/configs/quickstart.yaml); the knowledge base = the same 84 training
  conversations written as one markdown document (a section per comment, its reply below), so RAG
  gets exactly the data the fine-tune learned from. Scored on the 20 held-out comments by `contains
  "—TuneBot"` (the signature), ROUGE-L, reply NLL, length.

Prints one JSON object (also written to OUT/summary.json): per set, per contender, each metric's value
and bootstrap 95% interval, plus stage timings and the 1-minute load average at each stage's start and
end (the machine may be shared). `--limit N` keeps the first N held-out examples of each set (a reduced
run); train overrides (key=value) go to the facts SFT run (e.g. train.max_steps=2 for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KNOW = ROOT / "examples/data/knowledge-tolvaris"
TUNEBOT = ROOT / "examples/data/tunebot"
SIGNATURE = "—TuneBot"
NAMES = {"run": "SFT", "base": "base"}


def tunelab(*args, log) -> str:
    """Run `python -m tunelab ARGS`; its stdout, or exit with its stderr."""
    cmd = [sys.executable, "-m", "tunelab", *map(str, args)]
    log("$ tunelab " + " ".join(map(str, args)))
    p = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return p.stdout


class Stages:
    def __init__(self, log):
        self.log, self.times = log, {}

    def __call__(self, name, fn):
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        self.log(f"[{name}] start (load {load0:.1f})")
        out = fn()
        self.times[name] = {"seconds": round(time.perf_counter() - t0, 1), "load_start": round(load0, 1),
                            "load_end": round(os.getloadavg()[0], 1)}
        self.log(f"[{name}] {self.times[name]}")
        return out


def head(src: Path, dst: Path, limit: int | None) -> Path:
    if limit is None:
        return src
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:limit]), encoding="utf-8")
    return dst


def persona_document(dst: Path) -> Path:
    """The 84 TuneBot training conversations as one markdown document: a section per comment."""
    parts = ["# TuneBot replies to viewer comments\n"]
    for i, line in enumerate(TUNEBOT.joinpath("train.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        msgs = json.loads(line)["messages"]
        user = next(m["content"] for m in msgs if m["role"] == "user")
        reply = next(m["content"] for m in reversed(msgs) if m["role"] == "assistant")
        parts.append(f"## Comment {i}\n\nComment: {user}\n\nReply: {reply}\n")
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "tunebot-replies.md").write_text("\n".join(parts), encoding="utf-8")
    return dst


def trained(config: Path, runs: Path, name: str, overrides: list[str], log) -> Path:
    run = runs / name
    if (run / "DONE").exists():
        log(f"reusing {run}")
        return run
    tunelab("train", config, f"output.dir={runs}", f"output.name={name}", "--overwrite", "--quiet", *overrides, log=log)
    return run


def indexed(docs: Path, kb: Path, log) -> Path:
    tunelab("rag", "index", docs, "--dir", kb, "--embedder", "minilm-l6", log=log)  # incremental: unchanged = skip
    return kb


def evaluated(run: Path, kb: Path, data: Path, out: Path, cache: Path, k: int, metrics: str, extra: list, log) -> dict:
    tunelab("eval", run, "--base", "--kb", kb.name, "--kb-dir", kb, "-k", k, "--data", data, "--metrics", metrics,
            "--out", out, "--cache", cache, "--json", *extra, log=log)
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    rows = {}
    for m in res["models"]:
        name = NAMES[m["kind"]] + ("+RAG" if m["variant"].startswith("rag:") else "")
        rows[name] = {metric: {x: round(v, 4) if isinstance(v, float) else v for x, v in s.items()}
                      for metric, s in m["metrics"].items()}
    kws = [json.loads(x).get("keywords") for x in data.read_text(encoding="utf-8").splitlines() if x.strip()]
    rag_label = next(m["label"] for m in res["models"] if m["kind"] == "base" and m["variant"])
    hits = [all(w.casefold() in ex["models"][rag_label]["prompt_sent"].casefold() for w in kw)
            for ex, kw in zip(res["examples"], kws) if kw]
    return {"data": str(data), "n_examples": res["n_examples"], "run": str(run), "kb": str(kb), "k": k,
            "retrieved_key_fact": round(sum(hits) / len(hits), 4) if hits else None,  # its keywords in the k passages
            "max_new_tokens": res["models"][0]["max_new_tokens"], "cache": res["cache"],
            "results": dict(sorted(rows.items(), key=lambda kv: ["base", "base+RAG", "SFT", "SFT+RAG"].index(kv[0])))}


def val_losses(run: Path) -> dict:
    """The run's validation loss (on the held-out paraphrases) per epoch, from its metrics.jsonl; the
    base's from its report ("base model evaluated ... (val loss X)" is in report.md's table)."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    out = {f"epoch {r['epoch']}": r["val_loss"] for r in rows if "val_loss" in r}
    for line in (run / "report.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| base |"):
            out = {"base": float(line.split("|")[2]), **out}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/tunelab-kb-vs-sft"))
    ap.add_argument("--only", choices=["knowledge", "style"])
    ap.add_argument("--persona-run", type=Path, help="A finished quickstart run (default: train one into OUT/runs).")
    ap.add_argument("--limit", type=int, help="Keep the first N held-out examples of each set.")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="Knowledge set replies (the style set uses the run's 64).")
    ap.add_argument("-k", type=int, default=2, help="Passages retrieved per question.")
    ap.add_argument("--cache", type=Path, help="tunelab eval's result cache (default OUT/cache).")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for the facts SFT run.")
    args = ap.parse_args()
    out = args.out.resolve()
    cache = (args.cache or out / "cache").resolve()
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    stage = Stages(log)
    summary = {"model": "smollm2-135m-instruct", "embedder": "minilm-l6", "cpu_count": os.cpu_count(),
               "torch_threads_env": os.environ.get("OMP_NUM_THREADS"), "sets": {}}
    if args.only in (None, "knowledge"):
        run = stage("train facts SFT", lambda: trained(KNOW / "sft-facts.yaml", out / "runs", "tolvaris-facts",
                                                       args.overrides, log))
        kb = stage("index facts KB", lambda: indexed(KNOW / "docs", out / "kb-tolvaris", log))
        data = head(KNOW / "heldout.jsonl", out / "data" / "heldout.jsonl", args.limit)
        summary["sets"]["knowledge"] = stage("eval knowledge", lambda: evaluated(
            run, kb, data, out / "knowledge", cache, args.k, "nll,keywords,rouge_l,length",
            ["--max-new-tokens", args.max_new_tokens], log))
        summary["sets"]["knowledge"]["sft_val_loss"] = val_losses(run)
    if args.only in (None, "style"):
        prun = args.persona_run.resolve() if args.persona_run else None
        if prun is None:
            prun = stage("train persona SFT", lambda: trained(ROOT / "examples/configs/quickstart.yaml",
                                                              out / "runs", "quickstart", [], log))
        elif not (prun / "DONE").exists():
            sys.exit(f"--persona-run {prun}: not a finished run")
        kb = stage("index persona KB", lambda: indexed(persona_document(out / "persona-docs"), out / "kb-tunebot", log))
        data = head(TUNEBOT / "validation.jsonl", out / "data" / "tunebot-validation.jsonl", args.limit)
        summary["sets"]["style"] = stage("eval style", lambda: evaluated(
            prun, kb, data, out / "style", cache, args.k, "nll,contains,rouge_l,length",
            ["--contains", SIGNATURE], log))
    summary["stages"] = stage.times
    previous = out / "summary.json"
    if args.only and previous.exists():  # one set re-run: keep the other set's results
        old = json.loads(previous.read_text(encoding="utf-8"))
        summary["sets"] = {**old.get("sets", {}), **summary["sets"]}
        summary["stages"] = {**old.get("stages", {}), **summary["stages"]}
    text = json.dumps(summary, indent=1, ensure_ascii=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
