"""`tunelab eval`'s files in OUT: results.json, report.md and report.html, each written atomically
(a temp file in the same folder, then a rename: an interrupted run leaves the previous file or none)."""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.eval.html_report import html
from tunelab.eval.report_files import _clean, markdown, write_atomic


def write_outputs(results: dict, out: Path) -> dict[str, Path]:
    out = Path(out)
    results = _clean(results)
    paths = {"json": out / "results.json", "md": out / "report.md", "html": out / "report.html"}
    write_atomic(paths["json"], json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    write_atomic(paths["md"], markdown(results))
    write_atomic(paths["html"], html(results))
    return paths
