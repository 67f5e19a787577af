"""report.md (and loss.png, confusion.png) of a finished training run: one writer per task.

    write_sft_report        chat fine-tuning: validation loss per evaluation, base vs tuned replies
    write_pretrain_report   continued pretraining: held-out perplexity, base vs tuned continuations
    write_classify_report   classification: metrics before/after, confusion matrix
    write_reward_report     reward model: pairwise accuracy and margin, base (new head) vs tuned
    write_dpo_report        DPO: log-prob and reward margins, base vs tuned replies

Each reads the recipe's outcome (its fields, not its class) and the run's metrics.jsonl (the loss
curve, `tunelab.runs.report.plot_loss`); table cells are escaped by `cell`, sign-off rates are
`suffix_rate` (share of replies ending with `eval.expect_suffix`).
"""

from __future__ import annotations

import math

from tunelab.config import RunConfig
from tunelab.eval.classification import metrics_table, plot_confusion
from tunelab.eval.metrics import perplexity
from tunelab.methods import method_of
from tunelab.runs.report import cell, plot_loss, suffix_rate
from tunelab.runs.rundir import RunDir


def _samples_table(samples: list[dict], first: str = "prompt") -> list[str]:
    lines = [f"| {first} | base | tuned |", "|---|---|---|"]
    lines += [f"| {cell(s['prompt'])} | {cell(s['base'])} | {cell(s['tuned'])} |" for s in samples]
    return lines + [""]


def _model_line(cfg: RunConfig, every_detail: bool = False) -> str:
    """e.g. "- model: `smollm2-135m-instruct`, method: `lora` (r=16, alpha=32, targets=all-linear)": the
    method's `detail` for adapter methods, and for every method when `every_detail` (freeze: its blocks)."""
    m, method = cfg.method, method_of(cfg)
    line = f"- model: `{cfg.model.name}`, method: `{m.name}`"
    if method.adapters or every_detail:
        line += method.detail(m)
    return line


def _loss_rows(before: float, history: list, after: float, ppl) -> list[str]:
    """Table rows base / epoch ... / final (kept): NLL and ppl(NLL), then a blank line."""
    rows = [f"| base | {before:.4f} | {ppl(before):.2f} |"]
    rows += [f"| epoch {ep} | {v:.4f} | {ppl(v):.2f} |" for ep, v in history]
    return rows + [f"| final (kept) | {after:.4f} | {ppl(after):.2f} |", ""]


def _steps_line(res) -> str:
    """This process's steps, time and tokens (`TrainResult.tokens_per_s`); a resumed run says where it began."""
    line = (f"- {res.steps_run} optimizer steps in {res.train_seconds:.1f}s, {res.tokens_run:,} trained tokens "
            f"({res.tokens_per_s:,.0f} tokens/s)")
    if res.resumed_from:
        line += f", resumed at step {res.resumed_from} ({res.steps} steps, {res.trained_tokens:,} tokens in all)"
    return line


# ---- sft -----------------------------------------------------------------------------------------------------
def write_sft_report(run: RunDir, cfg: RunConfig, outcome) -> None:
    res = outcome.result
    has_plot = plot_loss(run)
    lines = [f"# Run `{run.path.name}`", "",
             _model_line(cfg),
             f"- {outcome.trainable}",
             f"- data: {outcome.n_train} train / {outcome.n_val} validation examples, template `{cfg.data.template}`",
             _steps_line(res), ""]
    if not math.isnan(outcome.val_before):
        lines += ["## Validation loss (mean NLL per reply token)", "", "| | loss | perplexity |", "|---|---|---|",
                  *_loss_rows(outcome.val_before, res.val_history, outcome.val_after, math.exp)]
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
        lines += _samples_table(outcome.samples)
    run.write_text("report.md", "\n".join(lines))


# ---- pretrain ------------------------------------------------------------------------------------------------
def write_pretrain_report(run: RunDir, cfg: RunConfig, out) -> None:
    res = out.result
    has_plot = plot_loss(run)
    lines = [f"# Run `{run.path.name}` (continued pretraining)", "",
             f"- model: `{cfg.model.name}`, method: `{cfg.method.name}`", f"- {out.trainable}",
             f"- data: {out.n_docs} train documents, {out.n_tokens:,} tokens, packed into blocks of {out.block_size} "
             f"tokens: {out.n_train} train / {out.n_val} validation blocks",
             "- documents are joined with EOS; a block may span two documents and attention crosses the boundary",
             _steps_line(res), ""]
    if not math.isnan(out.val_before):
        lines += ["## Held-out perplexity (validation blocks, every token)", "",
                  "| | NLL per token | perplexity |", "|---|---|---|",
                  *_loss_rows(out.val_before, res.val_history, out.val_after, perplexity)]
    if has_plot:
        lines += ["![loss curve](loss.png)", ""]
    if out.samples:
        lines += ["## Continuations of `eval.prompts` (greedy): base vs tuned", ""]
        lines += _samples_table(out.samples, first="text")
    run.write_text("report.md", "\n".join(lines))


# ---- classify ------------------------------------------------------------------------------------------------
def write_classify_report(run: RunDir, cfg: RunConfig, outcome) -> None:
    """report.md (+ confusion.png, loss.png) of a classification run."""
    res = outcome.result
    has_loss = plot_loss(run)
    lines = [f"# Classification run `{run.path.name}`", "",
             _model_line(cfg, every_detail=True),
             f"- labels: {', '.join(f'`{x}`' for x in outcome.labels)}",
             f"- {outcome.trainable}",
             f"- data: {outcome.n_train} train / {outcome.n_val} validation examples, max_length {cfg.data.max_length}",
             _steps_line(res), ""]
    if outcome.before and outcome.after:
        lines += ["## Validation metrics", "", *metrics_table(outcome.before, outcome.after), ""]
        plot_confusion(outcome.after["confusion"], outcome.labels, run.path / "confusion.png")
        lines += ["![confusion matrix](confusion.png)", ""]
    else:
        lines += ["No validation set: set data.validation or data.val_split to get metrics.", ""]
    if has_loss:
        lines += ["![loss curve](loss.png)", ""]
    run.write_text("report.md", "\n".join(lines))


# ---- reward --------------------------------------------------------------------------------------------------
def write_reward_report(run: RunDir, cfg: RunConfig, out) -> None:
    has_plot = plot_loss(run)
    lines = [f"# Run `{run.path.name}` (reward model)", "",
             f"- model: `{cfg.model.name}` + a 1-output score head, method: `{cfg.method.name}`", f"- {out.trainable}",
             f"- data: {out.n_train} train / {out.n_val} validation pairs ({out.truncated} truncated), "
             f"template `{cfg.data.template}`",
             "- loss: -log sigmoid(r_chosen - r_rejected) (TRL RewardTrainer); weights: the final step's",
             f"- {out.steps} optimizer steps in {out.train_seconds:.1f}s", ""]
    if out.before and out.after:
        lines += ["## Validation pairs", "", "| | pairwise accuracy | margin mean(r_chosen - r_rejected) | loss |",
                  "|---|---|---|---|"]
        for name, d in (("base (new head)", out.before), ("tuned", out.after)):
            lines.append(f"| {name} | {d['val_accuracy']:.1%} | {d['val_margin']:+.4f} | {d['val_loss']:.4f} |")
        lines.append("")
    if has_plot:
        lines += ["![loss curve](loss.png)", ""]
    run.write_text("report.md", "\n".join(lines))


# ---- dpo -----------------------------------------------------------------------------------------------------
def write_dpo_report(run: RunDir, cfg: RunConfig, out) -> None:
    has_plot = plot_loss(run)
    p = cfg.preference
    lines = [f"# Run `{run.path.name}` (DPO)", "",
             f"- model: `{cfg.model.name}`, method: `{cfg.method.name}`, reference: "
             + ("the same model with the adapter disabled" if method_of(cfg).adapters else "a frozen copy"),
             f"- {out.trainable}",
             f"- data: {out.n_train} train / {out.n_val} validation pairs ({out.truncated} truncated), "
             f"template `{cfg.data.template}`, max_length {cfg.data.max_length}, max_prompt_length {p.max_prompt_length}",
             f"- TRL DPOTrainer, loss_type `{p.loss_type}`, beta {p.beta:g}; weights: the final step's",
             f"- {out.steps} optimizer steps in {out.train_seconds:.1f}s", ""]
    if out.before and out.after:
        lines += _dpo_validation(out)
    if has_plot:
        lines += ["![loss curve](loss.png)", ""]
    if out.samples:
        lines += ["## Held-out prompts: base vs tuned (greedy)", ""]
        rates = out.suffix_rates()
        if rates:
            lines += [f"Replies ending with `{out.suffix}`: base {rates[0]:.0%}, tuned {rates[1]:.0%} "
                      f"({len(out.samples)} prompts).", ""]
        lines += _samples_table(out.samples)
    run.write_text("report.md", "\n".join(lines))


def _dpo_validation(out) -> list[str]:
    lines = ["## Validation pairs (TRL evaluation)", "",
             "| | log p(chosen) | log p(rejected) | log-prob margin | reward margin | reward accuracy |",
             "|---|---|---|---|---|---|"]
    for name, x in (("base", out.before), ("tuned", out.after)):
        lines.append(f"| {name} | {x['val_logps/chosen']:.2f} | {x['val_logps/rejected']:.2f} | "
                     f"{out.logp_margin(x):+.2f} | {x['val_rewards/margins']:+.4f} | "
                     f"{x['val_rewards/accuracies']:.1%} |")
    return lines + ["", "log p = sum of the reply's token log-probs under the policy, averaged over pairs; "
                    "reward = beta * (log pi - log ref), so the base's reward margin is 0.", ""]
