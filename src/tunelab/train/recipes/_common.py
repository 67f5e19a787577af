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
    train_engine(...)                         engine.train_loop with the run's checkpoints and logger
    finish_run(run, result)                   DONE, unless training was interrupted

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
    d = {k: v for k, v in cfg_dict.items() if k != "versions"}
    d["train"] = {k: v for k, v in d["train"].items() if k != "resume"}
    d["output"] = {k: v for k, v in d["output"].items() if k != "overwrite"}
    return d


def resume_point(run: RunDir, cfg: RunConfig) -> int | None:
    """The checkpoint step to resume from, or None to start fresh (train.resume: no | yes | auto)."""
    import yaml

    from tunelab.train.state import list_checkpoints

    mode = cfg.train.resume
    steps = list_checkpoints(run.checkpoints_dir) if not run.done else []
    if mode == "yes" and not steps:
        raise TunelabError(f"nothing to resume: {run.path} has no checkpoint", where="train.resume",
                           hint="drop --resume to start a new run")
    if mode == "no" or not steps:
        return None
    from tunelab.train.resolve import settle_recorded

    # a run started before train/resolve.py recorded autos: they compare as what they resolve to now
    saved = settle_recorded(yaml.safe_load(run.config_path.read_text(encoding="utf-8")), cfg)
    if comparable_config(saved) != comparable_config(cfg.model_dump(mode="json")):
        raise TunelabError(f"the config differs from the one {run.path} was started with", where="train.resume",
                           hint="resume with the same config, or pick another output.name")
    return steps[-1]


def begin_run(run: RunDir, cfg: RunConfig, base_path, template=None, console=None) -> int | None:
    """Resolve where the run resumes (None: from the start), then write its config and template.
    Under N processes every rank reads the resume point before rank 0 (alone) writes the folder."""
    from tunelab.train.distributed import barrier, is_main

    resume_step = resume_point(run, cfg)
    barrier()
    if is_main():
        run.begin(cfg, base_path, template, resume_step, console)
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
        return train_loop(model, train, val, cfg.train, log=logger, quiet=quiet, ckpt_dir=run.checkpoints_dir,
                          resume=resume_step is not None, **kwargs)
    finally:
        logger.close()


def finish_run(run: RunDir, result) -> None:
    """Mark the run DONE (written last, by rank 0) unless training was interrupted: then it can be resumed.
    `result`: the engine's TrainResult, or None for a task TRL trains (dpo, reward: a Ctrl-C there raises
    before the recipe gets here, so the run is left unfinished)."""
    from tunelab.train.distributed import is_main

    if (result is None or result.stopped_early != "interrupted") and is_main():
        run.mark_done()
