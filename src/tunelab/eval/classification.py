"""Classification metrics, the confusion-matrix plot and the before/after metrics table.

(A classification run's report.md is written by `tunelab.train.reports.write_classify_report`.)

With C[t][p] = number of examples of true class t predicted as class p (rows = truth):

    accuracy      = sum_k C[k][k] / sum C
    precision_k   = C[k][k] / sum_t C[t][k]      (column sum: everything predicted k; 0 when none)
    recall_k      = C[k][k] / sum_p C[k][p]      (row sum: everything truly k; 0 when none)
    f1_k          = 2 P_k R_k / (P_k + R_k)      (0 when P_k + R_k = 0)
    macro_f1      = mean_k f1_k                  (every class counts the same, however rare)

Zero divisions give 0, as `sklearn.metrics.precision_recall_fscore_support(zero_division=0)`.
Example: truth [a, a, b], predicted [a, b, b] -> C = [[1, 1], [0, 1]]; accuracy 2/3;
P_a = 1/1, R_a = 1/2, F1_a = 2/3; P_b = 1/2, R_b = 1/1, F1_b = 2/3; macro-F1 = 2/3.
"""

from __future__ import annotations

from pathlib import Path


def confusion_matrix(y_true: list[int], y_pred: list[int], n_classes: int) -> list[list[int]]:
    """C[t][p]: count of examples with true class t and predicted class p."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    m = [[0] * n_classes for _ in range(n_classes)]
    for t, p in zip(y_true, y_pred):
        m[t][p] += 1
    return m


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def classification_metrics(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict:
    """accuracy, macro_f1 and per-class precision/recall/f1/support (keyed by label name)."""
    k = len(labels)
    c = confusion_matrix(y_true, y_pred, k)
    n = sum(map(sum, c))
    per_class = {}
    for i, name in enumerate(labels):
        tp = c[i][i]
        predicted = sum(c[t][i] for t in range(k))  # column i
        actual = sum(c[i])  # row i
        p, r = _div(tp, predicted), _div(tp, actual)
        per_class[name] = {"precision": p, "recall": r, "f1": _div(2 * p * r, p + r), "support": actual}
    return {
        "accuracy": _div(sum(c[i][i] for i in range(k)), n),
        "macro_f1": sum(v["f1"] for v in per_class.values()) / max(k, 1),
        "per_class": per_class,
        "confusion": c,
        "n": n,
    }


def flat_metrics(m: dict) -> dict[str, float]:
    """One-level dict for metrics.jsonl: accuracy, macro_f1, precision/<label>, recall/<label>."""
    out = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    for name, v in m["per_class"].items():
        out[f"precision/{name}"] = v["precision"]
        out[f"recall/{name}"] = v["recall"]
    return out


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path, title: str = "validation") -> None:
    """Write the confusion matrix as a PNG heat map with the counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(labels)
    size = max(3.5, 0.6 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    tilt = k > 4 or max(map(len, labels)) > 6  # long names would overlap side by side
    ax.set_xticks(range(k), labels, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max((max(r) for r in matrix), default=0)
    for t in range(k):
        for p in range(k):
            ax.text(p, t, str(matrix[t][p]), ha="center", va="center",
                    color="white" if matrix[t][p] > top / 2 else "black")
    ax.set_title(f"confusion matrix ({title})")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def metrics_table(before: dict, after: dict) -> list[str]:
    """Markdown rows: accuracy, macro-F1 and per-class precision/recall, before vs after."""
    rows = ["| metric | before (untrained head) | after |", "|---|---|---|",
            f"| val loss | {before['val_loss']:.4f} | {after['val_loss']:.4f} |",
            f"| accuracy | {before['accuracy']:.4f} | {after['accuracy']:.4f} |",
            f"| macro-F1 | {before['macro_f1']:.4f} | {after['macro_f1']:.4f} |"]
    for name, a in after["per_class"].items():
        b = before["per_class"][name]
        rows.append(f"| precision `{name}` | {b['precision']:.4f} | {a['precision']:.4f} |")
        rows.append(f"| recall `{name}` | {b['recall']:.4f} | {a['recall']:.4f} |")
    return rows
