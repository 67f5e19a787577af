"""Where training metrics go: metrics.jsonl and trainer_state.json always, and the tracker of
`train.report_to` through accelerate's trackers (accelerate.tracking):

    tensorboard   TensorBoardTracker, event files in runs/<name>/tensorboard/
    wandb         WandBTracker, project "tunelab", run = output.name (offline: WANDB_MODE=offline,
                  files under WANDB_DIR, default runs/<name>/wandb/)
    mlflow        MLflowTracker, experiment = output.name; the store is MLFLOW_TRACKING_URI (default:
                  a local file store, runs/<name>/mlruns/; mlflow 3 wants MLFLOW_ALLOW_FILE_STORE=true for it)

Each record is a flat dict with a "step"; every other numeric value becomes a scalar named by its
key under the `train/` (loss, lr, ...) or `eval/` (val_*, accuracy, ...) group.
Under N processes only rank 0 writes (train/distributed.py); the others' logger does nothing.

trainer_state.json, beside metrics.jsonl, is the summary transformers' Trainer writes, so tools
that read HF runs read tunelab's:

    log_history            every record logged, in order (a resumed run: the rows metrics.jsonl kept)
    global_step, epoch     of the latest record
    max_steps              train.max_steps of config.yaml, when set (> 0)
    logging_steps          train.logging_steps of config.yaml, when there is one
    best_metric            the lowest val_loss logged (null before any evaluation)
    best_model_checkpoint  "checkpoints/step-N" (relative to the run folder) when a complete checkpoint
                           of the best evaluation's step exists, else null

It is rewritten atomically (a .tmp file, then os.replace) after each evaluation record and at close.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.train.distributed import is_main

TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
_SET_BY_US: set[str] = set()  # tracker variables this process set (a later run may set them again)


def tracker_env(report_to: str, run_path) -> None:
    """Where the tracker writes, as the environment variables both accelerate's trackers and
    transformers' callbacks (TRL tasks) read; a variable the user set is left as it is:
    TENSORBOARD_LOGGING_DIR = <run>/tensorboard, WANDB_DIR = <run>, WANDB_PROJECT = tunelab,
    MLFLOW_TRACKING_URI = file:<run>/mlruns (+ MLFLOW_ALLOW_FILE_STORE), MLFLOW_EXPERIMENT_NAME = the run's name.
    Set MLFLOW_TRACKING_URI yourself for a server or a database store."""
    if report_to == "none":
        return
    import importlib.util

    package = TRACKER_PACKAGES[report_to]
    if importlib.util.find_spec(package) is None:
        raise TunelabError(f"train.report_to is '{report_to}' but the {package} package is missing",
                           where="train.report_to", hint=f"pip install {package} (or tunelab[track])")
    values = {"tensorboard": {"TENSORBOARD_LOGGING_DIR": str(run_path / "tensorboard")},
              "wandb": {"WANDB_DIR": str(run_path), "WANDB_PROJECT": "tunelab"},
              "mlflow": {"MLFLOW_TRACKING_URI": (run_path / "mlruns").resolve().as_uri(),
                         "MLFLOW_EXPERIMENT_NAME": run_path.name,
                         "MLFLOW_ALLOW_FILE_STORE": "true"}}[report_to]  # mlflow 3 asks before a file store
    for key, value in values.items():
        if key not in os.environ or key in _SET_BY_US:
            os.environ[key] = value
            _SET_BY_US.add(key)


def make_tracker(report_to: str, run_path, run_name: str):
    """accelerate's tracker for `report_to`, started (None for none); TunelabError when its package is missing."""
    if report_to == "none":
        return None
    tracker_env(report_to, run_path)
    from accelerate import PartialState, tracking

    PartialState()  # the trackers log through accelerate's logger, which needs the (here: existing or 1-process) state

    if report_to == "tensorboard":  # event files in TENSORBOARD_LOGGING_DIR (the tracker's <logging_dir>/<run_name>)
        tb = Path(os.environ["TENSORBOARD_LOGGING_DIR"])
        tracker = tracking.TensorBoardTracker(tb.name, str(tb.parent))
    elif report_to == "wandb":
        tracker = tracking.WandBTracker(os.environ["WANDB_PROJECT"], name=run_name, dir=os.environ["WANDB_DIR"])
    else:
        tracker = tracking.MLflowTracker(experiment_name=os.environ["MLFLOW_EXPERIMENT_NAME"], run_name=run_name)
    tracker.start()
    return tracker


class MetricsLogger:
    def __init__(self, run, report_to: str = "none"):
        self.run = run
        self.active = is_main()
        self.history = list(run.metrics()) if self.active else []  # a resumed run continues the rows it kept
        self.writer = make_tracker(report_to, run.path, run.path.name) if self.active else None

    def __call__(self, record: dict) -> None:
        if not self.active:
            return
        self.run.log(record)
        self.history.append(record)
        if "val_loss" in record:
            self.write_trainer_state()
        if self.writer is None:
            return
        step = int(record.get("step", 0))
        scalars = {}
        for key, val in record.items():
            if key in ("step", "epoch") or isinstance(val, bool) or not isinstance(val, (int, float)):
                continue
            if isinstance(val, float) and not math.isfinite(val):
                continue
            group = "train" if key in ("loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "peak_rss_mb") else "eval"
            scalars[f"{group}/{key}"] = val
        if scalars:
            self.writer.log(scalars, step=step)

    def trainer_state(self) -> dict:
        """The trainer_state.json document for the records logged so far (see the module docstring)."""
        state = {"log_history": self.history,
                 "global_step": max((int(r.get("step", 0)) for r in self.history), default=0),
                 "epoch": next((r["epoch"] for r in reversed(self.history) if "epoch" in r), 0)}
        train = self._config_train()
        if isinstance(train.get("max_steps"), int) and train["max_steps"] > 0:
            state["max_steps"] = train["max_steps"]
        if "logging_steps" in train:
            state["logging_steps"] = train["logging_steps"]
        evals = [r for r in self.history if isinstance(r.get("val_loss"), (int, float)) and math.isfinite(r["val_loss"])]
        best = min(evals, key=lambda r: r["val_loss"], default=None)  # the first of equal losses
        state["best_metric"] = best["val_loss"] if best else None
        ckpt = f"checkpoints/step-{best['step']}" if best else None
        state["best_model_checkpoint"] = ckpt if ckpt and (self.run.path / ckpt / "state.json").exists() else None
        return state

    def write_trainer_state(self) -> None:
        if not self.run.path.is_dir():  # nothing to summarize into (a run that never began)
            return
        path = self.run.path / "trainer_state.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.trainer_state(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def _config_train(self) -> dict:
        """The train section of the run's config.yaml ({} when there is none)."""
        import yaml

        p = self.run.config_path
        try:
            cfg = yaml.safe_load(p.read_text(encoding="utf-8")) if p.exists() else None
        except (OSError, yaml.YAMLError):
            return {}
        train = cfg.get("train") if isinstance(cfg, dict) else None
        return train if isinstance(train, dict) else {}

    def close(self) -> None:
        if not self.active:
            return
        self.write_trainer_state()
        if self.writer is not None:
            self.writer.finish()
            self.writer = None
