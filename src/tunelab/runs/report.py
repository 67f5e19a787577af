"""Pieces of a run's report.md: the loss curve (loss.png from metrics.jsonl), table cells, suffix rates."""

from __future__ import annotations

import re

from tunelab.runs.rundir import RunDir

def plot_loss(run: RunDir) -> bool:
    rows = run.metrics()
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if not train:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(*zip(*train), label="train loss", lw=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss (reply tokens)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("NLL per token")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run.path / "loss.png")
    plt.close(fig)
    return True


def suffix_rate(replies: list[str], suffix: str | None) -> float | None:
    if not suffix or not replies:
        return None
    return sum(r.rstrip().endswith(suffix) for r in replies) / len(replies)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&])")


def cell(text: str) -> str:
    """`text` as one Markdown table cell that GitHub and the Studio (serve/studio/html.markdown) show as
    that text: every character Markdown or HTML would read (`|`, `\\`, `*`, `_`, `` ` ``, `<`, `&`, ...) is
    backslash-escaped, and a line break is `<br>`."""
    return _MD_SPECIAL.sub(r"\\\1", text.replace("\r\n", "\n")).replace("\n", "<br>")
