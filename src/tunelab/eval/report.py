"""report.md and loss.png for a finished training run."""

from __future__ import annotations

import math

from tunelab.train.rundir import RunDir


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


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def write_report(run: RunDir, cfg, outcome) -> None:
    res = outcome.result
    has_plot = plot_loss(run)
    lines = [f"# Run `{run.path.name}`", "",
             f"- model: `{cfg.model.name}`, method: `{cfg.method.name}`"
             + (f" (r={cfg.method.r}, alpha={cfg.method.alpha:g}, targets={cfg.method.target_modules})"
                if cfg.method.name in ("lora", "qlora") else ""),
             f"- {outcome.trainable}",
             f"- data: {outcome.n_train} train / {outcome.n_val} validation examples, template `{cfg.data.template}`",
             f"- {res.steps} optimizer steps in {res.train_seconds:.1f}s, {res.trained_tokens:,} trained tokens "
             f"({res.tokens_per_s:,.0f} tokens/s)", ""]
    if not math.isnan(outcome.val_before):
        lines += ["## Validation loss (mean NLL per reply token)", "", "| | loss | perplexity |", "|---|---|---|",
                  f"| base | {outcome.val_before:.4f} | {math.exp(outcome.val_before):.2f} |"]
        for ep, v in res.val_history:
            lines.append(f"| epoch {ep} | {v:.4f} | {math.exp(v):.2f} |")
        lines += [f"| final (kept) | {outcome.val_after:.4f} | {math.exp(outcome.val_after):.2f} |", ""]
    if has_plot:
        lines += ["![loss curve](loss.png)", ""]
    if outcome.samples:
        suffix = cfg.eval.expect_suffix
        b = suffix_rate([s["base"] for s in outcome.samples], suffix)
        t = suffix_rate([s["tuned"] for s in outcome.samples], suffix)
        lines += ["## Held-out prompts: base vs tuned", ""]
        if b is not None:
            lines += [f"Replies ending with `{suffix}`: base {b:.0%}, tuned {t:.0%} "
                      f"({len(outcome.samples)} prompts).", ""]
        lines += ["| prompt | base | tuned |", "|---|---|---|"]
        lines += [f"| {_cell(s['prompt'])} | {_cell(s['base'])} | {_cell(s['tuned'])} |" for s in outcome.samples]
        lines.append("")
    run.write_text("report.md", "\n".join(lines))
