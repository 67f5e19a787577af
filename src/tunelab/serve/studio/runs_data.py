"""What the Studio reads from a tenant's runs folder (state.tenant_runs): the list and one run's curves.

    run_summary(dir)  name, status (finished: DONE exists | incomplete), task, model, method,
                      final validation loss (the last metrics.jsonl row with `val_loss`), steps, mtime
    read_metrics(dir) {"train": [[step, loss], ...], "valid": [[step, val_loss], ...], "base": [[0, loss]] | [],
                       "axis": "loss", "labels": [the three series' legend names]}

What a chart draws varies by task in one table, CURVES (a task not in it draws LOSS): a grpo run draws its
sampled `reward` per step, the held-out pass's greedy `heldout/reward` (train/grpo_heldout.py), and as the
base the pass before the first step (its step-0 row), on a "reward" axis.

The base model's validation loss (measured before the first step, the improvement's reference) is in
the run's report.md, the `| base | <loss> | ... |` row of its "Validation loss" (sft) or "Held-out
perplexity" (pretrain) table (train/reports.py): `base_valid_loss` reads it, and the curves show it at step 0.

metrics.jsonl rows: training rows carry `loss` (the jobs API's events call it train_loss), evaluation
rows `val_loss`. A summary reads three lines of config.yaml (summary_fields) and the tail of metrics.jsonl, and is
cached by (path, mtime_ns of config.yaml, of metrics.jsonl, DONE): a run that changes is read again,
an unchanged one is not (100 runs: docs/studio.md has the render times).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # PyYAML without libyaml
    _Loader = yaml.SafeLoader

_cache: dict[str, tuple[tuple, dict]] = {}


def _mtime(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return 0


def read_config(run: Path) -> dict:
    try:
        cfg = yaml.load((run / "config.yaml").read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, yaml.YAMLError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _rows(run: Path):
    try:
        text = (run / "metrics.jsonl").read_text(encoding="utf-8")
    except OSError:
        return
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line being written right now
        if isinstance(row, dict):
            yield row


@dataclass(frozen=True)
class Curves:
    """A chart's series: the metrics.jsonl keys of the training and the evaluation rows, the y axis, the
    legend names (training, evaluation, base), and whether the base is the evaluation's step-0 row (else
    report.md's base validation loss)."""

    train: str
    valid: str
    axis: str
    labels: tuple[str, str, str]
    base_at_step_0: bool = False


LOSS = Curves("loss", "val_loss", "loss", ("train", "validation", "base model (validation, step 0)"))
CURVES = {"grpo": Curves("reward", "heldout/reward", "reward",
                         ("reward (sampled)", "held-out reward (greedy)", "base model (held-out, step 0)"), True)}


def read_metrics(run: Path) -> dict:
    """The curves of `run` (module docstring); a row without a number is skipped."""
    c = CURVES.get(read_config(run).get("task"), LOSS)
    train, valid = [], []
    for row in _rows(run):
        step = row.get("step")
        if not isinstance(step, (int, float)):
            continue
        if isinstance(row.get(c.train), (int, float)):
            train.append([step, row[c.train]])
        if isinstance(row.get(c.valid), (int, float)):
            valid.append([step, row[c.valid]])
    if c.base_at_step_0:
        base = [p for p in valid if p[0] == 0][:1]
        valid = [p for p in valid if p[0] != 0]
    else:
        loss = base_valid_loss(run)
        base = [] if loss is None else [[0, loss]]
    return {"train": train, "valid": valid, "base": base, "axis": c.axis, "labels": list(c.labels)}


_BASE_SECTIONS = ("## Validation loss", "## Held-out perplexity")


def base_valid_loss(run: Path) -> float | None:
    """The base model's validation loss of `run` from its report.md (the module docstring), or None."""
    try:
        text = (run / "report.md").read_text(encoding="utf-8")
    except OSError:
        return None
    section = False
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.startswith(_BASE_SECTIONS)
        elif section and line.startswith("| base |"):
            try:
                value = float(line.split("|")[2])
            except (IndexError, ValueError):
                return None
            return value if math.isfinite(value) else None
    return None


def _last_valid(run: Path, tail: int = 16384) -> tuple[float | None, int | None]:
    """(the last val_loss, the last step) from the end of metrics.jsonl: its last `tail` bytes, the
    whole file only when no evaluation row is in them (a run trained on after its last evaluation)."""
    path = run / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - tail))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None, None
    if size > tail:
        lines = lines[1:]  # the first line may be cut
    last, steps = None, None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict):
            continue
        if steps is None and isinstance(row.get("step"), int):
            steps = row["step"]
        if isinstance(row.get("val_loss"), (int, float)):
            last = row["val_loss"]
            break
    if last is None and size > tail:
        for row in _rows(run):
            if isinstance(row.get("val_loss"), (int, float)):
                last = row["val_loss"]
    return last, steps


_SUMMARY_KEYS = {("task",), ("model", "name"), ("method", "name")}


def summary_fields(text: str) -> dict | None:
    """task, model.name and method.name read line by line from the config.yaml tunelab writes (plain
    `key: value` lines, two-space indents): 100 runs in a few ms where a YAML parse of each takes
    seconds on a loaded CPU. None when a value is not a plain scalar: then the caller parses the YAML."""
    out, section = {}, None
    for line in text.splitlines():
        if not line or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, value = line.strip().partition(":")
        if not sep:
            continue
        path = (key,) if indent == 0 else (section, key) if indent == 2 else None
        if indent == 0:
            section = key
        if path in _SUMMARY_KEYS:
            value = value.strip()
            if value[:1] in "'\"[{&*!|>" or " #" in value:
                return None
            out[".".join(path)] = value or None
    return out


def model_label(name) -> str:
    """A model as a person names it: an alias or hub id as is, a local folder by its last part."""
    s = str(name or "?")
    return Path(s).name if s.startswith("/") else s


def run_summary(run: Path) -> dict:
    key = (_mtime(run / "config.yaml"), _mtime(run / "metrics.jsonl"), (run / "DONE").exists())
    hit = _cache.get(str(run))
    if hit and hit[0] == key:
        return hit[1]
    try:
        fields = summary_fields((run / "config.yaml").read_text(encoding="utf-8"))
    except OSError:
        fields = {}
    if fields is None:
        cfg = read_config(run)
        fields = {"task": cfg.get("task"), "model.name": (cfg.get("model") or {}).get("name"),
                  "method.name": (cfg.get("method") or {}).get("name")}
    loss, steps = _last_valid(run)
    out = {"name": run.name, "status": "finished" if key[2] else "incomplete", "task": fields.get("task") or "sft",
           "model": model_label(fields.get("model.name")), "method": fields.get("method.name") or "?",
           "final_valid_loss": loss, "steps": steps, "mtime": max(key[0], key[1]) // 10**9}
    _cache[str(run)] = (key, out)
    return out


def list_runs(root: Path) -> list[dict]:
    """Every run folder under `root` (config.yaml; names starting with '.' are other tenants'), newest first."""
    if not root.is_dir():
        return []
    runs = [run_summary(p) for p in root.iterdir() if not p.name.startswith(".") and (p / "config.yaml").is_file()]
    return sorted(runs, key=lambda r: (-r["mtime"], r["name"]))
