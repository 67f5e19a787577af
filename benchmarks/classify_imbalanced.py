"""Imbalanced 3-class sentiment on real movie-review snippets: which classify options see the small class.

    nice -n 5 .venv/bin/python benchmarks/classify_imbalanced.py [--options baseline,weights,...]
        [--model minilm-l6] [--epochs 6] [--lr 1e-3] [--batch-size 16] [--seed 42] [--out results.json]

Data (see /work/shared/DATA.md; never copied into the repository): the Pang & Lee sentences scored by
humans (mean score -4..+4), from the vaderSentiment 3.3.2 sdist (benchmarks/sentiment.py fetches it
into $TUNELAB_HOME/datasets/vader/). Banded into 3 classes by score:

    negative: score < -1      neutral: -1 <= score <= 1      positive: score > 1
    (10,605 rows -> 4,484 negative, 1,582 neutral, 4,539 positive)

then, seeded (random.Random(seed) shuffles each class, the first rows are taken), subsampled to the
class shares SHARES (positive 62%, negative 30%, neutral 8%: the smallest class under 10%) in three
disjoint splits: train 600, validation 200, test 500 (per class, positive/negative/neutral: train
372/180/48, validation 124/60/16, test 310/150/40; positive takes the rounding remainder).

Each option trains one classify run (LoRA r 16 on every linear layer of the last 3 blocks, `--layers`;
the head trained whole; lr 1e-3, 4 epochs, batch 16; the same seed and data) and is
scored on the test split with the raw logits and with the run's tuned logit offsets (offsets.json).
Prints JSON: per option, test accuracy, macro-F1 and per-class F1, with and without offsets, the
validation figures and the training time. Measured results and the defaults they chose: docs/classify.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sentiment import fetch, read_snippets  # noqa: E402  (the same fetch and parse as the binary benchmark)

LABELS = ["negative", "neutral", "positive"]
SHARES = {"positive": 0.62, "negative": 0.30, "neutral": 0.08}
SIZES = {"train": 600, "validation": 200, "test": 500}

# option -> (config overrides on top of the plain run): classify.* and train.metric_for_best
PLAIN = {"class_weights": "none", "sampler": "shuffle", "metric_for_best": "loss"}
OPTIONS = {
    "baseline": {},
    "weights+best_macro_f1": {"class_weights": "auto", "metric_for_best": "macro_f1"},
    "weights": {"class_weights": "auto"},
    "best_macro_f1": {"metric_for_best": "macro_f1"},
    "sampler": {"sampler": "balanced"},
    "sampler+best_macro_f1": {"sampler": "balanced", "metric_for_best": "macro_f1"},
    "defaults": None,  # the shipped classify defaults, nothing overridden
}


def band(score: float) -> str:
    return "negative" if score < -1 else "positive" if score > 1 else "neutral"


def build_splits(rows: list[tuple[float, str]], seed: int) -> dict[str, list[dict]]:
    """{split: [{"text", "label"}]}: per class shuffled with Random(seed), cut into the splits' shares."""
    by_class: dict[str, list[str]] = {x: [] for x in LABELS}
    for score, text in rows:
        by_class[band(score)].append(text)
    rng = random.Random(seed)
    for x in LABELS:
        rng.shuffle(by_class[x])
    splits, taken = {}, {x: 0 for x in LABELS}
    for split, size in SIZES.items():
        counts = {x: round(size * SHARES[x]) for x in ("negative", "neutral")}
        counts["positive"] = size - sum(counts.values())
        part = []
        for x, k in counts.items():
            part += [{"text": t, "label": x} for t in by_class[x][taken[x]:taken[x] + k]]
            taken[x] += k
        random.Random(seed + 1).shuffle(part)
        splits[split] = part
    return splits


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def run_option(name: str, over: dict | None, files: dict[str, Path], test: list[dict], a) -> dict:
    from tunelab.config import from_dict
    from tunelab.train.recipes.classify import run_classify

    o = None if over is None else {**PLAIN, **over}
    classify = {"labels": LABELS} | ({} if o is None else {"class_weights": o["class_weights"],
                                                              "sampler": o["sampler"], "offsets": True})
    train = {"lr": a.lr, "epochs": a.epochs, "batch_size": a.batch_size, "warmup_ratio": 0.1,
             "scheduler": "linear", "seed": a.seed, "logging_steps": 10, "threads": a.threads}
    if o is not None:
        train["metric_for_best"] = o["metric_for_best"]
    cfg = from_dict({
        "task": "classify", "model": {"name": a.model},
        "data": {"train": str(files["train"]), "validation": str(files["validation"]), "max_length": a.max_length},
        "classify": classify, "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.1, "layers": a.layers},
        "train": train,
        "output": {"dir": str(run_dir_of(name, a).parent), "name": run_dir_of(name, a).name, "overwrite": True},
    })
    t0 = time.perf_counter()
    out = run_classify(cfg, quiet=True)
    res = {"config": {"classify": cfg.classify.model_dump(exclude={"labels", "metric"}),
                      "metric_for_best": cfg.train.metric_for_best},
           "train_seconds": round(time.perf_counter() - t0, 1), "best_epoch": out.result.best_epoch,
           "val_macro_f1": round(out.after["macro_f1"], 4)}
    return {**res, **score_run(out.run_dir, test)}


def run_dir_of(name: str, a) -> Path:
    from tunelab.models.registry import tunelab_home

    other = f"-l{a.layers}-e{a.epochs:g}" if (a.layers, a.epochs) != (3, 4) else ""  # not the default protocol
    return tunelab_home() / "bench-runs" / f"imb-{a.model}-{name}{other}"


def score_run(run_dir: Path, test: list[dict]) -> dict:
    """Test accuracy / macro-F1 / per-class F1 from the raw logits and with the run's offsets.json."""
    import json as _json

    from tunelab.eval.classification import classification_metrics
    from tunelab.infer.classify import Classifier

    clf = Classifier.from_run(run_dir)
    z = clf.logits([r["text"] for r in test])
    y = [LABELS.index(r["label"]) for r in test]
    res = {}
    for key, b in (("raw", None), ("offsets", clf.offsets)):
        m = classification_metrics(y, (z if b is None else z + b).argmax(-1).tolist(), LABELS)
        res[key] = {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
                    "f1": {x: round(v["f1"], 4) for x, v in m["per_class"].items()}}
    saved = Path(run_dir) / "offsets.json"
    if saved.exists():
        o = _json.loads(saved.read_text())
        res["offset_values"] = dict(zip(LABELS, o["offsets"]))
        res["val_macro_f1_offsets"] = round(o["macro_f1_after"], 4)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--options", default=",".join(OPTIONS), help=f"comma-separated, of: {', '.join(OPTIONS)}")
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--layers", type=int, default=3, help="LoRA on the last N blocks (method.layers)")
    ap.add_argument("--threads", type=int, default=1, help="train.threads (1: no oversubscription on a shared CPU)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--rescore", action="store_true", help="score the options' finished runs again, no training")
    a = ap.parse_args()
    names = [x.strip() for x in a.options.split(",") if x.strip()]
    unknown = [x for x in names if x not in OPTIONS]
    if unknown:
        raise SystemExit(f"unknown option {unknown[0]}; choose from: {', '.join(OPTIONS)}")

    from tunelab.cli.main import quiet_libraries
    from tunelab.models.registry import tunelab_home

    quiet_libraries()
    home = tunelab_home() / "datasets"
    splits = build_splits(read_snippets(fetch(home / "vader")), a.seed)
    folder = home / "movie-snippets-3class" / f"seed{a.seed}"
    files = {s: write_jsonl(folder / f"{s}.jsonl", recs) for s, recs in splits.items()}
    report = {"benchmark": "movie-review snippets, 3 classes by score band (< -1, -1..1, > 1), neutral 8%",
              "model": a.model, "epochs": a.epochs, "lr": a.lr, "batch_size": a.batch_size, "layers": a.layers,
              "sizes": {s: {x: sum(r["label"] == x for r in recs) for x in LABELS} for s, recs in splits.items()},
              "options": {}}
    for name in names:
        report["options"][name] = (score_run(run_dir_of(name, a), splits["test"]) if a.rescore
                                   else run_option(name, OPTIONS[name], files, splits["test"], a))
        print(json.dumps({name: report["options"][name]}), file=sys.stderr, flush=True)
        if a.out:
            a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
