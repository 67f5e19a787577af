"""`tunelab predict RUN --text "..."` or `--file in.jsonl --out preds.jsonl`: a classify run's labels.
`tunelab ensemble RUN RUN ... --out DIR`: several classify runs averaged into one (eval/classify_ensemble.py).

Text mode prints one line per text: the label, then every label's probability.
A run with offsets.json (classify.offsets) predicts argmax_k (z_k + b_k), probabilities softmax(z + b);
`--no-offsets` uses the raw logits z (infer/classify.py).
File mode reads .jsonl/.json/.csv/.tsv records, classifies `--field` (default `text`) in batches,
and writes each record with `prediction` and `probabilities` added, as JSONL, atomically
(a `.tmp` file renamed at the end: an interrupted run leaves no half-written output).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from tunelab.cli.app import app
from tunelab.errors import TunelabError


def _texts(records, field: str) -> list[str]:
    out = []
    for rec in records:
        val = rec.data.get(field)
        if not isinstance(val, str):
            hint = f"the record has: {', '.join(sorted(map(str, rec.data))) or 'no fields'}; choose one with --field"
            raise TunelabError(f"missing text field '{field}'" if val is None else f"field '{field}' is not a string",
                               where=rec.where, hint=hint)
        out.append(val)
    return out


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


@app.command("predict")
def predict_cmd(
    run: Path = typer.Argument(..., help="A finished classify run directory (runs/<name>), or an ensemble's."),
    text: list[str] = typer.Option(None, "--text", "-t", help="A text to classify (repeatable)."),
    file: Path = typer.Option(None, "--file", "-f", help="Records to classify (.jsonl, .json, .csv, .tsv)."),
    out: Path = typer.Option(None, "--out", "-o", help="Where --file predictions go (JSONL)."),
    field: str = typer.Option("text", "--field", help="The record field holding the text (--file)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    offsets: bool = typer.Option(True, "--offsets/--no-offsets",
                                 help="Add the run's tuned per-class logit offsets (offsets.json) before the argmax."),
) -> None:
    """Classify texts with a model trained by `task: classify`."""
    from tunelab.infer.classify_ensemble import load_classifier
    from tunelab.runs.kinds import require_run

    require_run(run, ("classify",), "predict")
    if not text and file is None:
        raise TunelabError("nothing to classify", where="--text", hint='pass --text "..." or --file in.jsonl --out preds.jsonl')
    if file is not None and out is None:
        raise TunelabError("--file needs --out", where="--out", hint="e.g. --out preds.jsonl")
    records = None
    if file is not None:
        from tunelab.data.sources import read_records

        records = read_records(file, "--file")
        texts_in = _texts(records, field)
    clf = load_classifier(run, offsets=offsets)
    for t, p in zip(text or [], clf.predict(list(text or []), batch_size)):
        probs = "  ".join(f"{k}={v:.3f}" for k, v in p["probs"].items())
        print(f"{p['label']}\t{probs}\t{t}")
    if records is not None:
        preds = clf.predict(texts_in, batch_size)
        rows = [{**rec.data, "prediction": p["label"], "probabilities": p["probs"]} for rec, p in zip(records, preds)]
        write_jsonl_atomic(out, rows)
        print(f"{len(rows)} predictions written to {out}")


@app.command("ensemble")
def ensemble_cmd(
    runs: list[Path] = typer.Argument(..., help="Two or more finished classify runs with the same labels."),
    out: Path = typer.Option(..., "--out", "-o", help="The ensemble's folder (runs/<name>), read by predict and eval."),
    data: Path = typer.Option(None, "--data", help="Validation records to tune on (default: the first run's "
                                                   "data.validation)."),
    offsets: bool = typer.Option(True, "--offsets/--no-offsets",
                                 help="Tune per-class logit offsets for macro-F1 on the validation records."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
) -> None:
    """Average classify runs (e.g. one config trained with several train.seed values) into one classifier."""
    from tunelab.eval.classify_ensemble import build_ensemble

    report = build_ensemble(runs, out, data=data, offsets=offsets, overwrite=overwrite, batch_size=batch_size,
                            log=lambda m: print(m, flush=True))
    for name, s in report["members"].items():
        print(f"{Path(name).name}\tvalidation macro-F1 {s['macro_f1']:.4f}")
    ens = report["ensemble"]
    print(f"ensemble\tvalidation macro-F1 {ens['raw']['macro_f1']:.4f}"
          + (f", with offsets {ens['offsets']['macro_f1']:.4f}" if "offsets" in ens else ""))
    print(f"ensemble of {len(report['members'])} runs written to {out}")
