"""report.html of `tunelab eval`: one self-contained file (inline CSS, SVG and a few lines of JS; no
network): a bar chart per metric with the 95% interval as a whisker, a histogram of reply lengths per
model, and the per-example replies side by side, with a filter for the rows where the models disagree
(their replies differ, or a pass/fail score does)."""

from __future__ import annotations

import html as _html
import math

from tunelab.eval.report_files import NAMES, PERCENT, cell, fmt

COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d"]
CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#222}h1,h2{font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{border:1px solid #ddd;border-radius:6px;padding:8px}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ddd;padding:4px 6px;vertical-align:top;
text-align:left;white-space:pre-wrap}th{background:#f4f4f4}tr.agree.hide{display:none}.ok{background:#eaf6ea}
.bad{background:#fbeaea}.small{color:#666;font-size:12px}"""
JS = """function f(){var on=document.getElementById('dis').checked;
document.querySelectorAll('tr.agree').forEach(function(r){r.classList.toggle('hide',on)});}"""
BINARY = ("exact", "contains", "regex", "keywords", "accuracy")


def e(s) -> str:
    return _html.escape(str(s), quote=True)


def _num(v) -> float | None:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def bars(metric: str, models: list[dict]) -> str:
    """Horizontal bars, one per model, with the interval as a whisker."""
    vals = [m["metrics"].get(metric, {}) for m in models]
    top = max([_num(v.get("high")) or _num(v.get("value")) or 0 for v in vals] + [1e-9])
    if metric in PERCENT:
        top = max(top, 1.0)
    w, row, left = 360, 22, 130
    h = row * len(models) + 24
    parts = [f'<svg width="{w + left + 10}" height="{h}" role="img"><title>{e(NAMES.get(metric, metric))}</title>']
    for i, (m, v) in enumerate(zip(models, vals)):
        y = 8 + i * row
        x = _num(v.get("value")) or 0
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" font-size="12">{e(m["label"][:20])}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{w * x / top:.1f}" height="{row - 6}" '
                     f'fill="{COLORS[i % len(COLORS)]}"><title>{e(cell(metric, v))}</title></rect>')
        lo, hi = _num(v.get("low")), _num(v.get("high"))
        if lo is not None and hi is not None:
            cy = y + (row - 6) / 2
            parts.append(f'<line x1="{left + w * lo / top:.1f}" x2="{left + w * hi / top:.1f}" y1="{cy}" y2="{cy}" '
                         'stroke="#222" stroke-width="1.5"/>')
        parts.append(f'<text x="{left + 4 + w * x / top:.1f}" y="{y + 13}" font-size="11">{e(fmt(metric, x))}</text>')
    parts.append("</svg>")
    return f'<div class="chart"><b>{e(NAMES.get(metric, metric))}</b><br>{"".join(parts)}</div>'


def histogram(label: str, lengths: list[float], top: float, color: str, bins: int = 12) -> str:
    w, h = 260, 110
    if not lengths:
        return ""
    step = max(top, 1) / bins
    counts = [0] * bins
    for x in lengths:
        counts[min(bins - 1, int(x / step))] += 1
    hi = max(counts) or 1
    bw = w / bins
    rects = "".join(f'<rect x="{i * bw:.1f}" y="{h - 18 - (h - 30) * c / hi:.1f}" width="{bw - 1:.1f}" '
                    f'height="{(h - 30) * c / hi:.1f}" fill="{color}"><title>{i * step:.0f}-{(i + 1) * step:.0f} words: '
                    f'{c}</title></rect>' for i, c in enumerate(counts))
    axis = f'<text x="0" y="{h - 4}" font-size="10">0</text><text x="{w}" y="{h - 4}" font-size="10" ' \
           f'text-anchor="end">{top:.0f} words</text>'
    return f'<div class="chart"><b>{e(label)}</b><br><svg width="{w}" height="{h}">{rects}{axis}</svg></div>'


def _disagree(ex: dict, labels: list[str]) -> bool:
    replies = {" ".join(str(ex["models"][lab].get("reply", "")).split()) for lab in labels}
    if len(replies) > 1:
        return True
    return any(len({ex["models"][lab].get("scores", {}).get(m) for lab in labels}) > 1 for m in BINARY)


def table(results: dict) -> str:
    labels = [m["label"] for m in results["models"]]
    shown = [m for m in BINARY if m in results["metrics"]]
    head = "<tr><th>#</th><th>prompt</th><th>reference</th>" + "".join(f"<th>{e(x)}</th>" for x in labels) + "</tr>"
    rows = []
    for i, ex in enumerate(results["examples"]):
        cls = "dis" if _disagree(ex, labels) else "agree"
        cells = []
        for lab in labels:
            r = ex["models"][lab]
            sc = r.get("scores", {})
            mark = ""
            if shown:
                ok = all(sc.get(m) == 1.0 for m in shown)
                mark = ' class="ok"' if ok else ' class="bad"'
            detail = ", ".join(f"{m} {fmt(m, sc[m])}" for m in sc)
            cells.append(f"<td{mark}>{e(r.get('reply', ''))}<div class=small>{e(detail)}</div></td>")
        rows.append(f'<tr class="{cls}"><td>{i + 1}</td><td>{e(ex["prompt"])}</td><td>{e(ex["reference"])}</td>'
                    + "".join(cells) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def html(results: dict) -> str:
    models = results["models"]
    metrics = results["metrics"]
    summary = ("<table><tr><th>model</th>" + "".join(f"<th>{e(NAMES.get(m, m))}</th>" for m in metrics) + "</tr>"
               + "".join(f"<tr><td>{e(m['label'])}</td>" + "".join(f"<td>{e(cell(k, m['metrics'][k]))}</td>"
                                                                 for k in metrics) + "</tr>" for m in models)
               + "</table>")
    charts = "".join(bars(m, models) for m in metrics)
    lengths = {lab: [ex["models"][lab]["scores"]["length"] for ex in results["examples"]
                     if "length" in ex["models"][lab].get("scores", {})] for lab in (m["label"] for m in models)}
    top = max([x for v in lengths.values() for x in v] + [1])
    hists = "".join(histogram(lab, v, top, COLORS[i % len(COLORS)]) for i, (lab, v) in enumerate(lengths.items()))
    judge = ""
    if results.get("judge"):
        j = results["judge"]
        judge = (f"<h2>Judge: {e(j['first'])} vs each (both orders asked)</h2><table><tr><th>vs</th><th>win</th>"
                 "<th>tie</th><th>loss</th></tr>" + "".join(
                     f"<tr><td>{e(o)}</td>" + "".join(f"<td>{e(cell(k, r['rates'][k]))}</td>"
                                                      for k in ("win", "tie", "loss")) + "</tr>"
                     for o, r in j["pairs"].items()) + "</table>")
    n_dis = sum(_disagree(ex, [m["label"] for m in models]) for ex in results["examples"])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>tunelab eval</title><style>{CSS}</style>"
            f"<script>{JS}</script></head><body><h1>Evaluation</h1>"
            f"<p>{e(results['data'])}: {results['n_examples']} examples; 95% bootstrap intervals in brackets.</p>"
            f"{summary}<h2>Metrics</h2><div class=charts>{charts}</div>"
            + (f"<h2>Reply lengths</h2><div class=charts>{hists}</div>" if hists else "") + judge
            + f"<h2>Examples</h2><label><input type=checkbox id=dis onchange='f()'> only the {n_dis} rows where the "
              f"models disagree</label>{table(results)}</body></html>")
