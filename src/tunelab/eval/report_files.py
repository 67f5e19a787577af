"""results.json and report.md of `tunelab eval` (eval/outputs.py writes them and report.html atomically:
a temp file, then a rename); the number formats shared with eval/html_report.py."""

from __future__ import annotations

import math
import os
from pathlib import Path

PERCENT = {"exact", "contains", "regex", "keywords", "rouge_l", "chrf", "accuracy", "macro_f1", "win", "tie", "loss"}
NAMES = {"nll": "reply NLL", "perplexity": "perplexity", "exact": "exact match", "contains": "contains",
         "regex": "regex match", "keywords": "keywords", "rouge_l": "ROUGE-L", "chrf": "chrF", "length": "length (words)",
         "accuracy": "accuracy", "macro_f1": "macro-F1"}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _clean(obj):
    """NaN and infinities become null: results.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def fmt(metric: str, v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if metric in PERCENT:
        return f"{100 * v:.1f}%"
    return f"{v:.1f}" if metric == "length" else f"{v:.4f}" if metric == "nll" else f"{v:.2f}"


def cell(metric: str, s: dict) -> str:
    return f"{fmt(metric, s.get('value'))} [{fmt(metric, s.get('low'))}, {fmt(metric, s.get('high'))}]"


def markdown(results: dict) -> str:
    metrics = results["metrics"]
    lines = ["# Evaluation", "", f"- data: `{results['data']}` ({results['n_examples']} examples)"]
    st = results.get("settings", {})
    if "max_new_tokens" in st:
        mnt = st["max_new_tokens"]
        lines.append(f"- greedy replies, at most {'/'.join(map(str, mnt)) if isinstance(mnt, list) else mnt} new tokens"
                     + (f"; contains `{st['contains']}`" if st.get("contains") else "")
                     + (f"; regex `{st['regex']}`" if st.get("regex") else ""))
    lines += ["- intervals: bootstrap 95% over examples "
              f"({st.get('bootstrap', {}).get('resamples', '?')} resamples, seeded)", "",
              "| model | " + " | ".join(NAMES.get(m, m) for m in metrics) + " |",
              "|---|" + "---|" * len(metrics)]
    for m in results["models"]:
        lines.append(f"| {m['label']} | " + " | ".join(cell(k, m["metrics"][k]) for k in metrics) + " |")
    judge = results.get("judge")
    if judge:
        lines += ["", f"## Judge ({judge['model']}): {judge['first']} vs each, both orders asked", "",
                  "| vs | win | tie | loss |", "|---|---|---|---|"]
        for other, res in judge["pairs"].items():
            r = res["rates"]
            lines.append(f"| {other} | " + " | ".join(cell(k, r[k]) for k in ("win", "tie", "loss")) + " |")
    for m in results["models"]:
        if "confusion" in m:
            lines += ["", f"## Confusion matrix: {m['label']} (rows = truth)", "",
                      "| | " + " | ".join(m["labels"]) + " |", "|---|" + "---|" * len(m["labels"])]
            lines += [f"| {lab} | " + " | ".join(map(str, row)) + " |" for lab, row in zip(m["labels"], m["confusion"])]
    lines += ["", "Per-example replies: results.json and report.html.", ""]
    return "\n".join(lines)
