"""report.md and loss.png for a finished training run."""

from __future__ import annotations

import math

from tunelab.runs.report import cell, plot_loss, suffix_rate
from tunelab.runs.rundir import RunDir


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
        lines += [f"| {cell(s['prompt'])} | {cell(s['base'])} | {cell(s['tuned'])} |" for s in outcome.samples]
        lines.append("")
    run.write_text("report.md", "\n".join(lines))
