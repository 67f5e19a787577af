"""A seed ensemble of classify runs on the imbalanced 3-class benchmark (benchmarks/classify_imbalanced.py).

    nice -n 5 .venv/bin/python benchmarks/classify_ensemble.py RUN_DIR [RUN_DIR ...] --out ENSEMBLE_DIR [--seed 42]

The rule, fixed before any ensemble was scored on test: `tunelab ensemble` (eval/classify_ensemble.py) on the
validation split (the members' mean softmax probability, log of it as the logits, per-class offsets tuned
there for macro-F1; the members' own offsets are not applied), then the ensemble folder is scored on test as
`tunelab predict` reads it. Prints JSON: per member (raw logits) and for the ensemble (raw and with its
offsets), validation and test macro-F1, accuracy and per-class F1. Data: the same splits as
classify_imbalanced.py (`--seed`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classify_imbalanced import LABELS, build_splits, write_jsonl  # noqa: E402
from sentiment import fetch, read_snippets  # noqa: E402


def main() -> None:
    from tunelab.eval.classify_ensemble import build_ensemble, scores
    from tunelab.infer.classify import Classifier
    from tunelab.infer.classify_ensemble import load_classifier
    from tunelab.models.registry import tunelab_home

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True, help="where the ensemble folder goes (replaced)")
    ap.add_argument("--seed", type=int, default=42, help="the data splits' seed")
    a = ap.parse_args()
    home = tunelab_home() / "datasets"
    splits = build_splits(read_snippets(fetch(home / "vader")), a.seed)
    val = write_jsonl(home / "movie-snippets-3class" / f"seed{a.seed}" / "validation.jsonl", splits["validation"])
    report = build_ensemble(a.runs, a.out, data=val, overwrite=True, log=lambda m: print(m, file=sys.stderr))
    texts = [r["text"] for r in splits["test"]]
    y = [LABELS.index(r["label"]) for r in splits["test"]]
    test = {Path(r).name: scores(Classifier.from_run(r, offsets=False).logits(texts), y, LABELS) for r in a.runs}
    clf = load_classifier(a.out)
    ens = clf.logits(texts)  # raw: predict adds clf.offsets
    test["ensemble"] = scores(ens, y, LABELS)
    if clf.offsets is not None:
        test["ensemble + offsets"] = scores(ens + clf.offsets, y, LABELS)
    print(json.dumps({"cpu": _cpu(), "validation": report, "test": test}, indent=1))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
