"""Supervised fine-tuning of a chat model (LoRA, QLoRA, full, freeze, QAT, BitNet).

setup:  resolve the run dir -> load model + tokenizer -> template -> data (normalize, tokenize, mask)
before: validation loss and sample replies of the untouched base
train:  adapt (lora | qlora | full | freeze | qat | bitnet) -> engine.train_loop
save:   adapter (or full model, or packed quantized model), template, config, metrics, report, DONE (last)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from tunelab.config import RunConfig
from tunelab.data.dataset import load_splits
from tunelab.data.templates import build_template
from tunelab.data.tokenize import tokenize_all
from tunelab.errors import TunelabError
from tunelab.losses import reply_nll
from tunelab.train.activation_ckpt import enable as enable_checkpointing, wants_checkpointing
from tunelab.train.recipes._common import load_bnb_base, resume_point
from tunelab.train.engine import TrainResult, train_loop
from tunelab.runtime.precision import autocast_dtype
from tunelab.train.loggers import MetricsLogger
from tunelab.runs.rundir import RunDir


@dataclass
class SftOutcome:
    run_dir: Path
    result: TrainResult
    val_before: float
    val_after: float
    trainable: str
    samples: list = field(default_factory=list)  # dicts: prompt, base, tuned
    n_train: int = 0
    n_val: int = 0
    dropped: int = 0


def _eval_prompts(cfg: RunConfig, val_examples) -> list[str]:
    prompts = list(cfg.eval.prompts)
    for ex in val_examples[: cfg.eval.from_validation]:
        user = [m["content"] for m in ex.messages if m["role"] == "user"]
        prompts.append(user[-1])
    return prompts


def _sample(model, tok, template, prompts, max_new_tokens, amp) -> list[str]:
    from tunelab.infer.generate import Generator

    gen = Generator(model, tok, template, amp)
    return gen.reply_batch([[{"role": "user", "content": p}] for p in prompts], max_new_tokens=max_new_tokens)


def run_sft(cfg: RunConfig, quiet: bool = False, console: Console | None = None) -> SftOutcome:
    from tunelab.adapters.lora import apply_lora, freeze_all_but_last, trainable_summary
    from tunelab.adapters.qlora import choose_backend, quantize_base, restore_bnb_training_layout
    from tunelab.models.load import load_causal_lm, pick_device

    console = console or Console(stderr=True, quiet=quiet)
    torch.manual_seed(cfg.train.seed)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    run = RunDir(cfg.run_dir())
    run.refuse_if_done(cfg.output.overwrite)  # before any data or model loads

    # ---- data first: bad input fails before any model loads or anything is written --------------------------
    train_ex, val_ex = load_splits(cfg)
    m = cfg.method
    device = pick_device(cfg.model.device)
    backend = choose_backend(m.quant_backend, device) if m.name == "qlora" else None
    if backend == "bitsandbytes":
        model, tok, rm = load_bnb_base(cfg, device)
    else:
        model, tok, rm = load_causal_lm(cfg.model.name, dtype=cfg.model.dtype, device=cfg.model.device)
    template = build_template(cfg.data.template, tok, cfg.data.system, cfg.data.custom_template)
    d = cfg.data
    train_tok, dropped = tokenize_all(train_ex, template, tok, d.max_length, d.truncation_side, d.train_on)
    val_tok, _ = tokenize_all(val_ex, template, tok, d.max_length, d.truncation_side, d.train_on)
    if not train_tok:
        raise TunelabError("no training example has a reply token left after truncation", where="data.max_length",
                           hint="raise data.max_length or use data.truncation_side=left")
    console.print(f"data: {len(train_tok)} train / {len(val_tok)} validation examples"
                  + (f" ({dropped} dropped: no reply left after truncation)" if dropped else ""))

    resume_step = resume_point(run, cfg)
    run.begin(cfg, rm.path, template, resume_step, console)
    amp = autocast_dtype(cfg.train.precision, device)

    # ---- the base, before ------------------------------------------------------------------------------------
    if m.name == "qlora" and backend == "tunelab":
        quantize_base(model, m.quant_type, m.double_quant, compute_dtype=amp)
        console.print(f"base quantized to {m.quant_type.upper()}{'+DQ' if m.double_quant else ''} (tunelab backend)")
    prompts = _eval_prompts(cfg, val_ex)
    t = time.perf_counter()
    val_before = reply_nll(model, val_tok, tok.pad_token_id, cfg.train.batch_size, amp) if val_tok else float("nan")
    base_replies = _sample(model, tok, template, prompts, cfg.eval.max_new_tokens, amp) if prompts else []
    if prompts or val_tok:
        console.print(f"base model evaluated in {time.perf_counter() - t:.0f}s (val loss {val_before:.3f})")

    # ---- adapt + train ---------------------------------------------------------------------------------------
    if m.name in ("lora", "qlora"):
        model = apply_lora(model, m)
    elif m.name == "freeze":
        freeze_all_but_last(model, m.freeze_layers)
    elif m.name in ("qat", "bitnet"):
        from tunelab.quant.qat import prepare_qat, to_bitnet

        # all weights train as fp32 latents; the forward sees Q(W) (straight-through estimator)
        prepare_qat(model, m.qat_format) if m.name == "qat" else to_bitnet(model)
    if wants_checkpointing(cfg, model):
        enable_checkpointing(model)
    trainable = trainable_summary(model)
    console.print(trainable)
    before_step = restore_bnb_training_layout if backend == "bitsandbytes" else None
    logger = MetricsLogger(run, cfg.train.report_to)
    try:
        result = train_loop(model, train_tok, val_tok, cfg.train, tok.pad_token_id, log=logger, quiet=quiet,
                            before_step=before_step, ckpt_dir=run.path / "checkpoints",
                            resume=resume_step is not None)
    finally:
        logger.close()
    if result.stopped_early == "interrupted":
        console.print("[yellow]interrupted: saving what was trained so far[/yellow]")

    # ---- after + save ----------------------------------------------------------------------------------------
    val_after = reply_nll(model, val_tok, tok.pad_token_id, cfg.train.batch_size, amp) if val_tok else float("nan")
    tuned_replies = _sample(model, tok, template, prompts, cfg.eval.max_new_tokens, amp) if prompts else []
    if m.name in ("qat", "bitnet"):
        from tunelab.quant import ptq
        from tunelab.quant.qat import convert_qat

        # export the real quantized model: it computes what the fake-quantized one computed in training
        ptq.save(convert_qat(model), run.path / "quantized", tokenizer=tok, source=cfg.model.name)
    else:
        run.save_weights(model, m.name, tok)
    samples = [{"prompt": p, "base": b, "tuned": a} for p, b, a in zip(prompts, base_replies, tuned_replies)]
    outcome = SftOutcome(run.path, result, val_before, val_after, trainable, samples, len(train_tok), len(val_tok), dropped)
    from tunelab.eval.report import write_report

    write_report(run, cfg, outcome)
    if result.stopped_early != "interrupted":
        run.mark_done()
    return outcome


