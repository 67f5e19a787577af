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

from rich.console import Console

from tunelab.config import RunConfig
from tunelab.data.templates import build_template
from tunelab.methods import method_of
from tunelab.runs.rundir import RunDir
from tunelab.runtime.precision import autocast_dtype
from tunelab.train.distributed import is_main
from tunelab.train.loggers import MetricsLogger
from tunelab.train.recipes._common import Outcome, begin_run, finish_run, load_base, quantize_for_training, setup_run
from tunelab.train.recipes.preference import (checkpoint_callback, load_pairs, metrics_callback, quiet_trainer,
                                               refuse_engine_only_options, remove_empty_checkpoints, resume_from,
                                               tokenize_pairs, train_and_measure, trainer_args)
from tunelab.train.reports import write_dpo_report
from tunelab.train.resolve import resolve

METHODS = ("lora", "qlora", "full")


@dataclass
class DpoOutcome(Outcome):
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
                     f"{'adapter/' if RunDir(self.run_dir).adapter_dir.exists() else 'model/'})")
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


def run_dpo(cfg: RunConfig, quiet: bool = False, console: Console | None = None) -> DpoOutcome:
    from datasets import Dataset
    from trl import DPOConfig

    from tunelab.adapters.lora import trainable_summary

    # ---- setup: data first -----------------------------------------------------------------------------------
    console, run = setup_run(cfg, quiet, console, METHODS, checks=(refuse_engine_only_options,))
    cfg = resolve(cfg)  # every auto settled before anything loads: config.yaml records them (train/resolve.py)
    d = cfg.data
    train_ex, val_ex = load_pairs(cfg)
    base = load_base(cfg)
    tok = base.tok
    template = build_template(d.template, tok, d.system, d.custom_template)
    train_rows, cut_train = tokenize_pairs(train_ex, template, tok, cfg)
    val_rows, cut_val = tokenize_pairs(val_ex, template, tok, cfg)
    console.print(f"data: {len(train_rows)} train / {len(val_rows)} validation pairs")
    resume_step = begin_run(run, cfg, base.rm.path, template, console)  # config.yaml, template.json; resume: its step
    amp = autocast_dtype(cfg.train.precision, base.device)

    # ---- before: greedy replies of the base to held-out prompts ----------------------------------------------
    quantize_for_training(base, cfg, amp)
    convs = [[{"role": "user", "content": p}] for p in cfg.eval.prompts]
    convs += [ex.prompt for ex in val_ex[: cfg.eval.from_validation]]
    t = time.perf_counter()
    main = is_main()  # under a launcher, rank 0 alone samples and writes the run folder
    base_replies = sample(base.model, tok, template, convs, cfg.eval.max_new_tokens, amp) if main else []
    if main and convs:
        console.print(f"base replies sampled in {time.perf_counter() - t:.0f}s")

    # ---- train (TRL): the policy and its reference -----------------------------------------------------------
    peft_config, ref_model = policy_and_reference(base.model, cfg)
    p = cfg.preference
    args = trainer_args(DPOConfig, cfg, run, base.device, quiet, bool(val_rows), beta=p.beta,
                        loss_type=loss_types(p.loss_type), max_length=d.max_length)
    logger = MetricsLogger(run)  # metrics.jsonl; the tracker of train.report_to is TRL's (trainer_args)
    callbacks = [checkpoint_callback(run, cfg.train.keep_checkpoints), metrics_callback(logger)]
    trainer = _trainer_class()(model=base.model, ref_model=ref_model, args=args,
                               train_dataset=Dataset.from_list(train_rows),
                               eval_dataset=Dataset.from_list(val_rows) if val_rows else None, processing_class=tok,
                               peft_config=peft_config, callbacks=callbacks)
    quiet_trainer(trainer, quiet)
    trainable = trainable_summary(trainer.model)
    console.print(trainable)
    before, state, seconds, after = train_and_measure(trainer, bool(val_rows), logger,
                                                       resume_from(run, resume_step))

    # ---- after + save ----------------------------------------------------------------------------------------
    policy = trainer.model
    policy.eval()
    tuned_replies = sample(policy, tok, template, convs, cfg.eval.max_new_tokens, amp) if main else []
    if main:
        run.save_weights(policy, cfg.method.name, tok)
    samples = [{"prompt": c[-1]["content"], "base": b, "tuned": a} for c, b, a in zip(convs, base_replies, tuned_replies)]
    out = DpoOutcome(run.path, before, after, trainable, state.global_step, seconds, len(train_rows), len(val_rows),
                     cut_train + cut_val, cfg.eval.expect_suffix, samples)
    if main:
        write_dpo_report(run, cfg, out)
        remove_empty_checkpoints(run)
    finish_run(run, None, cfg.train.keep_checkpoints)  # DONE last; a Ctrl-C in TRL raised before here
    return out


def sample(model, tok, template, convs, max_new_tokens, amp) -> list[str]:
    """Greedy replies to `convs` (conversations ending with a user turn)."""
    from tunelab.infer.generate import Generator

    return Generator(model, tok, template, amp).reply_batch(convs, max_new_tokens=max_new_tokens) if convs else []


def policy_and_reference(model, cfg: RunConfig):
    """(peft config, reference model): lora / qlora hand TRL a LoRA config and no reference (the
    policy with its adapter disabled is the reference); full loads a frozen second copy."""
    from tunelab.adapters.lora import lora_config, quant_linear_types
    from tunelab.adapters.qlora import register_quant_linear
    from tunelab.models.load import load_causal_lm

    if method_of(cfg).adapters:
        peft_config = lora_config(model, cfg.method)
        if any(isinstance(x, quant_linear_types()) for x in model.modules()):
            register_quant_linear(peft_config)
        return peft_config, None
    ref_model, _, _ = load_causal_lm(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device)
    ref_model.eval().requires_grad_(False)
    return None, ref_model
