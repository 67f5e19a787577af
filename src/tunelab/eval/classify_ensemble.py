"""Build a seed ensemble of finished classify runs: `build_ensemble(runs, out)` (`tunelab ensemble`).

The members are scored on a validation file (default: the first member's `data.validation`) with
their raw logits; the ensemble's logits are the log of their mean probability
(infer/classify_ensemble.py); per-class logit offsets are tuned on the same file for macro-F1
(eval/logit_offsets.py, as one run tunes its own) unless `offsets` is False. The folder is written
whole under a temporary name and renamed into place, so an interrupted build leaves nothing that
looks finished; an existing `out` is replaced only with `overwrite`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.eval.classification import classification_metrics
from tunelab.eval.logit_offsets import FILE as OFFSETS_FILE, tune_offsets
from tunelab.infer.classify_ensemble import ENSEMBLE_FILE, is_ensemble, mean_probability_logits
from tunelab.runs.kinds import require_run
from tunelab.runs.rundir import CONFIG, DONE

MIN_MEMBERS = 2


def _members(runs: list[str | Path]) -> tuple[list[Path], list[str], list]:
    """(resolved run folders, their common labels, their Run objects); TunelabError naming the run."""
    if len(runs) < MIN_MEMBERS:
        raise TunelabError(f"an ensemble needs at least {MIN_MEMBERS} runs, got {len(runs)}", where="RUNS",
                           hint="train the same config with other train.seed values and pass every run")
    paths, labels, found = [], None, []
    for run in runs:
        if is_ensemble(run):
            raise TunelabError(f"{run} is an ensemble", where="RUNS", hint="pass its member runs instead")
        rd, _ = require_run(run, ("classify",), "ensemble")
        mine = rd.labels
        if labels is not None and mine != labels:
            raise TunelabError(f"{run} has labels {mine}, the first run {labels}", where="RUNS",
                               hint="an ensemble's runs must be trained on the same labels, in the same order")
        labels = mine
        paths.append(Path(run).resolve())
        found.append(rd)
    if len(set(paths)) != len(paths):
        raise TunelabError("the same run is given twice", where="RUNS", hint="pass each run once")
    return paths, labels, found


def _validation_file(first_run, data: str | Path | None) -> Path:
    if data is not None:
        return Path(data)
    cfg = first_run.config
    val = cfg.data.validation
    if not val:
        raise TunelabError(f"{first_run.path} has no data.validation to tune the ensemble on", where="--data",
                           hint="pass --data val.jsonl (records with text and label)")
    return cfg.input_base(val, "data.validation") / val  # a relative path is read as training read it


def scores(logits, y: list[int], labels: list[str]) -> dict:
    """macro-F1, accuracy and per-class F1 (rounded to 4 places) of argmax(logits) against y."""
    m = classification_metrics(y, logits.argmax(-1).tolist(), labels)
    return {"macro_f1": round(m["macro_f1"], 4), "accuracy": round(m["accuracy"], 4),
            "f1": {x: round(v["f1"], 4) for x, v in m["per_class"].items()}}


def build_ensemble(runs: list[str | Path], out: str | Path, *, data: str | Path | None = None,
                   offsets: bool = True, overwrite: bool = False, batch_size: int = 32, log=None) -> dict:
    """Write the ensemble folder `out` (infer/classify_ensemble.py) and return its report: per member and
    for the ensemble, validation macro-F1, accuracy and per-class F1 (raw; the ensemble also with offsets)."""
    import torch

    from tunelab.data.formats import to_examples
    from tunelab.data.sources import read_records
    from tunelab.infer.classify import Classifier

    out = Path(out)
    paths, labels, found = _members(runs)
    if out.resolve() in paths:
        raise TunelabError(f"{out} is one of the ensemble's runs", where="--out", hint="write the ensemble elsewhere")
    if out.exists() and not overwrite:
        raise TunelabError(f"{out} already exists", where="--out", hint="choose another --out, or pass --overwrite")
    val = _validation_file(found[0], data)
    examples = to_examples(read_records(val, "--data"), "auto", "classify", labels=labels)
    texts, y = [ex.text for ex in examples], [labels.index(ex.label) for ex in examples]
    report: dict = {"validation": str(val), "n_examples": len(y), "labels": labels, "members": {}}
    member_logits = []
    for p in paths:
        if log:
            log(f"scoring {p.name} on {len(texts)} validation examples")
        z = Classifier.from_run(p, offsets=False).logits(texts, batch_size)
        member_logits.append(z)
        report["members"][str(p)] = scores(z, y, labels)
    z = mean_probability_logits(member_logits)
    ens = {"raw": scores(z, y, labels)}
    tuned = None
    if offsets:
        tuned = tune_offsets(z, y, labels)
        ens["offsets"] = scores(z + torch.tensor(tuned["offsets"]), y, labels)
        ens["offset_values"] = dict(zip(labels, tuned["offsets"]))
    report["ensemble"] = ens
    _write(out, paths, labels, found[0], tuned, report, overwrite)
    return report


def _write(out: Path, paths: list[Path], labels: list[str], first, tuned: dict | None, report: dict,
           overwrite: bool) -> None:
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shutil.copyfile(first.config_path, tmp / CONFIG)
        shutil.copyfile(first.labels_path, tmp / first.labels_path.name)
        (tmp / ENSEMBLE_FILE).write_text(json.dumps({"members": [str(p) for p in paths], "labels": labels},
                                                    indent=2) + "\n", encoding="utf-8")
        if tuned is not None:
            (tmp / OFFSETS_FILE).write_text(json.dumps({"labels": labels, **tuned}, indent=2) + "\n",
                                            encoding="utf-8")
        (tmp / "report.md").write_text(report_markdown(report), encoding="utf-8")
        (tmp / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n", encoding="utf-8")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists() and overwrite:
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report_markdown(report: dict) -> str:
    labels = report["labels"]
    head = "| model | macro-F1 | accuracy | " + " | ".join(f"F1 {x}" for x in labels) + " |"
    lines = [f"# Ensemble of {len(report['members'])} classify runs", "",
             f"Validation: `{report['validation']}` ({report['n_examples']} examples). Ensemble logits: log of the "
             "members' mean probability (raw member logits).", "", head, "|" + "---|" * (3 + len(labels))]

    def row(name: str, s: dict) -> str:
        return (f"| {name} | {s['macro_f1']:.4f} | {s['accuracy']:.4f} | "
                + " | ".join(f"{s['f1'][x]:.4f}" for x in labels) + " |")

    lines += [row(Path(p).name, s) for p, s in report["members"].items()]
    lines.append(row("**ensemble**", report["ensemble"]["raw"]))
    if "offsets" in report["ensemble"]:
        vals = ", ".join(f"{k} {v:+.1f}" for k, v in report["ensemble"]["offset_values"].items())
        lines.append(row(f"**ensemble + offsets** ({vals})", report["ensemble"]["offsets"]))
    return "\n".join(lines) + "\n"
