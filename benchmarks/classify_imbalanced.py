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

The setfit options train `classify.setfit` runs instead (method full; every encoder weight tuned on
`--pairs` positive + `--pairs` negative pairs per example with CosineSimilarityLoss, `--setfit-lr`,
`--setfit-epochs`, batch 16; then a logistic head). A setfit run also reports `head_unweighted`: a head
without class weights refitted on the same tuned encoder (stage one does not depend on class weights).
`frozen` trains nothing: logistic heads (with and without class weights) on the untuned encoder's vectors.
`--train-seed` changes the training seed (pairs, dropout, head init) without changing the data splits.
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
    # classify.setfit runs (method full): the encoder tuned on pairs, then a logistic head
    "setfit": {"class_weights": "none", "setfit": True},
    "setfit+weights": {"class_weights": "auto", "setfit": True},
    "setfit+sampler+weights": {"class_weights": "auto", "sampler": "balanced", "setfit": True},
    "frozen": {"frozen": True},  # no training: logistic heads on the untuned encoder (scored, not saved)
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
    if o is not None and o.get("frozen"):
        return score_frozen(files, test, a)
    setfit = o is not None and o.get("setfit", False)
    classify = {"labels": LABELS} | ({} if o is None else {"class_weights": o["class_weights"],
                                                              "sampler": o["sampler"], "offsets": True})
    train = {"lr": a.lr, "epochs": a.epochs, "batch_size": a.batch_size, "warmup_ratio": 0.1,
             "scheduler": "linear", "seed": a.train_seed, "logging_steps": 10, "threads": a.threads}
    method = {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.1, "layers": a.layers}
    if setfit:
        classify["setfit"] = {"pairs_per_example": a.pairs}
        train |= {"lr": a.setfit_lr, "epochs": a.setfit_epochs}
        method = {"name": "full"}
    if o is not None:
        train["metric_for_best"] = o["metric_for_best"]
    cfg = from_dict({
        "task": "classify", "model": {"name": a.model},
        "data": {"train": str(files["train"]), "validation": str(files["validation"]), "max_length": a.max_length},
        "classify": classify, "method": method,
        "train": train,
        "output": {"dir": str(run_dir_of(name, a).parent), "name": run_dir_of(name, a).name, "overwrite": True},
    })
    t0 = time.perf_counter()
    out = run_classify(cfg, quiet=True)
    res = {"config": {"classify": cfg.classify.model_dump(exclude={"labels", "metric"}),
                      "metric_for_best": cfg.train.metric_for_best, "train_seed": a.train_seed},
           "train_seconds": round(time.perf_counter() - t0, 1), "best_epoch": out.result.best_epoch,
           "val_macro_f1": round(out.after["macro_f1"], 4), "val_f1": per_class_f1(out.after),
           "val_before": {"macro_f1": round(out.before["macro_f1"], 4), "f1": per_class_f1(out.before)}}
    res |= score_run(out.run_dir, test)
    if setfit:
        res["head_unweighted"] = refit_unweighted(out.run_dir, files, test, a)
    return res


def per_class_f1(m: dict) -> dict:
    return {x: round(v["f1"], 4) for x, v in m["per_class"].items()}


def read_split(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def head_scores(encoder, tok, files: dict[str, Path], test: list[dict], a, weights_specs) -> dict:
    """Logistic heads (one per class-weights spec) on `encoder`'s vectors, scored on validation and test."""
    import torch

    from tunelab.eval.classification import classification_metrics
    from tunelab.infer.classify import encode_texts
    from tunelab.runtime.precision import autocast_dtype
    from tunelab.train.class_balance import class_weights
    from tunelab.train.setfit import embed_texts, fit_logistic_head

    amp = autocast_dtype("auto", torch.device("cpu"))
    data = {"train": read_split(files["train"]), "validation": read_split(files["validation"]), "test": test}
    x = {k: embed_texts(encoder, encode_texts(tok, [r["text"] for r in v], a.max_length), tok.pad_token_id, amp=amp)
         for k, v in data.items()}
    y = {k: [LABELS.index(r["label"]) for r in v] for k, v in data.items()}
    out = {}
    for spec in weights_specs:
        head = fit_logistic_head(x["train"], y["train"], len(LABELS), class_weights(spec, LABELS, y["train"]))
        res = {}
        for split in ("validation", "test"):
            with torch.no_grad():
                pred = head(x[split]).argmax(-1).tolist()
            m = classification_metrics(y[split], pred, LABELS)
            res[split] = {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4),
                          "f1": per_class_f1(m)}
        out[f"weights {spec}"] = res
    return out


def refit_unweighted(run_dir: Path, files: dict[str, Path], test: list[dict], a) -> dict:
    """A head without class weights on the run's tuned encoder (embedder/), scored on validation and test."""
    from transformers import AutoTokenizer

    from tunelab.infer.pooled_classifier import PooledHeadClassifier

    model = PooledHeadClassifier.load(run_dir, "cpu")
    tok = AutoTokenizer.from_pretrained(str(Path(run_dir) / "tokenizer"))
    return head_scores(model.encoder, tok, files, test, a, ["none"])["weights none"]


def score_frozen(files: dict[str, Path], test: list[dict], a) -> dict:
    """Logistic heads on the untuned encoder's vectors (no training run), with and without class weights."""
    from tunelab.config import from_dict
    from tunelab.train.recipes.classify_setfit import load_encoder

    cfg = from_dict({"task": "classify", "model": {"name": a.model}, "data": {"train": str(files["train"])},
                     "method": {"name": "full"}, "classify": {"setfit": True}})
    import torch

    torch.set_num_threads(a.threads) if a.threads > 0 else None
    t0 = time.perf_counter()
    encoder, tok = load_encoder(cfg)
    res = head_scores(encoder, tok, files, test, a, ["none", "auto"])
    return {"train_seconds": round(time.perf_counter() - t0, 1), **res}


def run_dir_of(name: str, a) -> Path:
    from tunelab.models.registry import tunelab_home

    if name.startswith("setfit"):  # not the default setfit protocol: say how
        other = f"-p{a.pairs}-e{a.setfit_epochs:g}-lr{a.setfit_lr:g}" if (a.pairs, a.setfit_epochs,
                                                                        a.setfit_lr) != (8, 1, 2e-5) else ""
    else:
        other = f"-l{a.layers}-e{a.epochs:g}" if (a.layers, a.epochs) != (3, 4) else ""  # not the default protocol
    seed = f"-s{a.train_seed}" if a.train_seed != a.seed else ""
    return tunelab_home() / "bench-runs" / f"imb-{a.model}-{name}{other}{seed}"


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
    ap.add_argument("--seed", type=int, default=42, help="the data splits' seed (and the training seed by default)")
    ap.add_argument("--train-seed", type=int, default=None, help="train.seed, without changing the data splits")
    ap.add_argument("--pairs", type=int, default=8, help="setfit options: classify.setfit.pairs_per_example")
    ap.add_argument("--setfit-lr", type=float, default=2e-5, help="setfit options: train.lr of the contrastive stage")
    ap.add_argument("--setfit-epochs", type=float, default=1, help="setfit options: train.epochs over the pairs")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--rescore", action="store_true", help="score the options' finished runs again, no training")
    a = ap.parse_args()
    a.train_seed = a.seed if a.train_seed is None else a.train_seed
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
        report["options"][name] = (score_run(run_dir_of(name, a), splits["test"]) if a.rescore and name != "frozen"
                                   else run_option(name, OPTIONS[name], files, splits["test"], a))
        print(json.dumps({name: report["options"][name]}), file=sys.stderr, flush=True)
        if a.out:
            a.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
