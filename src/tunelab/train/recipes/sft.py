"""Supervised fine-tuning of a chat model (LoRA, QLoRA, full, freeze, QAT, BitNet).

setup:  resolve the run dir -> data (normalize) -> model + tokenizer -> template -> tokenize, mask
before: validation loss and sample replies of the untouched base (quantized first for qlora)
train:  adapt (lora | qlora | full | freeze | qat | bitnet) -> engine.train_loop
save:   adapter (or full model, or packed quantized model), template, config, metrics, report, DONE (last)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from tunelab.config import RunConfig
from tunelab.data.dataset import load_splits
from tunelab.data.templates import build_template
from tunelab.data.tokenize import tokenize_all
from tunelab.errors import TunelabError
from tunelab.losses import reply_nll
from tunelab.runs.report import suffix_rate
from tunelab.runs.rundir import RunDir
from tunelab.runtime.precision import autocast_dtype
from tunelab.train.distributed import is_main
from tunelab.train.engine import TrainResult
from tunelab.train.loggers import MetricsLogger
from tunelab.train.recipes._common import (Outcome, adapt, begin_run, finish_run, load_base, quantize_for_training,
                                           setup_run, train_engine)
from tunelab.train.reports import write_sft_report
from tunelab.train.resolve import resolve


@dataclass
class SftOutcome(Outcome):
    run_dir: Path
    result: TrainResult
    val_before: float
    val_after: float
    trainable: str
    samples: list = field(default_factory=list)  # dicts: prompt, base, tuned
    n_train: int = 0
    n_val: int = 0
    dropped: int = 0
    suffix: str | None = None  # eval.expect_suffix

    def samples_table(self):
        if not self.samples:
            return None
        return "held-out prompts: base vs tuned", [(s["prompt"], s["base"], s["tuned"]) for s in self.samples]

    def summary_lines(self) -> list[str]:
        lines = []
        if self.suffix and self.samples:
            b = suffix_rate([s["base"] for s in self.samples], self.suffix)
            a = suffix_rate([s["tuned"] for s in self.samples], self.suffix)
            lines.append(f"replies ending with {self.suffix!r}: base {b:.0%} -> tuned {a:.0%}")
        if not math.isnan(self.val_before):
            lines.append(f"validation loss (reply tokens): base {self.val_before:.3f} -> tuned {self.val_after:.3f}")
        r = self.result
        lines.append(f"{r.speed_line()}")
        lines.append(f"run saved to [bold]{self.run_dir}[/bold] (report.md, loss.png, adapter/)")
        return lines


@dataclass
class SftData:
    """Tokenized conversations (reply tokens are the targets) and the prompts sampled before/after."""

    train: list
    val: list
    dropped: int  # training examples with no reply token left after truncation
    prompts: list[str]


def run_sft(cfg: RunConfig, quiet: bool = False, console: Console | None = None) -> SftOutcome:
    from tunelab.adapters.lora import trainable_summary

    # ---- setup: data first, so bad input fails before any model loads or anything is written -------------
    console, run = setup_run(cfg, quiet, console)
    cfg = resolve(cfg)  # every auto settled before anything loads: config.yaml records them (train/resolve.py)
    train_ex, val_ex = load_splits(cfg)
    base = load_base(cfg)
    tok = base.tok
    template = build_template(cfg.data.template, tok, cfg.data.system, cfg.data.custom_template)
    data = tokenize(cfg, tok, template, train_ex, val_ex, console)
    resume_step = begin_run(run, cfg, base.rm.path, template, console)
    amp = autocast_dtype(cfg.train.precision, base.device)

    # ---- before: the base ----------------------------------------------------------------------------------
    if quantize_for_training(base, cfg, amp):
        m = cfg.method
        kept = m.quant_type == "gguf"  # the GGUF's own blocks, kept as stored (quant/gguf_load.py)
        console.print("base kept in its GGUF blocks (tunelab backend)" if kept else
                      f"base quantized to {m.quant_type.upper()}{'+DQ' if m.double_quant else ''} (tunelab backend)")
    t = time.perf_counter()
    main = is_main()  # under N processes rank 0 alone measures, samples and writes (train/distributed.py)
    val_before, base_replies = measure(base.model, tok, template, data, cfg, amp) if main else (float("nan"), [])
    if main and (data.prompts or data.val):
        console.print(f"base model evaluated in {time.perf_counter() - t:.0f}s (val loss {val_before:.3f})")

    # ---- train ---------------------------------------------------------------------------------------------
    model = adapt(base.model, cfg)
    trainable = trainable_summary(model)
    console.print(trainable)
    logger = MetricsLogger(run, cfg.train.report_to)
    result = train_engine(model, data.train, data.val, cfg, run, logger, quiet, resume_step,
                          pad_id=tok.pad_token_id, before_step=base.before_step)

    # ---- after + save --------------------------------------------------------------------------------------
    val_after, tuned_replies = measure(model, tok, template, data, cfg, amp) if main else (float("nan"), [])
    if main:
        save_weights(run, model, cfg, tok)
    samples = [{"prompt": p, "base": b, "tuned": a} for p, b, a in zip(data.prompts, base_replies, tuned_replies)]
    outcome = SftOutcome(run.path, result, val_before, val_after, trainable, samples, len(data.train),
                         len(data.val), data.dropped, cfg.eval.expect_suffix)
    if main:
        write_sft_report(run, cfg, outcome)
    finish_run(run, result, cfg.train.keep_checkpoints)
    return outcome


# ---- the steps -----------------------------------------------------------------------------------------------
def tokenize(cfg: RunConfig, tok, template, train_ex, val_ex, console) -> SftData:
    """Conversations -> token ids with reply-token labels (`data.train_on`), cut to `data.max_length`."""
    d = cfg.data
    opts = dict(reasoning=d.reasoning, earlier_reasoning=d.earlier_reasoning)  # learn|mask, drop|keep
    train_tok, dropped = tokenize_all(train_ex, template, tok, d.max_length, d.truncation_side, d.train_on, **opts)
    val_tok, _ = tokenize_all(val_ex, template, tok, d.max_length, d.truncation_side, d.train_on, **opts)
    if not train_tok:
        raise TunelabError("no training example has a reply token left after truncation", where="data.max_length",
                           hint="raise data.max_length or use data.truncation_side=left")
    console.print(f"data: {len(train_tok)} train / {len(val_tok)} validation examples"
                  + (f" ({dropped} dropped: no reply left after truncation)" if dropped else ""))
    return SftData(train_tok, val_tok, dropped, eval_prompts(cfg, val_ex))


def eval_prompts(cfg: RunConfig, val_examples) -> list[str]:
    """`eval.prompts` + the last user turn of the first `eval.from_validation` validation conversations."""
    prompts = list(cfg.eval.prompts)
    for ex in val_examples[: cfg.eval.from_validation]:
        user = [m["content"] for m in ex.messages if m["role"] == "user"]
        prompts.append(user[-1])
    return prompts


def measure(model, tok, template, data: SftData, cfg: RunConfig, amp) -> tuple[float, list[str]]:
    """(validation loss = mean NLL per reply token, nan without a validation set; greedy replies to the prompts)."""
    from tunelab.infer.generate import Generator

    val = reply_nll(model, data.val, tok.pad_token_id, cfg.train.batch_size, amp) if data.val else float("nan")
    if not data.prompts:
        return val, []
    convs = [[{"role": "user", "content": p}] for p in data.prompts]
    return val, Generator(model, tok, template, amp).reply_batch(convs, max_new_tokens=cfg.eval.max_new_tokens)


def save_weights(run: RunDir, model, cfg: RunConfig, tok) -> None:
    """adapter/, model/ or quantized/, as the method saves (`RunDir.save_weights`, `Method.save`); qat /
    bitnet: the real quantized model, packed (it computes what the fake-quantized one computed in training)."""
    run.save_weights(model, cfg.method.name, tok, source=cfg.model.name)
