"""Continued pretraining on raw text (task: pretrain), LoRA / QLoRA / full / freeze.

setup:  resolve the run dir -> read documents (errors before anything loads) -> model + tokenizer
        -> pack: EOS-joined token stream cut into blocks of data.max_length (`tunelab.data.packing`)
before: held-out perplexity = exp(mean NLL per token over the validation blocks)
train:  engine.train_loop with the default causal-LM objective (labels = every token of the block)
save:   adapter/ or model/, template.json (so `tunelab generate RUN` works), config, metrics, report, DONE (last)

Documents come from `tunelab.data.dataset.load_splits` (a folder of .txt/.md files, or records with
`text`); validation documents are `data.validation` or a seeded `data.val_split` share of the
documents, packed the same way, so held-out text is whole documents never trained on.
e.g. 6,000 tokens / 128 per block = 47 train blocks.
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
from tunelab.errors import TunelabError
from tunelab.eval.metrics import perplexity
from tunelab.losses import reply_nll
from tunelab.train.activation_ckpt import enable as enable_checkpointing, wants_checkpointing
from tunelab.train.engine import TrainResult, train_loop
from tunelab.runtime.precision import autocast_dtype
from tunelab.train.loggers import MetricsLogger
from tunelab.runs.rundir import RunDir

METHODS = ("lora", "qlora", "full", "freeze")


@dataclass
class PretrainOutcome:
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
        lines.append(f"{r.steps} steps, {r.train_seconds:.0f}s, {r.tokens_per_s:,.0f} trained tokens/s")
        lines.append(f"run saved to {self.run_dir} (report.md, loss.png, "
                     f"{'adapter/' if (self.run_dir / 'adapter').exists() else 'model/'})")
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
    from tunelab.adapters.lora import apply_lora, freeze_all_but_last, trainable_summary
    from tunelab.adapters.qlora import choose_backend, quantize_base, restore_bnb_training_layout
    from tunelab.models.load import load_causal_lm, pick_device
    from tunelab.train.recipes._common import load_bnb_base, resume_point

    console = console or Console(stderr=True, quiet=quiet)
    torch.manual_seed(cfg.train.seed)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    m, d = cfg.method, cfg.data
    if m.name not in METHODS:
        raise TunelabError(f"method '{m.name}' is not available for task pretrain", where="method.name",
                           hint=f"one of: {', '.join(METHODS)}")
    run = RunDir(cfg.run_dir())
    run.refuse_if_done(cfg.output.overwrite)

    # ---- data first: bad input fails before any model loads or anything is written --------------------------
    train_docs, val_docs = load_splits(cfg)  # TextExample lists
    device = pick_device(cfg.model.device)
    backend = choose_backend(m.quant_backend, device) if m.name == "qlora" else None
    if backend == "bitsandbytes":
        model, tok, rm = load_bnb_base(cfg, device)
    else:
        model, tok, rm = load_causal_lm(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device)
    train_blk, val_blk = pack(train_docs, tok, d.max_length), pack(val_docs, tok, d.max_length) if val_docs else []
    n_tokens = sum(len(b.input_ids) for b in train_blk)
    console.print(f"data: {len(train_docs)} train documents, {n_tokens:,} tokens -> {len(train_blk)} train / "
                  f"{len(val_blk)} validation blocks of {d.max_length} tokens")
    template = build_template(d.template, tok, d.system, d.custom_template)

    resume_step = resume_point(run, cfg)
    run.begin(cfg, rm.path, template, resume_step, console)
    amp = autocast_dtype(cfg.train.precision, device)

    # ---- the base, before ------------------------------------------------------------------------------------
    if m.name == "qlora" and backend == "tunelab":
        quantize_base(model, m.quant_type, m.double_quant, compute_dtype=amp)
    t = time.perf_counter()
    val_before = reply_nll(model, val_blk, tok.pad_token_id, cfg.train.batch_size, amp)
    prompts = list(cfg.eval.prompts)
    base_text = continue_text(model, tok, prompts, cfg.eval.max_new_tokens, amp) if prompts else []
    if val_blk:
        console.print(f"base perplexity {perplexity(val_before):.2f} on held-out blocks "
                      f"({time.perf_counter() - t:.0f}s)")

    # ---- adapt + train ---------------------------------------------------------------------------------------
    if m.name in ("lora", "qlora"):
        model = apply_lora(model, m)
    elif m.name == "freeze":
        freeze_all_but_last(model, m.freeze_layers)
    if wants_checkpointing(cfg, model):
        enable_checkpointing(model)
    trainable = trainable_summary(model)
    console.print(trainable)
    logger = MetricsLogger(run, cfg.train.report_to)
    try:
        result = train_loop(model, train_blk, val_blk, cfg.train, tok.pad_token_id, log=logger, quiet=quiet,
                            before_step=restore_bnb_training_layout if backend == "bitsandbytes" else None,
                            ckpt_dir=run.path / "checkpoints", resume=resume_step is not None)
    finally:
        logger.close()

    # ---- after + save ----------------------------------------------------------------------------------------
    val_after = reply_nll(model, val_blk, tok.pad_token_id, cfg.train.batch_size, amp)
    tuned_text = continue_text(model, tok, prompts, cfg.eval.max_new_tokens, amp) if prompts else []
    run.save_weights(model, m.name, tok)
    samples = [{"prompt": p, "base": b, "tuned": a} for p, b, a in zip(prompts, base_text, tuned_text)]
    out = PretrainOutcome(run.path, result, val_before, val_after, trainable, len(train_docs), n_tokens,
                          len(train_blk), len(val_blk), d.max_length, samples)
    write_pretrain_report(run, cfg, out)
    if result.stopped_early != "interrupted":
        run.mark_done()
    return out


def write_pretrain_report(run: RunDir, cfg: RunConfig, out: PretrainOutcome) -> None:
    from tunelab.runs.report import cell, plot_loss

    res = out.result
    has_plot = plot_loss(run)
    lines = [f"# Run `{run.path.name}` (continued pretraining)", "",
             f"- model: `{cfg.model.name}`, method: `{cfg.method.name}`", f"- {out.trainable}",
             f"- data: {out.n_docs} train documents, {out.n_tokens:,} tokens, packed into blocks of {out.block_size} "
             f"tokens: {out.n_train} train / {out.n_val} validation blocks",
             "- documents are joined with EOS; a block may span two documents and attention crosses the boundary",
             f"- {res.steps} optimizer steps in {res.train_seconds:.1f}s, {res.trained_tokens:,} trained tokens "
             f"({res.tokens_per_s:,.0f} tokens/s)", ""]
    if not math.isnan(out.val_before):
        lines += ["## Held-out perplexity (validation blocks, every token)", "",
                  "| | NLL per token | perplexity |", "|---|---|---|",
                  f"| base | {out.val_before:.4f} | {perplexity(out.val_before):.2f} |"]
        lines += [f"| epoch {ep} | {v:.4f} | {perplexity(v):.2f} |" for ep, v in res.val_history]
        lines += [f"| final (kept) | {out.val_after:.4f} | {perplexity(out.val_after):.2f} |", ""]
    if has_plot:
        lines += ["![loss curve](loss.png)", ""]
    if out.samples:
        lines += ["## Continuations of `eval.prompts` (greedy): base vs tuned", "",
                  "| text | base | tuned |", "|---|---|---|"]
        lines += [f"| {cell(s['prompt'])} | {cell(s['base'])} | {cell(s['tuned'])} |" for s in out.samples]
        lines.append("")
    run.write_text("report.md", "\n".join(lines))
