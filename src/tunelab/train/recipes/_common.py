"""The steps every recipe takes the same way, in the order a recipe takes them.

    setup_run(cfg, quiet, console, methods)   console, seed, threads, method check, run dir (refused
                                              when finished: before any data or model loads)
    load_base(cfg)                            the causal LM: 4-bit through bitsandbytes (qlora on
                                              that backend) or `load_causal_lm`; -> Base
    begin_run(run, cfg, base_path, ...)       where the run resumes (`resume_point`), then
                                              config.yaml / template.json written (`RunDir.begin`)
    quantize_for_training(base, cfg, amp)     qlora on the tunelab backend: the base to 4-bit
    adapt(model, cfg)                         method: lora | qlora | freeze | qat | bitnet (full: as is),
                                              then gradient checkpointing when wanted
    train_engine(...)                         engine.train_loop with the run's checkpoints and logger; Ctrl-C:
                                              raises `Interrupted` (checkpoint saved; nothing else runs)
    finish_run(run, result, keep)             DONE, then the checkpoints train.keep_checkpoints does not keep go

Every outcome is an `Outcome`: `run_dir`, `summary_lines()` (what `tunelab train` prints) and
`samples_table()` (a table printed above those lines, or None).
"""

from __future__ import annotations

import torch
from rich.console import Console

from tunelab.config import RunConfig
from tunelab.errors import TunelabError
from tunelab.methods import Base, method_of
from tunelab.runs.rundir import RunDir


class Outcome:
    """What a recipe returns (each task's outcome is a dataclass with `run_dir` deriving from it)."""

    def summary_lines(self) -> list[str]:
        raise NotImplementedError

    def samples_table(self) -> tuple[str, list[tuple[str, str, str]]] | None:
        """(title, rows of (prompt, base, tuned)) to print as a table before `summary_lines`, or None."""
        return None


# ---- setup ---------------------------------------------------------------------------------------------------
def setup_run(cfg: RunConfig, quiet: bool, console: Console | None, methods: tuple[str, ...] | None = None,
              checks=(), method_hint: str = "one of") -> tuple[Console, RunDir]:
    """(console, run dir): seeds torch, sets threads, refuses a method the task has not (`methods`)
    and what `checks` (callables of cfg) refuse, and a finished run unless output.overwrite."""
    console = console or Console(stderr=True, quiet=quiet)
    torch.manual_seed(cfg.train.seed)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if methods is not None and cfg.method.name not in methods:
        raise TunelabError(f"method '{cfg.method.name}' is not available for task {cfg.task}", where="method.name",
                           hint=f"{method_hint}: {', '.join(methods)}")
    for check in checks:
        check(cfg)
    run = RunDir(cfg.run_dir())
    run.refuse_if_done(cfg.output.overwrite)
    return console, run


def comparable_config(cfg_dict: dict) -> dict:
    """The settings a resumed run must share with the run it continues (not how it is run or kept)."""
    d = {k: v for k, v in cfg_dict.items() if k != "versions"}
    d["train"] = {k: v for k, v in d["train"].items() if k not in ("resume", "keep_checkpoints")}
    d["output"] = {k: v for k, v in d["output"].items() if k != "overwrite"}
    return d


def config_changes(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for each setting that differs (dotted keys, sorted)."""
    out = []
    for k in sorted(set(saved) | set(now), key=str):
        a, b = saved.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def resume_point(run: RunDir, cfg: RunConfig) -> int | None:
    """The checkpoint step to resume from, or None to start fresh (train.resume: no | yes | auto;
    output.overwrite: start fresh). auto resumes an unfinished run with checkpoints; a changed config
    is refused with the settings that differ and the two ways on (the old config, or --overwrite)."""
    import yaml

    from tunelab.train.state import list_checkpoints

    mode = cfg.train.resume
    if mode == "yes" and cfg.output.overwrite:
        raise TunelabError("--resume and --overwrite contradict each other", where="train.resume",
                           hint="--resume continues the run, --overwrite starts it over: pick one")
    steps = list_checkpoints(run.checkpoints_dir) if not run.done else []
    if mode == "yes" and not steps:
        raise TunelabError(f"nothing to resume: {run.path} has no checkpoint", where="train.resume",
                           hint="drop --resume to start a new run")
    if mode == "no" or cfg.output.overwrite or not steps:
        return None
    from tunelab.train.resolve import settle_recorded

    # a run started before train/resolve.py recorded autos: they compare as what they resolve to now
    saved = settle_recorded(yaml.safe_load(run.config_path.read_text(encoding="utf-8")), cfg)
    changes = config_changes(comparable_config(saved), comparable_config(cfg.model_dump(mode="json")))
    if changes:
        more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
        raise TunelabError(f"{run.path} is an unfinished run (checkpoint at step {steps[-1]}) started with another "
                           f"config: {'; '.join(changes[:3])}{more}", where="train.resume",
                           hint="rerun with the config it was started with to resume, pass --overwrite to start "
                                "over, or pick another output.name")
    return steps[-1]


def begin_run(run: RunDir, cfg: RunConfig, base_path, template=None, console=None) -> int | None:
    """Resolve where the run resumes (None: from the start), then write its config and template.
    Under N processes every rank reads the resume point before rank 0 (alone) writes the folder."""
    from tunelab.train.distributed import barrier, is_main

    resume_step = resume_point(run, cfg)
    barrier()
    if is_main():
        run.begin(cfg, base_path, template, resume_step)
        if resume_step is not None and console is not None:
            console.print(f"resuming {run.path} from its checkpoint at step {resume_step} "
                          "(an unfinished run; --overwrite starts over)", soft_wrap=True)
        if console is not None:
            from tunelab.runtime.processes import others_note

            note = others_note()  # once, as training begins (after the checks that fail in one line)
            if note:
                console.print(note, soft_wrap=True, markup=False, style="yellow")
    barrier()
    return resume_step


# ---- the base model ------------------------------------------------------------------------------------------
def load_base(cfg: RunConfig) -> Base:
    """The causal LM of `model.name`, as the run's method loads it (`Method.load_base`):

        qlora, bitsandbytes backend   loaded 4-bit by transformers (methods/qlora.py, `load_bnb_base`)
        qlora, tunelab backend, CPU   streamed: each Linear quantized to NF4 as its weight is read, the
                                      full-precision model never held (`quant.stream_load`); a hub id or a
                                      checkpoint without safetensors is loaded whole and quantized later
        qlora on a GGUF of blocks     those blocks kept (`quant.gguf_load`, method.quant_type auto | gguf)
        everything else               loaded as `model.dtype` (quantized later by `quantize_for_training`)
    """
    return method_of(cfg).load_base(cfg)


def quantize_for_training(base: Base, cfg: RunConfig, amp) -> bool:
    """qlora on the tunelab backend: the base in 4-bit, frozen, its layers computing in `amp`; True when
    it is (`Method.prepare_base`). A streamed base (`base.quantized`) is 4-bit already; any other is
    quantized in place here."""
    return method_of(cfg).prepare_base(base, cfg, amp)


# ---- adapting and training -----------------------------------------------------------------------------------
def adapt(model, cfg: RunConfig):
    """Apply `method` to a causal LM (`Method.adapt`); returns the model to train.

    lora / qlora: LoRA adapters (`apply_lora`); freeze: only the last `method.freeze_layers` blocks
    train; qat / bitnet: every weight trains as an fp32 latent and the forward sees Q(W) (straight-
    through estimator); full: every weight, as loaded. Then gradient checkpointing if `wants_checkpointing`.
    """
    from tunelab.train.activation_ckpt import enable as enable_checkpointing
    from tunelab.train.activation_ckpt import wants_checkpointing

    model = method_of(cfg).adapt(model, cfg.method)
    if wants_checkpointing(cfg, model):
        enable_checkpointing(model)
    return model


def train_engine(model, train: list, val: list, cfg: RunConfig, run: RunDir, logger, quiet: bool,
                 resume_step: int | None, **kwargs):
    """`engine.train_loop` checkpointing into run/checkpoints (resuming when `resume_step` is set),
    logging to `logger`, which is closed afterwards; kwargs: pad_id, objective, before_step."""
    from tunelab.train.engine import train_loop

    try:
        result = train_loop(model, train, val, cfg.train, log=logger, quiet=quiet, ckpt_dir=run.checkpoints_dir,
                            resume=resume_step is not None, final_checkpoint=True, **kwargs)
    finally:
        logger.close()
    if result.stopped_early == "interrupted":  # checkpoint saved: no validation, no weights, no DONE
        raise interrupted(run, result.steps)
    return result


def interrupted(run: RunDir, steps: int | None = None):
    """The `Interrupted` a Ctrl-C ends training with: one line saying what is saved and how to go on."""
    from tunelab.errors import Interrupted
    from tunelab.train.state import latest_checkpoint

    if run.done:
        return Interrupted(f"interrupted: {run.path} had finished and is complete")
    last = latest_checkpoint(run.checkpoints_dir) if run.path.is_dir() else None
    if last is None:
        return Interrupted("interrupted before the first checkpoint: nothing saved; "
                           "run the same command again to start over")
    at = f"at step {steps}: " if steps is not None else ": "
    return Interrupted(f"interrupted {at}checkpoint {last} kept; run the same command again to resume from it "
                       "(--overwrite starts over)")


def finish_run(run: RunDir, result, keep_checkpoints: str = "none") -> None:
    """Mark the run DONE (written last, by rank 0) unless training was interrupted: then it can be resumed.
    Then its checkpoints go, but for what train.keep_checkpoints (`keep_checkpoints`) keeps: last | all.
    `result`: the engine's TrainResult, or None for a task TRL trains (dpo, reward: a Ctrl-C there raises
    before the recipe gets here, so the run is left unfinished)."""
    from tunelab.train.distributed import is_main
    from tunelab.train.state import prune_finished

    if (result is None or result.stopped_early != "interrupted") and is_main():
        run.mark_done()
        if keep_checkpoints != "all" and run.checkpoints_dir.is_dir():
            from tunelab.train.loggers import MetricsLogger

            prune_finished(run.checkpoints_dir, keep_checkpoints)
            MetricsLogger(run).write_trainer_state()  # best_model_checkpoint: only one still on disk
