"""The training loop shared by every recipe.

One optimizer step = grad_accum micro-batches of batch_size examples
(e.g. 8 examples x 1 accum = 8 conversations/step; 84 examples x 3 epochs / 8 = 32 steps).
Loss per micro-batch = sum of reply-token NLL / reply tokens in the micro-batch, divided by
grad_accum. bf16 autocast on CPUs with AVX-512-BF16 and on CUDA with bf16 (master weights and
adapters stay fp32). Evaluation = `reply_nll` on the validation set each epoch; with keep_best
the best epoch's trainable weights are restored at the end.

Why our own loop and not transformers.Trainer: it is ~200 lines, it controls exactly when the
4-bit base runs in eval mode (bitsandbytes' CPU repacking trap), it counts trained tokens for
the progress bar and metrics, and it lets a recipe batch by length without a custom sampler.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tunelab.config import TrainConfig
from tunelab.data.tokenize import make_batches
from tunelab.errors import TunelabError
from tunelab.runtime.allocator import keep_freed_memory, peak_rss_mb, start_peak_rss
from tunelab.runtime.precision import autocast_dtype
from tunelab.train.objective import CausalLMObjective, Objective
from tunelab.train.state import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    trainable_state,
)


@dataclass
class TrainResult:
    steps: int = 0
    train_seconds: float = 0.0
    trained_tokens: int = 0
    best_val: float = float("nan")
    best_epoch: int = -1
    val_history: list = field(default_factory=list)  # (epoch, val_nll)
    stopped_early: str | None = None
    resumed_from: int | None = None  # the step a resumed run continued from
    peak_rss_mb: float = 0.0  # peak resident memory (MiB) while training (runtime/allocator.py: peak_rss_mb)

    @property
    def tokens_per_s(self) -> float:
        return self.trained_tokens / self.train_seconds if self.train_seconds else 0.0


class Progress:
    """A rich progress bar showing loss, lr, tokens/s and ETA (or nothing when quiet)."""

    def __init__(self, total: int, quiet: bool, done: int = 0):
        self.quiet = quiet
        if quiet:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RP

        self.p = RP(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TextColumn("eta"), TimeRemainingColumn())
        self.p.start()
        self.task = self.p.add_task("train", total=total, info="", completed=done)

    def update(self, info: str, advance: int = 1) -> None:
        if not self.quiet:
            self.p.update(self.task, advance=advance, info=info)

    def close(self) -> None:
        if not self.quiet:
            self.p.stop()


def total_steps(n_examples: int, cfg: TrainConfig) -> int:
    per_epoch = math.ceil(math.ceil(n_examples / cfg.batch_size) / cfg.grad_accum)
    return cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(per_epoch * cfg.epochs))


def _should_eval(cfg: TrainConfig, step: int, epoch_end: bool) -> bool:
    if cfg.eval_every == "never":
        return False
    if cfg.eval_every == "epoch":
        return epoch_end
    return step % int(cfg.eval_every) == 0 or epoch_end


def train_loop(model, train: list, val: list, cfg: TrainConfig, pad_id: int | None = None,
               log=lambda rec: None, quiet: bool = False, before_step=None, ckpt_dir: Path | None = None,
               resume: bool = False, objective: Objective | None = None) -> TrainResult:
    """Train `model`'s trainable parameters in place; returns what happened.

    `objective` says what is optimized (default: causal-LM NLL on target tokens, needs pad_id).
    Validation runs each epoch, or every `cfg.eval_every` steps; keep_best restores the best
    evaluation's trainable weights; early stopping ends training after
    `cfg.early_stopping_patience` evaluations that do not beat the best by `min_delta`.

    With `ckpt_dir`, a checkpoint is saved every `cfg.save_every` steps (0 = none mid-epoch), at
    each epoch end, and on Ctrl-C; `resume` continues from the latest one exactly.

    `before_step(model)` runs before each optimizer step's forward passes (used to undo a
    quantization backend's inference repacking).
    """
    from transformers import get_scheduler

    if objective is None:
        if pad_id is None:
            raise ValueError("train_loop needs an objective or a pad_id")
        objective = CausalLMObjective(pad_id, cfg.batch_size)
    device = next(model.parameters()).device
    if cfg.keep_freed_memory and device.type == "cpu":  # true or auto
        keep_freed_memory()
    start_peak_rss()  # record the training phase's peak, not loading's
    amp = autocast_dtype(cfg.precision, device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TunelabError("nothing to train: no parameter requires grad", where="method")
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = total_steps(len(train), cfg)
    sched = get_scheduler(cfg.scheduler if cfg.scheduler != "constant" else "constant_with_warmup", opt,
                          num_warmup_steps=int(cfg.warmup_ratio * steps), num_training_steps=steps)
    res = TrainResult()
    best_state = None
    bad_evals = 0  # evaluations in a row without improvement (early stopping)
    epoch, start_group = 0, 0
    if resume and ckpt_dir is not None and (last := latest_checkpoint(ckpt_dir)) is not None:
        saved = load_checkpoint(last, model, opt, sched)
        pos, r = saved["position"], saved["result"]
        res.steps, epoch, start_group = pos["step"], pos["epoch"], pos["group"]
        res.trained_tokens, res.val_history = r["trained_tokens"], [tuple(x) for x in r["val_history"]]
        res.best_val, res.best_epoch, best_state = r["best_val"], r["best_epoch"], r.get("best_state")
        bad_evals = r.get("bad_evals", 0)
        res.resumed_from = res.steps
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def checkpoint(group: int) -> None:
        if ckpt_dir is not None:
            save_checkpoint(ckpt_dir, model, opt, sched, {"step": res.steps, "epoch": epoch, "group": group},
                            {"trained_tokens": res.trained_tokens, "val_history": res.val_history,
                             "best_val": res.best_val, "best_epoch": res.best_epoch, "best_state": best_state,
                             "bad_evals": bad_evals})

    def evaluate(at: float, final: bool) -> bool:
        """Validate, track the best, return True when early stopping says stop."""
        nonlocal best_state, bad_evals
        metrics = objective.evaluate(model, val, amp)
        v = metrics["val_loss"]
        res.val_history.append((at, v))
        log({"step": res.steps, "epoch": at, **{k: round(x, 5) if isinstance(x, float) else x
                                                  for k, x in metrics.items()}})
        improved = not (v >= res.best_val - cfg.early_stopping_min_delta)  # comparisons with nan are False
        if not (v >= res.best_val):
            res.best_val, res.best_epoch = v, at
            if cfg.keep_best:
                best_state = trainable_state(model) if not final else None
        bad_evals = 0 if improved else bad_evals + 1
        model.train()
        return bool(cfg.early_stopping_patience and bad_evals >= cfg.early_stopping_patience)

    bar = Progress(steps, quiet, done=res.steps)
    t0 = time.perf_counter()
    tokens_window, t_window = 0, time.perf_counter()
    g = start_group
    stop = False
    try:
        model.train()
        while res.steps < steps and not stop:
            batches = make_batches(train, cfg.batch_size, cfg.seed, epoch, length=objective.length)
            for g in range(start_group, len(batches), cfg.grad_accum):
                if res.steps >= steps:
                    break
                if before_step is not None:
                    before_step(model)
                group = batches[g:g + cfg.grad_accum]
                loss_val, ntok = 0.0, 0
                for idx in group:
                    batch = {k: v.to(device) for k, v in objective.collate([train[i] for i in idx]).items()}
                    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                        total, n = objective.loss_sum(model, batch)
                    loss = total / max(n, 1) / len(group)
                    loss.backward()
                    loss_val += float(loss.detach())
                    ntok += objective.trained_tokens(batch, n)
                if not math.isfinite(loss_val):
                    raise TunelabError(f"loss became {loss_val} at step {res.steps + 1}", where="train",
                                       hint="lower train.lr or use train.precision=fp32")
                gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                res.steps += 1
                res.trained_tokens += ntok
                tokens_window += ntok
                now = time.perf_counter()
                tps = tokens_window / max(now - t_window, 1e-9)
                lr = sched.get_last_lr()[0]
                at = round(epoch + (g + len(group)) / len(batches), 3)
                if res.steps % cfg.logging_steps == 0:
                    log({"step": res.steps, "epoch": at, "loss": round(loss_val, 5), "lr": lr,
                         "grad_norm": round(gnorm, 5), "tokens_per_s": round(tps, 1),
                         "elapsed_s": round(now - t0, 2), "peak_rss_mb": round(peak_rss_mb(), 1)})
                bar.update(f"loss {loss_val:.3f}  lr {lr:.1e}  {tps:,.0f} tok/s")
                if now - t_window > 10:
                    tokens_window, t_window = 0, now
                epoch_end = g + cfg.grad_accum >= len(batches)
                if val and not epoch_end and _should_eval(cfg, res.steps, False):
                    if evaluate(at, final=res.steps >= steps):
                        stop = True
                        break
                if cfg.save_every and res.steps % cfg.save_every == 0 and res.steps < steps:
                    checkpoint(g + cfg.grad_accum)
            start_group = 0
            epoch += 1 if not stop else 0
            at_end = res.steps >= steps
            if not stop and val and _should_eval(cfg, res.steps, True):
                stop = evaluate(epoch, final=at_end)
            if stop:
                res.stopped_early = f"early stopping: no improvement in {cfg.early_stopping_patience} evaluations"
                log({"step": res.steps, "event": "early_stopping", "best_val": res.best_val})
            elif not at_end:
                checkpoint(0)
    except KeyboardInterrupt:
        res.stopped_early = "interrupted"
        checkpoint(g)
    finally:
        bar.close()
        res.train_seconds = time.perf_counter() - t0
        res.peak_rss_mb = peak_rss_mb()
    last_eval = res.val_history[-1][0] if res.val_history else None
    if cfg.keep_best and res.val_history and res.best_epoch != last_eval and best_state is not None:
        with torch.no_grad():
            by_name = dict(model.named_parameters())
            for n in names:
                by_name[n].copy_(best_state[n])
    if res.val_history and not cfg.keep_best:
        res.best_val, res.best_epoch = res.val_history[-1][1], res.val_history[-1][0]
    model.eval()
    return res
