"""The training loop shared by every recipe: `train_loop`, a `Trainer` built and run in one call.

    Trainer(model, train, val, cfg, objective)   AdamW + scheduler over the trainable parameters
      .resume()            continue from the latest checkpoint in ckpt_dir (weights, optimizer,
                           scheduler, RNG, data position, evaluation history)
      .run()               epochs of `step` until cfg.max_steps or cfg.epochs are done; then the
                           best evaluation's weights are restored (keep_best); returns TrainResult
      .step(group)         one optimizer step over a group of grad_accum micro-batches
      .evaluate(at, final) validation, best tracking, early stopping
      .checkpoint(group)   save the position (next micro-batch group of this epoch) and state

One optimizer step = grad_accum x W micro-batches of batch_size examples (W processes: train/
distributed.py; 1 without a launcher), so an epoch of n examples is
ceil(ceil(n / batch_size) / (grad_accum x W)) steps (`total_steps`); e.g. the quickstart: 84 examples,
batch 8, accumulation 1, one process -> ceil(84 / 8) = 11 steps per epoch x 3 epochs = 33 steps.
Loss per micro-batch = the objective's summed loss / its count (for causal LM: sum of reply-token
NLL / reply tokens in the micro-batch), divided by the micro-batches in the (global) group; with
W > 1 each rank trains its share of the group and the gradients are summed once per step.
Only rank 0 logs and writes checkpoints; every rank resumes from the same one.
bf16 autocast on CPUs with AVX-512-BF16 and on CUDA with bf16 (master weights and adapters stay
fp32). Evaluation = the objective's `evaluate` on the validation set each epoch (or every
`cfg.eval_every` steps); with keep_best the best evaluation's trainable weights are restored at
the end. "Best" and early stopping's "improvement" follow `cfg.metric_for_best` (`score_of`).

Why our own loop and not transformers.Trainer: it is short, it controls exactly when the 4-bit
base runs in eval mode (bitsandbytes' CPU repacking trap: `before_step`), it counts trained tokens
for the progress bar and metrics, and it lets a recipe batch by length without a custom sampler.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from tunelab.config import TrainConfig
from tunelab.data.tokenize import make_batches
from tunelab.errors import TunelabError
from tunelab.runtime.allocator import keep_freed_memory, peak_rss_mb, start_peak_rss
from tunelab.runtime.precision import autocast_dtype
from tunelab.train import distributed as dist
from tunelab.train.interrupts import Interrupts
from tunelab.train.objective import CausalLMObjective, Objective
from tunelab.train.result import Progress, TrainResult  # noqa: F401  (TrainResult: re-exported for the recipes)
from tunelab.train.optim import make_optimizer
from tunelab.train.state import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    trainable_state,
)


def total_steps(n_examples: int, cfg: TrainConfig, world: int = 1) -> int:
    per_epoch = math.ceil(math.ceil(n_examples / cfg.batch_size) / (cfg.grad_accum * world))
    return cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(per_epoch * cfg.epochs))


def score_of(metrics: dict, metric: str) -> float:
    """Higher is better: -val_loss for "loss" (and an unsettled "auto"), else the metric itself
    (accuracy, macro_f1: what a classify objective's `evaluate` reports)."""
    if metric in ("loss", "auto"):
        return -metrics["val_loss"]
    if metric not in metrics:
        raise TunelabError(f"the validation reports no {metric}", where="train.metric_for_best",
                           hint=f"use one of: loss, {', '.join(k for k in metrics if k != 'val_loss')}")
    return metrics[metric]


def _should_eval(cfg: TrainConfig, step: int, epoch_end: bool) -> bool:
    if cfg.eval_every == "never":
        return False
    if cfg.eval_every == "epoch":
        return epoch_end
    return step % int(cfg.eval_every) == 0 or epoch_end


class Trainer:
    """One training run of `model`'s trainable parameters; the state lives in attributes.

    Position: `epoch` (0-based, the epoch being trained), `group` (the index of the first
    micro-batch of the step being trained, in that epoch's `make_batches`), `start_group` (where
    the current epoch starts: 0, or a resumed checkpoint's group). Evaluation state: `best_state`
    (the best evaluation's trainable weights, keep_best only), `bad_evals` (evaluations in a row
    without improvement). `res` (TrainResult) holds the step count, trained tokens and the
    validation history.
    """

    def __init__(self, model, train: list, val: list, cfg: TrainConfig, objective: Objective,
                 log=lambda rec: None, quiet: bool = False, before_step=None, ckpt_dir: Path | None = None,
                 final_checkpoint: bool = False):
        from transformers import get_scheduler

        self.model, self.train_data, self.val_data, self.cfg, self.objective = model, train, val, cfg, objective
        self.log, self.quiet, self.before_step, self.ckpt_dir = log, quiet, before_step, ckpt_dir
        self.device = next(model.parameters()).device
        # W processes: a step's group is `accum` = grad_accum x W micro-batches, rank r trains group[r::W]
        self.world, self.rank = dist.world_size(), dist.rank()
        self.accum, self.main = cfg.grad_accum * self.world, self.rank == 0
        if dist.accelerate_kind():
            raise TunelabError(f"the tunelab engine trains with DDP semantics; accelerate's "
                               f"{dist.accelerate_kind()} config applies to the TRL tasks (reward, dpo)",
                               where="accelerate config", hint="launch with examples/accelerate/ddp.yaml "
                               "(see docs/distributed.md)")
        if cfg.keep_freed_memory and self.device.type == "cpu":  # true or auto
            keep_freed_memory()
        start_peak_rss()  # record the training phase's peak, not loading's
        self.amp = autocast_dtype(cfg.precision, self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise TunelabError("nothing to train: no parameter requires grad", where="method")
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        torch.manual_seed(cfg.seed)
        if self.world > 1:
            dist.init(self.device)
            dist.broadcast_params(self.params)
        self.opt = make_optimizer(self.params, cfg.optim, cfg.lr, cfg.weight_decay, self.device)
        self.total = total_steps(len(train), cfg, self.world)
        self.sched = get_scheduler(cfg.scheduler if cfg.scheduler != "constant" else "constant_with_warmup",
                                   self.opt, num_warmup_steps=int(cfg.warmup_ratio * self.total),
                                   num_training_steps=self.total)
        self.res, self.best_state, self.bad_evals = TrainResult(), None, 0
        self.best_score = None  # score_of(the best evaluation) (higher is better); None before the first
        self.epoch, self.start_group, self.group, self.n_batches = 0, 0, 0, 0
        self.stop, self.final_checkpoint = False, final_checkpoint
        # the last safe point: {epoch, group, pending_eval, rng} (`mark`); what a Ctrl-C checkpoint saves
        self.safe, self.pending_eval, self.last_stats, self.reported, self.saved = None, None, None, 0, None
        self.interrupts = Interrupts()

    # ---- resume and checkpoints ------------------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the latest complete checkpoint in ckpt_dir, if there is one."""
        if self.ckpt_dir is None or (last := latest_checkpoint(self.ckpt_dir)) is None:
            return
        saved = load_checkpoint(last, self.model, self.opt, self.sched)
        pos, r, res = saved["position"], saved["result"], self.res
        if pos.get("world", 1) != self.world:
            raise TunelabError(f"{last} was trained on {pos.get('world', 1)} processes, this run has {self.world}",
                               where="--nproc", hint=f"resume with --nproc {pos.get('world', 1)}")
        res.steps, self.epoch, self.start_group = pos["step"], pos["epoch"], pos["group"]
        res.trained_tokens, res.val_history = r["trained_tokens"], [tuple(x) for x in r["val_history"]]
        res.best_val, res.best_epoch, self.best_state = r["best_val"], r["best_epoch"], r.get("best_state")
        self.bad_evals, self.best_score = r.get("bad_evals", 0), r.get("best_score")
        res.resumed_from = self.saved = res.steps
        self.group, self.pending_eval = self.start_group, pos.get("pending_eval")
        if self.cfg.early_stopping_patience and self.bad_evals >= self.cfg.early_stopping_patience:
            self.stop, res.stopped_early = True, self.early_stop_message()  # stopped; interrupted before the end

    def mark(self, group: int, pending_eval=None) -> None:
        """A safe point: the run continues at micro-batch group `group` of epoch `epoch`, after the
        evaluation at `pending_eval` (None: none due), with the RNG as it is now. Weights, optimizer,
        scheduler, counts and evaluation history change only in `critical()` sections ending in one."""
        self.safe = {"epoch": self.epoch, "group": group, "pending_eval": pending_eval, "rng": rng_state()}

    def checkpoint(self, group: int | None = None, final: bool = False) -> None:
        """Save the state at the last safe point (`mark`; skipped when a checkpoint of this step exists),
        or, given `group`, at this epoch's micro-batch group `group` with the RNG as it is now. `final`:
        the run's last step (position["final"]; the run itself, not one of its checkpoints to list)."""
        if self.ckpt_dir is None or (group is None and self.saved == self.res.steps):
            return  # (every rank decides alike: `saved` is the step of the last checkpoint written or resumed)
        self.saved = self.res.steps
        if not self.main:  # rank 0 writes; the others wait so none runs ahead of a checkpoint being written
            dist.barrier()
            return
        res = self.res
        safe = self.safe if group is None else {"epoch": self.epoch, "group": group, "pending_eval": None,
                                                 "rng": rng_state()}
        position = {"step": res.steps, "epoch": safe["epoch"], "group": safe["group"]}
        if safe["pending_eval"] is not None:
            position["pending_eval"] = safe["pending_eval"]
        if final:
            position["final"] = True
        if self.world > 1:
            position["world"] = self.world
        with self.interrupts.critical():
            save_checkpoint(self.ckpt_dir, self.model, self.opt, self.sched, position,
                            {"trained_tokens": res.trained_tokens, "val_history": res.val_history,
                             "best_val": res.best_val, "best_epoch": res.best_epoch, "best_state": self.best_state,
                             "bad_evals": self.bad_evals, "best_score": self.best_score}, rng=safe["rng"],
                            keep=None if self.cfg.keep_checkpoints == "all" else 2)
        if self.world > 1:
            dist.barrier()

    # ---- one optimizer step ----------------------------------------------------------------------------------
    def step(self, group: list) -> tuple[float, float, int]:
        """One optimizer step over `group` (micro-batches of example indices, all ranks'); returns
        (loss summed over the micro-batches, gradient norm before clipping, trained tokens)."""
        if self.before_step is not None:
            self.before_step(self.model)
        loss_val, ntok = 0.0, 0
        for idx in dist.shard(group, self.world, self.rank):  # W = 1: the whole group
            batch = {k: v.to(self.device) for k, v in self.objective.collate([self.train_data[i] for i in idx]).items()}
            with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                total, n = self.objective.loss_sum(self.model, batch)
            loss = total / max(n, 1) / len(group)
            loss.backward()
            loss_val += float(loss.detach())
            ntok += self.objective.trained_tokens(batch, n)
        if self.world > 1:  # the accumulation boundary: the one gradient sync of the step
            dist.sync_grads(self.params)
            loss_val, ntok = dist.sum_floats(loss_val, ntok, device=self.device)
            ntok = int(ntok)
        if not math.isfinite(loss_val):
            raise TunelabError(f"loss became {loss_val} at step {self.res.steps + 1}", where="train",
                               hint="lower train.lr or use train.precision=fp32")
        with self.interrupts.critical():  # the update and the new safe point, or neither
            gnorm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm))
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            res, nb, nxt = self.res, self.n_batches, self.group + self.accum
            res.steps, res.trained_tokens, res.steps_run, res.tokens_run = \
                res.steps + 1, res.trained_tokens + ntok, res.steps_run + 1, res.tokens_run + ntok
            at = round(self.epoch + min(nxt, nb) / nb, 3) if nb else float(self.epoch)
            self.last_stats = (at, loss_val, gnorm, ntok)
            due = bool(self.val_data) and nb and nxt < nb and _should_eval(self.cfg, res.steps, False)
            self.mark(nxt, at if due else None)
        return loss_val, gnorm, ntok

    def report_step(self, at: float, loss_val: float, gnorm: float, ntok: int) -> None:
        """The step's metrics record (every cfg.logging_steps) and the progress bar; tokens/s is
        `TrainResult.tokens_per_s` so far: this process's trained tokens over its training time."""
        now = time.perf_counter()
        tps = self.res.tokens_run / max(now - self.t0, 1e-9)
        lr = self.sched.get_last_lr()[0]
        if self.res.steps % self.cfg.logging_steps == 0:
            self.log({"step": self.res.steps, "epoch": at, "loss": round(loss_val, 5), "lr": lr,
                      "grad_norm": round(gnorm, 5), "tokens_per_s": round(tps, 1),
                      "elapsed_s": round(now - self.t0, 2), "peak_rss_mb": round(peak_rss_mb(), 1)})
        self.bar.update(f"loss {loss_val:.3f}  lr {lr:.1e}  {tps:,.0f} tok/s")
        self.reported = self.res.steps

    # ---- evaluation ------------------------------------------------------------------------------------------
    def evaluate(self, at: float, final: bool) -> bool:
        """Validate, track the best (by `cfg.metric_for_best`; res.best_val is that evaluation's val loss),
        return True when early stopping says stop."""
        cfg, res = self.cfg, self.res
        metrics = self.validate()
        v = metrics["val_loss"]
        with self.interrupts.critical():  # the bookkeeping and the safe point after it, or neither
            res.val_history.append((at, v))
            self.log({"step": res.steps, "epoch": at, **{k: round(x, 5) if isinstance(x, float) else x
                                                           for k, x in metrics.items()}})
            s, best = score_of(metrics, cfg.metric_for_best), self.best_score
            improved = best is None or s > best + cfg.early_stopping_min_delta  # comparisons with nan are False
            if best is None or s > best:
                self.best_score, res.best_val, res.best_epoch = s, v, at
                if cfg.keep_best:
                    self.best_state = trainable_state(self.model) if not final else None
            self.bad_evals = 0 if improved else self.bad_evals + 1
            if self.safe is not None:
                self.safe = {**self.safe, "pending_eval": None, "rng": rng_state()}
        self.model.train()
        return bool(cfg.early_stopping_patience and self.bad_evals >= cfg.early_stopping_patience)

    def validate(self) -> dict:
        """The objective's validation metrics; with W > 1 reduced over the ranks: each evaluates
        val[r::W] and the summed (NLL, tokens) give the exact mean (`evaluate_sums`), or, for an
        objective without sums, rank 0 evaluates everything and sends the metrics to the others."""
        if self.world == 1:
            return self.objective.evaluate(self.model, self.val_data, self.amp)
        if hasattr(self.objective, "evaluate_sums"):
            mine = dist.shard(self.val_data, self.world, self.rank)
            total, count = self.objective.evaluate_sums(self.model, mine, self.amp) if mine else (0.0, 0)
            total, count = dist.sum_floats(total, count, device=self.device)
            return {"val_loss": total / count if count else float("nan")}
        metrics = self.objective.evaluate(self.model, self.val_data, self.amp) if self.main else None
        return dist.broadcast_object(metrics)

    # ---- epochs and the whole run ----------------------------------------------------------------------------
    def run_epoch(self) -> None:
        """The steps of epoch `epoch` from `start_group` on, then its end (`end_epoch`)."""
        cfg, res = self.cfg, self.res
        batches = make_batches(self.train_data, cfg.batch_size, cfg.seed, self.epoch, length=self.objective.length)
        self.n_batches = len(batches)
        for g in range(self.start_group, len(batches), self.accum):
            self.group = g
            if res.steps >= self.total:
                break
            self.step(batches[g:g + self.accum])
            self.report_step(*self.last_stats)
            if self.safe["pending_eval"] is not None and self.evaluate(self.safe["pending_eval"],
                                                                       final=res.steps >= self.total):
                self.stop = True
                break
            if cfg.save_every and res.steps % cfg.save_every == 0 and res.steps < self.total:
                self.checkpoint()
        self.start_group = 0
        self.end_epoch()

    def end_epoch(self) -> None:
        """Epoch-end evaluation, then the early-stopping record or the epoch-end checkpoint."""
        res = self.res
        with self.interrupts.critical():
            if not self.stop:
                self.epoch += 1
                due = bool(self.val_data) and _should_eval(self.cfg, res.steps, True)
                self.mark(0, self.epoch if due else None)
        at_end = res.steps >= self.total
        if not self.stop and self.safe["pending_eval"] is not None:
            self.stop = self.evaluate(self.epoch, final=at_end)
        if self.stop:
            self.stopped_early()
        elif not at_end:
            self.checkpoint()

    def early_stop_message(self) -> str:
        return f"early stopping: no improvement in {self.cfg.early_stopping_patience} evaluations"

    def stopped_early(self) -> None:
        self.res.stopped_early = self.early_stop_message()
        self.log({"step": self.res.steps, "event": "early_stopping", "best_val": self.res.best_val})

    def run(self) -> TrainResult:
        """Train to the end (or early stop); Ctrl-C: `save_interrupted`, stopped_early = "interrupted"."""
        self.bar = Progress(self.total, self.quiet or not self.main, done=self.res.steps)
        self.t0 = time.perf_counter()
        self.interrupts.install()
        try:
            self.model.train()
            self.mark(self.start_group, self.pending_eval)
            if self.pending_eval is not None and self.evaluate(self.pending_eval, final=self.res.steps >= self.total):
                self.stop = True  # the evaluation a Ctrl-C cut short, then where it left off
                self.stopped_early()
            while self.res.steps < self.total and not self.stop:
                self.run_epoch()
            if self.final_checkpoint:  # a Ctrl-C in the recipe's last evaluation or save loses no step
                self.checkpoint(final=True)
        except KeyboardInterrupt:
            self.save_interrupted()
        finally:
            self.interrupts.uninstall()
            self.bar.close()
            self.res.train_seconds = time.perf_counter() - self.t0
            self.res.peak_rss_mb = peak_rss_mb()
        self.finish()
        return self.res

    def save_interrupted(self) -> None:
        """Ctrl-C: checkpoint the last safe point. A step cut short is dropped (its gradients, and the
        dropout draws it made: the RNG is the safe point's), an evaluation cut short is saved as
        pending (the resumed run does it first), so the resumed run trains exactly what this one would
        have. Nothing is validated on the way out; a second Ctrl-C stops the save, the last checkpoint stays."""
        self.res.stopped_early = "interrupted"
        self.opt.zero_grad(set_to_none=True)
        if self.safe is None:
            return
        if self.reported < self.res.steps and self.last_stats is not None:
            self.report_step(*self.last_stats)  # the last step's row, so metrics.jsonl holds every saved step
        self.checkpoint()

    def finish(self) -> None:
        """keep_best: the best evaluation's weights back into the model; otherwise the last
        evaluation is the result's best. The model is left in eval mode."""
        res = self.res
        last_eval = res.val_history[-1][0] if res.val_history else None
        if self.cfg.keep_best and res.val_history and res.best_epoch != last_eval and self.best_state is not None:
            with torch.no_grad():
                by_name = dict(self.model.named_parameters())
                for n in self.names:
                    by_name[n].copy_(self.best_state[n])
        if res.val_history and not self.cfg.keep_best:
            res.best_val, res.best_epoch = res.val_history[-1][1], res.val_history[-1][0]
        self.model.eval()


def train_loop(model, train: list, val: list, cfg: TrainConfig, pad_id: int | None = None,
               log=lambda rec: None, quiet: bool = False, before_step=None, ckpt_dir: Path | None = None,
               resume: bool = False, objective: Objective | None = None,
               final_checkpoint: bool = False) -> TrainResult:
    """Train `model`'s trainable parameters in place; returns what happened.

    `objective` says what is optimized (default: causal-LM NLL on target tokens, needs pad_id).
    Validation runs each epoch, or every `cfg.eval_every` steps; keep_best restores the best
    evaluation's trainable weights; early stopping ends training after
    `cfg.early_stopping_patience` evaluations that do not beat the best by `min_delta`.

    With `ckpt_dir`, a checkpoint is saved every `cfg.save_every` steps (0 = none mid-epoch), at
    each epoch end, at the end with `final_checkpoint`, and on Ctrl-C (result.stopped_early =
    "interrupted"); `resume` continues from the latest one exactly.

    `before_step(model)` runs before each optimizer step's forward passes (used to undo a
    quantization backend's inference repacking).
    """
    if objective is None:
        if pad_id is None:
            raise ValueError("train_loop needs an objective or a pad_id")
        objective = CausalLMObjective(pad_id, cfg.batch_size)
    trainer = Trainer(model, train, val, cfg, objective, log=log, quiet=quiet, before_step=before_step,
                      ckpt_dir=ckpt_dir, final_checkpoint=final_checkpoint)
    if resume:
        trainer.resume()
    return trainer.run()
