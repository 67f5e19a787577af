"""Reward model training (task: reward) with TRL's RewardTrainer.

A sequence classifier with one output r(x) (`num_labels=1`: the base model + a new linear `score`
head reading the last non-pad token) learns from pairs with the Bradley-Terry loss

    loss = -log sigmoid(r(prompt + chosen) - r(prompt + rejected))      (mean over pairs)

Validation, before and after training: pairwise accuracy = share of pairs with r_chosen > r_rejected,
margin = mean(r_chosen - r_rejected) (TRL's `accuracy` and `margin` metrics, from `trainer.evaluate()`).
Methods: lora (the head trained whole, saved with the adapter as a peft `modules_to_save`), qlora
(tunelab's 4-bit base, head kept full precision), full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from tunelab.config import RunConfig
from tunelab.data.templates import build_template
from tunelab.errors import TunelabError
from tunelab.methods import method_of
from tunelab.runs.rundir import RunDir
from tunelab.train.distributed import is_main
from tunelab.train.loggers import MetricsLogger
from tunelab.train.recipes._common import Outcome, begin_run, finish_run, setup_run
from tunelab.train.recipes.preference import (checkpoint_callback, load_pairs, metrics_callback, quiet_trainer,
                                               refuse_engine_only_options, remove_empty_checkpoints, resume_from,
                                               tokenize_pairs, train_and_measure, trainer_args)
from tunelab.train.reports import write_reward_report
from tunelab.train.resolve import resolve

METHODS = ("lora", "qlora", "full")


@dataclass
class RewardOutcome(Outcome):
    run_dir: Path
    before: dict  # TRL eval metrics on validation: val_accuracy, val_margin, val_loss, ...
    after: dict
    trainable: str
    steps: int = 0
    train_seconds: float = 0.0
    n_train: int = 0
    n_val: int = 0
    truncated: int = 0
    extra: dict = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        lines = [f"data: {self.n_train} train / {self.n_val} validation pairs"
                 + (f" ({self.truncated} truncated)" if self.truncated else "")]
        if self.before and self.after:
            b, a = self.before, self.after
            lines.append(f"validation pairwise accuracy: base {b['val_accuracy']:.0%} -> tuned {a['val_accuracy']:.0%}")
            lines.append(f"validation reward margin (chosen - rejected): base {b['val_margin']:+.3f} -> "
                         f"tuned {a['val_margin']:+.3f}")
        lines.append(f"{self.steps} steps, {self.train_seconds:.0f}s")
        lines.append(f"run saved to {self.run_dir} (report.md, "
                     f"{'adapter/' if RunDir(self.run_dir).adapter_dir.exists() else 'model/'})")
        return lines


def head_name(model) -> str:
    for name in ("score", "classifier"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return name
    raise TunelabError(f"cannot find the classification head of {type(model).__name__}", where="model.name")


def load_reward_model(cfg: RunConfig):
    """(model with a 1-output head, tokenizer, resolved model)."""
    from transformers import AutoModelForSequenceClassification

    from tunelab.models.load import load_tokenizer, pick_device, pick_dtype
    from tunelab.models.registry import resolve

    rm = resolve(cfg.model.name)
    device = pick_device(cfg.model.device)
    tok = load_tokenizer(rm)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(rm.path, num_labels=1,
                                                                   dtype=pick_dtype(cfg.model.dtype, device))
    except (OSError, ValueError) as e:
        raise TunelabError(f"cannot load {rm.path} as a sequence classifier: {e}", where="model.name") from e
    model.config.pad_token_id = tok.pad_token_id  # the head reads the last token before padding
    return model.to(device), tok, rm


def run_reward(cfg: RunConfig, quiet: bool = False, console: Console | None = None) -> RewardOutcome:
    from trl import RewardConfig, RewardTrainer

    from tunelab.adapters.lora import trainable_summary

    # ---- setup: data first -----------------------------------------------------------------------------------
    console, run = setup_run(cfg, quiet, console, METHODS, checks=(refuse_engine_only_options,))
    cfg = resolve(cfg)  # every auto settled before anything loads: config.yaml records them (train/resolve.py)
    train_ex, val_ex = load_pairs(cfg)
    model, tok, rm = load_reward_model(cfg)  # the new head is initialized from cfg.train.seed (setup_run)
    device = next(model.parameters()).device
    refuse_other_backends(cfg, device)
    template = build_template(cfg.data.template, tok, cfg.data.system, cfg.data.custom_template)
    train_rows, cut_train = tokenize_pairs(train_ex, template, tok, cfg)
    val_rows, cut_val = tokenize_pairs(val_ex, template, tok, cfg)
    console.print(f"data: {len(train_rows)} train / {len(val_rows)} validation pairs")
    # template.json: how pairs were rendered, to score new text the same way; a resumed run: its checkpoint's step
    resume_step = begin_run(run, cfg, rm.path, template, console)

    # ---- adapt -----------------------------------------------------------------------------------------------
    model = adapt(model, cfg)
    trainable = trainable_summary(model)
    console.print(trainable)

    # ---- before, train, after (TRL) --------------------------------------------------------------------------
    logger = MetricsLogger(run)  # metrics.jsonl; the tracker of train.report_to is TRL's (trainer_args)
    args = trainer_args(RewardConfig, cfg, run, device, quiet, bool(val_rows), max_length=None)
    trainer = RewardTrainer(model=model, args=args, train_dataset=scored_sequences(train_rows),
                            eval_dataset=scored_sequences(val_rows) if val_rows else None, processing_class=tok,
                            callbacks=[checkpoint_callback(run, cfg.train.keep_checkpoints), metrics_callback(logger)])
    quiet_trainer(trainer, quiet)
    before, state, seconds, after = train_and_measure(trainer, bool(val_rows), logger,
                                                       resume_from(run, resume_step))

    # ---- save ------------------------------------------------------------------------------------------------
    out = RewardOutcome(run.path, before, after, trainable, state.global_step, seconds, len(train_rows),
                        len(val_rows), cut_train + cut_val)
    if is_main():  # under a launcher, rank 0 alone writes the run folder
        run.save_weights(trainer.model, cfg.method.name, tok)
        write_reward_report(run, cfg, out)
        remove_empty_checkpoints(run)
    finish_run(run, None, cfg.train.keep_checkpoints)  # DONE last; a Ctrl-C in TRL raised before here
    return out


def refuse_other_backends(cfg: RunConfig, device) -> None:
    from tunelab.adapters.qlora import choose_backend

    m = cfg.method
    if method_of(cfg).quantized_base and choose_backend(m.quant_backend, device) != "tunelab":
        raise TunelabError("task reward quantizes with the tunelab backend only", where="method.quant_backend",
                           hint="set method.quant_backend=tunelab")


def adapt(model, cfg: RunConfig):
    """qlora: the base to 4-bit, the head kept full precision; lora / qlora: LoRA with the head trained
    whole (saved in the adapter as a peft `modules_to_save`); full: every weight (`Method.adapt`)."""
    from tunelab.adapters.qlora import quantize_base

    m, method = cfg.method, method_of(cfg)
    head = head_name(model)
    if method.quantized_base:
        quantize_base(model, m.quant_type, m.double_quant, skip=("lm_head", head))
    return method.adapt(model, m, task_type="SEQ_CLS", modules_to_save=[head])


def scored_sequences(rows):
    """The sequences the reward model scores: prompt + reply (+ end of turn), chosen and rejected."""
    from datasets import Dataset

    return Dataset.from_list([{"chosen_ids": r["prompt_ids"] + r["chosen_ids"],
                               "rejected_ids": r["prompt_ids"] + r["rejected_ids"]} for r in rows])
