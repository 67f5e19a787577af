"""Preference tasks (task: reward, task: dpo): the data and TRL wiring both share.

Records: {"prompt": str | [messages ending with a user turn], "chosen": str, "rejected": str}
-> `PreferenceExample` (read by `tunelab.data.dataset.load_splits`; `data.system` applies to every pair).

Pairs are tokenized the way SFT trains and `tunelab generate` prompts, segment by segment with
tunelab's template (`data.template`):

    prompt_ids = encode(template.segments(prompt, add_generation_prompt=True))  == Generator.prompt_ids
    chosen_ids = encode(template.segments(prompt + [assistant: chosen]))[len(prompt_ids):]  (reply + end of turn)

Lengths: the prompt keeps its last `preference.max_prompt_length` tokens (the end holds the
generation prompt), then the reply is cut so prompt + reply <= `data.max_length`.

Training runs in TRL (`RewardTrainer`, `DPOTrainer`), the reference implementations; `train.*`
maps onto their TrainingArguments (`trainer_args`: train.optim by its transformers name, train.report_to
as TrainingArguments.report_to, writing where the engine's tracker would: loggers.tracker_env), and
`MetricsCallback` writes every TRL log row into metrics.jsonl through `MetricsLogger` (eval_* keys
become val_*). Under `accelerate launch` / `tunelab train --nproc N` the Trainer runs DDP (or the
config's FSDP / DeepSpeed) itself; rank 0 alone writes the run folder. TRL tasks end with the final
weights: keep_best and early stopping belong to the engine and are refused here.

Checkpoints and resume: the Trainer saves at each epoch end (every `train.save_every` steps instead
when set; the last step always), and `CheckpointCallback` makes each save the run's
`checkpoints/step-N` (state.json written last, then renamed: train/state.adopt_trainer_checkpoint),
the last two kept while training, then `train.keep_checkpoints` once DONE (finish_run). A rerun
with `train.resume: auto | yes` continues from the last one with the Trainer's own
`resume_from_checkpoint`: adapter weights, optimizer, scheduler, RNG, global step and log history
restored, the next epoch's data order drawn from the restored RNG; the resumed run's metrics.jsonl
drops the rows after the checkpoint (RunDir.begin) and does not log the "before" evaluation again.
"""

from __future__ import annotations

import math

import torch

from tunelab.config import RunConfig
from tunelab.data.formats import PreferenceExample
from tunelab.data.tokenize import encode_segments
from tunelab.errors import TunelabError
from tunelab.runs.rundir import RunDir


# ---- data ----------------------------------------------------------------------------------------------------
def load_pairs(cfg: RunConfig) -> tuple[list[PreferenceExample], list[PreferenceExample]]:
    """(train, validation) PreferenceExamples: `tunelab.data.dataset.load_splits` for task reward/dpo."""
    from tunelab.data.dataset import load_splits

    return load_splits(cfg)


def pair_ids(ex: PreferenceExample, template, tok, max_length: int, max_prompt: int) -> dict:
    """{"prompt_ids", "chosen_ids", "rejected_ids", "truncated"} for one pair (see the module docstring)."""
    prompt, _ = encode_segments(tok, template.segments(ex.prompt, add_generation_prompt=True))
    out = {}
    for key, reply in (("chosen_ids", ex.chosen), ("rejected_ids", ex.rejected)):
        full, _ = encode_segments(tok, template.segments(ex.prompt + [{"role": "assistant", "content": reply}]))
        if full[:len(prompt)] != prompt:
            raise TunelabError("the template renders the prompt differently once a reply follows", where=ex.where,
                               hint="pick a built-in template, e.g. data.template=chatml")
        out[key] = full[len(prompt):]
    cut = max(0, len(prompt) - min(max_prompt, max_length - 1))
    prompt = prompt[cut:]
    room = max(1, max_length - len(prompt))
    longest = max(len(out["chosen_ids"]), len(out["rejected_ids"]))
    out = {k: v[:room] for k, v in out.items()}
    return {"prompt_ids": prompt, **out, "truncated": bool(cut or longest > room)}


def tokenize_pairs(pairs: list[PreferenceExample], template, tok, cfg: RunConfig) -> tuple[list[dict], int]:
    """(tokenized pairs, how many were truncated)."""
    rows = [pair_ids(p, template, tok, cfg.data.max_length, cfg.preference.max_prompt_length) for p in pairs]
    return rows, sum(r.pop("truncated") for r in rows)


# ---- TRL wiring ----------------------------------------------------------------------------------------------
def refuse_engine_only_options(cfg: RunConfig) -> None:
    t = cfg.train
    if t.early_stopping_patience:
        raise TunelabError(f"early stopping is not available for task {cfg.task} (trained by TRL)",
                           where="train.early_stopping_patience", hint="set it to 0 and choose train.epochs")


def warmup_args(ratio: float) -> dict:
    """`train.warmup_ratio` as the TrainingArguments keyword that means a fraction of the optimizer steps.

    transformers >= 5 reads `warmup_steps` < 1 as that fraction (and removed `warmup_ratio` in 5.2);
    before 5, `warmup_steps` is an int count (0.05 would mean "0.05 steps": no warmup) and the fraction
    goes to `warmup_ratio`. Either way the Trainer warms up for ceil(ratio * total steps) steps.
    """
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__).major >= 5:
        return {"warmup_steps": float(ratio)}
    return {"warmup_ratio": float(ratio), "warmup_steps": 0}


def trainer_args(config_cls, cfg: RunConfig, run, device: torch.device, quiet: bool, has_val: bool, **extra):
    """TRL config (RewardConfig / DPOConfig) from `train.*`; the Trainer saves its checkpoints in the run's
    checkpoints folder at each epoch end (every `train.save_every` steps when set), which
    `CheckpointCallback` renames to step-N and prunes (the Trainer's own rotation is off).

    e.g. 36 pairs, batch_size 4, grad_accum 1, epochs 2 -> 9 steps/epoch x 2 = 18 optimizer steps.
    """
    from tunelab.runtime.precision import autocast_dtype
    from tunelab.train.activation_ckpt import wants_checkpointing
    from tunelab.train.loggers import tracker_env
    from tunelab.train.optim import HF_NAMES, check_optim

    t = cfg.train
    amp = autocast_dtype(t.precision, device)
    check_optim(t.optim, device)
    tracker_env(t.report_to, run.path)  # transformers' callbacks read where to write from the environment
    if t.eval_every == "never" or not has_val:
        ev = {"eval_strategy": "no"}
    elif t.eval_every == "epoch":
        ev = {"eval_strategy": "epoch"}
    else:
        ev = {"eval_strategy": "steps", "eval_steps": int(t.eval_every)}
    save = {"save_strategy": "steps", "save_steps": t.save_every} if t.save_every else {"save_strategy": "epoch"}
    return config_cls(
        output_dir=str(RunDir(run.path).checkpoints_dir), save_total_limit=None, **save, report_to=t.report_to,
        disable_tqdm=quiet,
        learning_rate=t.lr, num_train_epochs=t.epochs, max_steps=t.max_steps, per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        **warmup_args(t.warmup_ratio), weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        lr_scheduler_type="constant_with_warmup" if t.scheduler == "constant" else t.scheduler, optim=HF_NAMES[t.optim],
        bf16=amp == torch.bfloat16, fp16=amp == torch.float16, gradient_checkpointing=wants_checkpointing(cfg),
        seed=t.seed, data_seed=t.seed, logging_steps=t.logging_steps, use_cpu=device.type == "cpu",
        dataloader_pin_memory=False, **ev, **extra)


def metrics_callback(logger):
    """A transformers TrainerCallback that writes each TRL log row to `logger` (MetricsLogger).

    {"loss", "learning_rate", "grad_norm", "rewards/margins", ...} -> {"step", "epoch", "loss", "lr", ...};
    eval rows: eval_loss -> val_loss, eval_rewards/margins -> val_rewards/margins.
    """
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        muted = False  # True while a resumed run repeats its "before" evaluation (already in metrics.jsonl)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.muted:
                return
            rec = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 3)}
            for k, v in (logs or {}).items():
                if k == "learning_rate":
                    k = "lr"
                elif k.startswith("eval_"):
                    k = "val_" + k[len("eval_"):]
                rec[k] = round(v, 5) if isinstance(v, float) and math.isfinite(v) else v
            logger(rec)

    return MetricsCallback()


def checkpoint_callback(run, keep_checkpoints: str):
    """A TrainerCallback that makes each checkpoint the Trainer saves (output_dir/checkpoint-N, complete
    once on_save runs) the run's checkpoints/step-N with its state.json (position: step, epoch, final =
    the run's last step), keeping the last two (every one with train.keep_checkpoints: all); rank 0 only.
    A checkpoint-N folder left by a save that was killed is deleted at the next save, and so is the
    model card TRL writes beside them (checkpoints/README.md)."""
    import shutil

    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from tunelab.train.state import adopt_trainer_checkpoint

    rd = RunDir(run.path)
    keep = None if keep_checkpoints == "all" else 2

    class CheckpointCallback(TrainerCallback):
        trainer = None  # set by train_and_measure: its token count goes into state.json

        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            step = state.global_step
            folder = rd.checkpoints_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}"
            if folder.is_dir():
                position = {"step": step, "epoch": round(state.epoch or 0.0, 6)}
                if state.max_steps and step >= state.max_steps:
                    position["final"] = True  # the run's last step: the run itself once DONE
                tokens = getattr(self.trainer, _TOKENS, None)
                if isinstance(tokens, int):
                    position["train_tokens"] = tokens
                adopt_trainer_checkpoint(folder, rd.checkpoint(step), position, keep)
            for stale in rd.checkpoints_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):  # a save that was killed
                shutil.rmtree(stale, ignore_errors=True)
            (rd.checkpoints_dir / "README.md").unlink(missing_ok=True)  # TRL's model card of its output_dir

    return CheckpointCallback()


# TRL's count of the tokens trained on (its `num_tokens` metric): not in the Trainer's checkpoint, so
# kept in state.json's position and set back on resume, for the resumed rows to count as the whole run's
_TOKENS = "_total_train_tokens"


def resume_from(run, resume_step: int | None) -> str | None:
    """The checkpoint folder a TRL run continues from (`begin_run`'s resume step), or None."""
    return None if resume_step is None else str(RunDir(run.path).checkpoint(resume_step))


def val_metrics(trainer) -> dict:
    """TRL's validation metrics now (eval_* keys renamed val_*): the evaluation logged at this very
    step when there is one (epoch-end evaluation), else a fresh `trainer.evaluate()`."""
    hist = trainer.state.log_history
    last = next((r for r in reversed(hist) if "eval_loss" in r), None)
    if last is None or last.get("step") != trainer.state.global_step or trainer.state.global_step == 0:
        last = trainer.evaluate()
    return {("val_" + k[5:] if k.startswith("eval_") else k): v for k, v in last.items()}


def train_and_measure(trainer, has_val: bool, logger, resume: str | None = None) -> tuple[dict, object, float, dict]:
    """(validation metrics before, TRL's TrainOutput, training seconds, validation metrics after);
    `logger` is closed afterwards. Without a validation set the metrics are {}. `resume`: the
    checkpoint folder to continue from (`resume_from`); the "before" evaluation is then measured
    again (the base model: the checkpoint loads in train()) but not logged a second time."""
    import json
    import time
    from pathlib import Path

    callbacks = trainer.callback_handler.callbacks
    for cb in callbacks:
        if hasattr(cb, "trainer"):
            cb.trainer = trainer
    muted = [cb for cb in callbacks if hasattr(cb, "muted")] if resume else []
    if resume and hasattr(trainer, _TOKENS):
        position = json.loads((Path(resume) / "state.json").read_text(encoding="utf-8")).get("position", {})
        if isinstance(position.get("train_tokens"), int):
            setattr(trainer, _TOKENS, position["train_tokens"])
    try:
        for cb in muted:
            cb.muted = True
        try:
            before = val_metrics(trainer) if has_val else {}
        finally:
            for cb in muted:
                cb.muted = False
        t = time.perf_counter()
        state = trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - t
        after = val_metrics(trainer) if has_val else {}
    finally:
        logger.close()
    return before, state, seconds, after


def quiet_trainer(trainer, quiet: bool) -> None:
    """With --quiet, transformers' PrinterCallback would still print every log dict: drop it."""
    from transformers.trainer_callback import PrinterCallback

    if quiet:
        trainer.remove_callback(PrinterCallback)


def remove_empty_checkpoints(run) -> None:
    """The Trainer creates its output_dir (run/checkpoints) even with save_strategy no."""
    d = run.checkpoints_dir
    if d.is_dir() and not any(d.iterdir()):
        d.rmdir()
