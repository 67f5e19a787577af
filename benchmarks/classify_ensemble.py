"""A seed ensemble of classify runs on the imbalanced 3-class benchmark (benchmarks/classify_imbalanced.py).

    nice -n 5 .venv/bin/python benchmarks/classify_ensemble.py RUN_DIR [RUN_DIR ...] [--seed 42]

The rule, fixed before any ensemble was scored on test: the members' softmax probabilities are
averaged, p(k|x) = mean_m softmax(z_m(x))_k, and the ensemble's logits are log p; per-class logit
offsets are tuned on the validation split for those logits (tunelab.eval.logit_offsets, as one run
tunes its own) and applied on test. Members are scored with their raw logits (each run's own offsets
are not applied: the ensemble tunes its own). Prints JSON: per member and for the ensemble, validation
and test macro-F1 and per-class F1, raw and with offsets. Data: the same splits as classify_imbalanced.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classify_imbalanced import LABELS, build_splits  # noqa: E402
from sentiment import fetch, read_snippets  # noqa: E402


def scores(logits, y) -> dict:
    from tunelab.eval.classification import classification_metrics

    m = classification_metrics(y, logits.argmax(-1).tolist(), LABELS)
    return {"macro_f1": round(m["macro_f1"], 4), "accuracy": round(m["accuracy"], 4),
            "f1": {x: round(v["f1"], 4) for x, v in m["per_class"].items()}}


def main() -> None:
    import torch

    from tunelab.eval.logit_offsets import tune_offsets
    from tunelab.infer.classify import Classifier
    from tunelab.models.registry import tunelab_home

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--seed", type=int, default=42, help="the data splits' seed")
    a = ap.parse_args()
    splits = build_splits(read_snippets(fetch(tunelab_home() / "datasets" / "vader")), a.seed)
    y = {s: [LABELS.index(r["label"]) for r in splits[s]] for s in ("validation", "test")}
    probs, report = {"validation": [], "test": []}, {"members": {}, "cpu": _cpu()}
    for run in a.runs:
        clf = Classifier.from_run(run, offsets=False)
        mem = {}
        for s in probs:
            z = clf.logits([r["text"] for r in splits[s]]).float()
            probs[s].append(torch.softmax(z, -1))
            mem[s] = scores(z, y[s])
        report["members"][Path(run).name] = mem
        print(Path(run).name, json.dumps(mem), file=sys.stderr, flush=True)
    logp = {s: torch.stack(p).mean(0).clamp_min(1e-12).log() for s, p in probs.items()}
    fit = tune_offsets(logp["validation"], y["validation"], LABELS)
    b = torch.tensor(fit["offsets"])
    report["ensemble"] = {"members": len(a.runs), "offsets": dict(zip(LABELS, fit["offsets"])),
                          "validation": {"raw": scores(logp["validation"], y["validation"]),
                                         "offsets": scores(logp["validation"] + b, y["validation"])},
                          "test": {"raw": scores(logp["test"], y["test"]),
                                   "offsets": scores(logp["test"] + b, y["test"])}}
    print(json.dumps(report, indent=1))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
