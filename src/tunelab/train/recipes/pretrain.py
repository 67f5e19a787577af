"""Continued pretraining on raw text (task: pretrain), LoRA / QLoRA / full / freeze.

setup:  resolve the run dir -> read documents (errors before anything loads) -> model + tokenizer
        -> pack: EOS-joined token stream cut into blocks of data.max_length (`tunelab.data.packing`)
before: held-out perplexity = exp(mean NLL per token over the validation blocks)
train:  engine.train_loop with the default causal-LM objective (labels = every token of the block)
save:   adapter/ or model/, template.json (so `tunelab generate RUN` works), config, metrics, report, DONE (last)

Documents come from `tunelab.data.dataset.load_splits` (a folder of .txt/.md files, or records with
`text`); validation documents are `data.validation` or a seeded `data.val_split` share of the
documents, packed the same way, so held-out text is whole documents never trained on.
e.g. 6,000 train tokens, data.max_length 128 -> ceil(6,000 / 128) = 47 train blocks (46 full + one of 112).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from tunelab.config import RunConfig
from tunelab.data.dataset import load_splits
from tunelab.data.packing import pack
from tunelab.data.templates import build_template
from tunelab.eval.metrics import perplexity
from tunelab.losses import reply_nll
from tunelab.runs.rundir import RunDir
from tunelab.runtime.precision import autocast_dtype
from tunelab.train.distributed import is_main
from tunelab.train.engine import TrainResult
from tunelab.train.loggers import MetricsLogger
from tunelab.train.recipes._common import (Outcome, adapt, begin_run, finish_run, load_base, quantize_for_training,
                                           setup_run, train_engine)
from tunelab.train.reports import write_pretrain_report
from tunelab.train.resolve import resolve

METHODS = ("lora", "qlora", "full", "freeze")


@dataclass
class PretrainOutcome(Outcome):
    run_dir: Path
    result: TrainResult
    val_before: float  # mean NLL per token on the validation blocks
    val_after: float
    trainable: str
    n_docs: int = 0
    n_tokens: int = 0  # train tokens
    n_train: int = 0  # blocks
    n_val: int = 0
    block_size: int = 0
    samples: list = field(default_factory=list)  # dicts: prompt, base, tuned (raw-text continuations)

    def summary_lines(self) -> list[str]:
        r = self.result
        lines = [f"data: {self.n_docs} train documents, {self.n_tokens:,} tokens -> {self.n_train} train / "
                 f"{self.n_val} validation blocks of {self.block_size} tokens"]
        if not math.isnan(self.val_before):
            lines.append(f"held-out perplexity: base {perplexity(self.val_before):.2f} -> tuned "
                         f"{perplexity(self.val_after):.2f} (NLL/token {self.val_before:.3f} -> {self.val_after:.3f})")
        lines.append(f"{r.speed_line()}")
        lines.append(f"run saved to {self.run_dir} (report.md, loss.png, "
                     f"{'adapter/' if RunDir(self.run_dir).adapter_dir.exists() else 'model/'})")
        return lines


@torch.no_grad()
def continue_text(model, tok, prompts: list[str], max_new_tokens: int, amp) -> list[str]:
    """Greedy raw-text continuation of each prompt (no chat template: a pretraining run continues text)."""
    device = next(model.parameters()).device
    out = []
    was_training = model.training
    model.eval()
    for p in prompts:
        ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]], device=device)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).strip())
    model.train(was_training)
    return out


def run_pretrain(cfg: RunConfig, quiet: bool = False, console: Console | None = None) -> PretrainOutcome:
    from tunelab.adapters.lora import trainable_summary

    # ---- setup: data first, so bad input fails before any model loads or anything is written -------------
    console, run = setup_run(cfg, quiet, console, METHODS)
    cfg = resolve(cfg)  # every auto settled before anything loads: config.yaml records them (train/resolve.py)
    d = cfg.data
    train_docs, val_docs = load_splits(cfg)  # TextExample lists
    base = load_base(cfg)
    tok = base.tok
    train_blk, val_blk = pack(train_docs, tok, d.max_length), pack(val_docs, tok, d.max_length) if val_docs else []
    n_tokens = sum(len(b.input_ids) for b in train_blk)
    console.print(f"data: {len(train_docs)} train documents, {n_tokens:,} tokens -> {len(train_blk)} train / "
                  f"{len(val_blk)} validation blocks of {d.max_length} tokens")
    template = build_template(d.template, tok, d.system, d.custom_template)
    resume_step = begin_run(run, cfg, base.rm.path, template, console)
    amp = autocast_dtype(cfg.train.precision, base.device)

    # ---- before: the base ----------------------------------------------------------------------------------
    quantize_for_training(base, cfg, amp)
    t = time.perf_counter()
    main = is_main()  # under N processes rank 0 alone measures, samples and writes (train/distributed.py)
    val_before, base_text = measure(base.model, tok, val_blk, cfg, amp) if main else (float("nan"), [])
    if main and val_blk:
        console.print(f"base perplexity {perplexity(val_before):.2f} on held-out blocks "
                      f"({time.perf_counter() - t:.0f}s)")

    # ---- train ---------------------------------------------------------------------------------------------
    model = adapt(base.model, cfg)
    trainable = trainable_summary(model)
    console.print(trainable)
    logger = MetricsLogger(run, cfg.train.report_to)
    result = train_engine(model, train_blk, val_blk, cfg, run, logger, quiet, resume_step,
                          pad_id=tok.pad_token_id, before_step=base.before_step)

    # ---- after + save --------------------------------------------------------------------------------------
    val_after, tuned_text = measure(model, tok, val_blk, cfg, amp) if main else (float("nan"), [])
    if main:
        run.save_weights(model, cfg.method.name, tok)
    prompts = cfg.eval.prompts
    samples = [{"prompt": p, "base": b, "tuned": a} for p, b, a in zip(prompts, base_text, tuned_text)]
    out = PretrainOutcome(run.path, result, val_before, val_after, trainable, len(train_docs), n_tokens,
                          len(train_blk), len(val_blk), d.max_length, samples)
    if main:
        write_pretrain_report(run, cfg, out)
    finish_run(run, result, cfg.train.keep_checkpoints)
    return out


def measure(model, tok, val_blk, cfg: RunConfig, amp) -> tuple[float, list[str]]:
    """(mean NLL per token over the validation blocks; greedy continuations of `eval.prompts`)."""
    val = reply_nll(model, val_blk, tok.pad_token_id, cfg.train.batch_size, amp)
    prompts = list(cfg.eval.prompts)
    return val, continue_text(model, tok, prompts, cfg.eval.max_new_tokens, amp) if prompts else []
