"""Direct Preference Optimization (task: dpo) with TRL's DPOTrainer.

    loss = -log sigmoid(beta * [(log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x))])

(`loss_type: sigmoid`; beta = `preference.beta`). The reference is the policy with its LoRA adapter
disabled (peft config handed to TRL, `ref_model=None`: no second copy of the model); for
`method: full` a frozen second copy is loaded. TRL's metrics per log step: rewards/chosen =
beta * (log pi - log ref)(y_c), rewards/rejected, rewards/margins (chosen - rejected),
rewards/accuracies (share of pairs with margin > 0), logps/chosen, logps/rejected.

Before/after on the validation pairs: the log-prob margin mean(log pi(y_c|x) - log pi(y_r|x))
(before = the base model), TRL's reward margin and accuracy after, and the share of greedy replies
to held-out prompts that end with `eval.expect_suffix` (the chosen style's sign-off, if given).

Prompts are rendered and tokenized by tunelab's template exactly as `tunelab generate` does
(`preference.pair_ids`), so TRL receives token ids, not text; template.json is saved with the adapter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from tunelab.config import RunConfig
from tunelab.data.templates import build_template
from tunelab.errors import TunelabError
from tunelab.train.loggers import MetricsLogger
from tunelab.train.recipes.preference import (load_pairs, metrics_callback, quiet_trainer, remove_empty_checkpoints,
                                               refuse_engine_only_options, tokenize_pairs, trainer_args, val_metrics)
from tunelab.runs.rundir import RunDir

METHODS = ("lora", "qlora", "full")


@dataclass
class DpoOutcome:
    run_dir: Path
    before: dict  # TRL eval metrics on validation (val_logps/chosen, val_rewards/margins, ...)
    after: dict
    trainable: str
    steps: int = 0
    train_seconds: float = 0.0
    n_train: int = 0
    n_val: int = 0
    truncated: int = 0
    suffix: str | None = None
    samples: list = field(default_factory=list)  # dicts: prompt, base, tuned

    @staticmethod
    def logp_margin(d: dict) -> float:
        """mean log pi(chosen) - mean log pi(rejected) over validation pairs (sums over reply tokens)."""
        return d["val_logps/chosen"] - d["val_logps/rejected"]

    def suffix_rates(self) -> tuple[float, float] | None:
        from tunelab.runs.report import suffix_rate

        if not self.suffix or not self.samples:
            return None
        return (suffix_rate([s["base"] for s in self.samples], self.suffix),
                suffix_rate([s["tuned"] for s in self.samples], self.suffix))

    def summary_lines(self) -> list[str]:
        lines = [f"data: {self.n_train} train / {self.n_val} validation pairs"
                 + (f" ({self.truncated} truncated)" if self.truncated else "")]
        if self.before and self.after:
            a = self.after
            lines.append(f"validation log-prob margin log p(chosen) - log p(rejected): base "
                         f"{self.logp_margin(self.before):+.2f} -> tuned {self.logp_margin(a):+.2f}")
            lines.append(f"validation DPO reward margin {a['val_rewards/margins']:+.3f}, "
                         f"accuracy {a['val_rewards/accuracies']:.0%} (base: 0 and 0% by definition)")
        rates = self.suffix_rates()
        if rates:
            lines.append(f"greedy replies ending with {self.suffix!r}: base {rates[0]:.0%} -> tuned {rates[1]:.0%} "
                         f"({len(self.samples)} held-out prompts)")
        lines.append(f"{self.steps} steps, {self.train_seconds:.0f}s")
        lines.append(f"run saved to {self.run_dir} (report.md, template.json, "
                     f"{'adapter/' if (self.run_dir / 'adapter').exists() else 'model/'})")
        return lines


def loss_types(spec: str) -> list[str]:
    """`preference.loss_type`: one TRL loss ("sigmoid") or several joined by commas, e.g. "sigmoid,sft"
    (DPO + an NLL term on the chosen replies, TRL's RPO recipe; TRL weighs them equally)."""
    return [s.strip() for s in spec.split(",") if s.strip()]


def _trainer_class():
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        """DPOTrainer fed rows that already hold prompt_ids / chosen_ids / rejected_ids (tokenized by
        tunelab's template); TRL's own text tokenization is skipped, everything else is TRL's."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return PretokenizedDPOTrainer


def _sample(model, tok, template, convs, max_new_tokens, amp) -> list[str]:
    from tunelab.infer.generate import Generator

    return Generator(model, tok, template, amp).reply_batch(convs, max_new_tokens=max_new_tokens) if convs else []


def run_dpo(cfg: RunConfig, quiet: bool = False, console: Console | None = None) -> DpoOutcome:
    from datasets import Dataset
    from trl import DPOConfig

    from tunelab.adapters.lora import lora_config, quant_linear_types, trainable_summary
    from tunelab.adapters.qlora import choose_backend, quantize_base, register_quant_linear
    from tunelab.models.load import load_causal_lm, pick_device
    from tunelab.runtime.precision import autocast_dtype
    from tunelab.train.recipes._common import load_bnb_base

    console = console or Console(stderr=True, quiet=quiet)
    torch.manual_seed(cfg.train.seed)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    m, d = cfg.method, cfg.data
    if m.name not in METHODS:
        raise TunelabError(f"method '{m.name}' is not available for task dpo", where="method.name",
                           hint=f"one of: {', '.join(METHODS)}")
    refuse_engine_only_options(cfg)
    run = RunDir(cfg.run_dir())
    run.refuse_if_done(cfg.output.overwrite)

    # ---- data first ------------------------------------------------------------------------------------------
    train_ex, val_ex = load_pairs(cfg)
    device = pick_device(cfg.model.device)
    backend = choose_backend(m.quant_backend, device) if m.name == "qlora" else None
    if backend == "bitsandbytes":
        model, tok, rm = load_bnb_base(cfg, device)
    else:
        model, tok, rm = load_causal_lm(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device)
    template = build_template(d.template, tok, d.system, d.custom_template)
    train_rows, cut_train = tokenize_pairs(train_ex, template, tok, cfg)
    val_rows, cut_val = tokenize_pairs(val_ex, template, tok, cfg)
    console.print(f"data: {len(train_rows)} train / {len(val_rows)} validation pairs")

    run.begin(cfg, rm.path, template)
    amp = autocast_dtype(cfg.train.precision, device)

    # ---- the base, before: greedy replies to held-out prompts ------------------------------------------------
    if m.name == "qlora" and backend == "tunelab":
        quantize_base(model, m.quant_type, m.double_quant, compute_dtype=amp)
    convs = [[{"role": "user", "content": p}] for p in cfg.eval.prompts]
    convs += [ex.prompt for ex in val_ex[: cfg.eval.from_validation]]
    t = time.perf_counter()
    base_replies = _sample(model, tok, template, convs, cfg.eval.max_new_tokens, amp)
    if convs:
        console.print(f"base replies sampled in {time.perf_counter() - t:.0f}s")

    # ---- policy (LoRA on the base) and reference (the base: adapter disabled) --------------------------------
    peft_config, ref_model = None, None
    if m.name in ("lora", "qlora"):
        peft_config = lora_config(model, m)
        if any(isinstance(x, quant_linear_types()) for x in model.modules()):
            register_quant_linear(peft_config)
    else:  # full: a frozen second copy is the reference
        ref_model, _, _ = load_causal_lm(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device)
        ref_model.eval().requires_grad_(False)
    p = cfg.preference
    args = trainer_args(DPOConfig, cfg, run, device, quiet, bool(val_rows), beta=p.beta, loss_type=loss_types(p.loss_type),
                        max_length=d.max_length)

    def as_dataset(rows):
        return Dataset.from_list(rows)

    logger = MetricsLogger(run, cfg.train.report_to)
    trainer = _trainer_class()(model=model, ref_model=ref_model, args=args, train_dataset=as_dataset(train_rows),
                               eval_dataset=as_dataset(val_rows) if val_rows else None, processing_class=tok,
                               peft_config=peft_config, callbacks=[metrics_callback(logger)])
    quiet_trainer(trainer, quiet)
    trainable = trainable_summary(trainer.model)
    console.print(trainable)
    try:
        before = val_metrics(trainer) if val_rows else {}
        t = time.perf_counter()
        state = trainer.train()
        seconds = time.perf_counter() - t
        after = val_metrics(trainer) if val_rows else {}
    finally:
        logger.close()

    # ---- after + save ----------------------------------------------------------------------------------------
    policy = trainer.model
    policy.eval()
    tuned_replies = _sample(policy, tok, template, convs, cfg.eval.max_new_tokens, amp)
    run.save_weights(policy, m.name, tok)
    samples = [{"prompt": c[-1]["content"], "base": b, "tuned": a} for c, b, a in zip(convs, base_replies, tuned_replies)]
    out = DpoOutcome(run.path, before, after, trainable, state.global_step, seconds, len(train_rows), len(val_rows),
                     cut_train + cut_val, cfg.eval.expect_suffix, samples)
    write_dpo_report(run, cfg, out)
    remove_empty_checkpoints(run)
    run.mark_done()
    return out


def write_dpo_report(run: RunDir, cfg: RunConfig, out: DpoOutcome) -> None:
    from tunelab.runs.report import cell, plot_loss

    has_plot = plot_loss(run)
    p = cfg.preference
    lines = [f"# Run `{run.path.name}` (DPO)", "",
             f"- model: `{cfg.model.name}`, method: `{cfg.method.name}`, reference: "
             + ("the same model with the adapter disabled" if cfg.method.name != "full" else "a frozen copy"),
             f"- {out.trainable}",
             f"- data: {out.n_train} train / {out.n_val} validation pairs ({out.truncated} truncated), "
             f"template `{cfg.data.template}`, max_length {cfg.data.max_length}, max_prompt_length {p.max_prompt_length}",
             f"- TRL DPOTrainer, loss_type `{p.loss_type}`, beta {p.beta:g}; weights: the final step's",
             f"- {out.steps} optimizer steps in {out.train_seconds:.1f}s", ""]
    if out.before and out.after:
        b, a = out.before, out.after
        lines += ["## Validation pairs (TRL evaluation)", "",
                  "| | log p(chosen) | log p(rejected) | log-prob margin | reward margin | reward accuracy |",
                  "|---|---|---|---|---|---|"]
        for name, x in (("base", b), ("tuned", a)):
            lines.append(f"| {name} | {x['val_logps/chosen']:.2f} | {x['val_logps/rejected']:.2f} | "
                         f"{out.logp_margin(x):+.2f} | {x['val_rewards/margins']:+.4f} | "
                         f"{x['val_rewards/accuracies']:.1%} |")
        lines += ["", "log p = sum of the reply's token log-probs under the policy, averaged over pairs; "
                  "reward = beta * (log pi - log ref), so the base's reward margin is 0.", ""]
    if has_plot:
        lines += ["![loss curve](loss.png)", ""]
    if out.samples:
        lines += ["## Held-out prompts: base vs tuned (greedy)", ""]
        rates = out.suffix_rates()
        if rates:
            lines += [f"Replies ending with `{out.suffix}`: base {rates[0]:.0%}, tuned {rates[1]:.0%} "
                      f"({len(out.samples)} prompts).", ""]
        lines += ["| prompt | base | tuned |", "|---|---|---|"]
        lines += [f"| {cell(s['prompt'])} | {cell(s['base'])} | {cell(s['tuned'])} |" for s in out.samples]
        lines.append("")
    run.write_text("report.md", "\n".join(lines))
