"""Classify runs on a classification file (text + label): accuracy, macro-F1 and the confusion matrix
per run (eval/classification.py), with bootstrap 95% intervals over examples; the same results shape
as compare.evaluate, so the reports read both. A run's tuned logit offsets (offsets.json) are applied
unless `offsets` is False, as `tunelab predict` does (infer/classify.py)."""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.eval import bootstrap
from tunelab.eval.classification import classification_metrics


def evaluate_classify(runs: list[str | Path], data: str | Path, batch_size: int = 32, log=None,
                      offsets: bool = True) -> dict:
    from tunelab.data.formats import to_examples
    from tunelab.data.sources import read_records
    from tunelab.infer.classify_ensemble import load_classifier

    records = read_records(data, "--data")
    models, per_model, examples = [], {}, None
    for run in runs:
        if log:
            log(f"loading {Path(run).name}")
        clf = load_classifier(run, offsets=offsets)
        try:
            examples = to_examples(records, "auto", "classify", labels=clf.labels)
        except TunelabError as e:
            raise TunelabError(f"not a classification file for {Path(run).name} ({e.message})",
                               where=e.where or str(data), hint="a classify run needs records with text and "
                                                                "one of its labels") from None
        preds = [p["label"] for p in clf.predict([ex.text for ex in examples], batch_size)]
        truth = [clf.labels.index(ex.label) for ex in examples]
        pred = [clf.labels.index(p) for p in preds]
        m = classification_metrics(truth, pred, clf.labels)

        def macro(idx, truth=truth, pred=pred, labels=clf.labels):
            return classification_metrics([truth[i] for i in idx], [pred[i] for i in idx], labels)["macro_f1"]

        lo, hi = bootstrap.interval_of(macro, len(truth))
        metrics = {"accuracy": bootstrap.summary([float(t == p) for t, p in zip(truth, pred)]),
                   "macro_f1": {"value": m["macro_f1"], "low": lo, "high": hi, "n": len(truth)}}
        label = Path(run).name
        models.append({"label": label, "source": str(run), "kind": "run", "variant": "", "metrics": metrics,
                       "labels": clf.labels, "confusion": m["confusion"], "per_class": m["per_class"]})
        per_model[label] = preds
    return {
        "data": str(data), "n_examples": len(examples), "metrics": ["accuracy", "macro_f1"], "task": "classify",
        "settings": {"bootstrap": {"resamples": bootstrap.RESAMPLES, "seed": bootstrap.SEED, "level": 0.95}},
        "models": models,
        "examples": [{"where": ex.where, "prompt": ex.text, "reference": ex.label,
                      "models": {lab: {"reply": preds[i], "scores": {"accuracy": float(preds[i] == ex.label)}}
                                 for lab, preds in per_model.items()}} for i, ex in enumerate(examples)],
    }
