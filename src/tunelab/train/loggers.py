"""Where training metrics go: metrics.jsonl and trainer_state.json always, TensorBoard when
`train.report_to: tensorboard`.

Each record is a flat dict with a "step"; every other numeric value becomes a TensorBoard scalar
named by its key under the `train/` (loss, lr, ...) or `eval/` (val_*, accuracy, ...) group.

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

from tunelab.errors import TunelabError


class MetricsLogger:
    def __init__(self, run, report_to: str = "none"):
        self.run = run
        self.history = list(run.metrics())  # a resumed run continues the rows it kept
        self.writer = None
        if report_to == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise TunelabError("train.report_to is 'tensorboard' but the tensorboard package is missing",
                                   where="train.report_to", hint="pip install tensorboard (or tunelab[tensorboard])") from None
            self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))

    def __call__(self, record: dict) -> None:
        self.run.log(record)
        self.history.append(record)
        if "val_loss" in record:
            self.write_trainer_state()
        if self.writer is None:
            return
        step = int(record.get("step", 0))
        for key, val in record.items():
            if key in ("step", "epoch") or isinstance(val, bool) or not isinstance(val, (int, float)):
                continue
            group = "train" if key in ("loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "peak_rss_mb") else "eval"
            self.writer.add_scalar(f"{group}/{key}", val, step)

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

        p = self.run.path / "config.yaml"
        try:
            cfg = yaml.safe_load(p.read_text(encoding="utf-8")) if p.exists() else None
        except (OSError, yaml.YAMLError):
            return {}
        train = cfg.get("train") if isinstance(cfg, dict) else None
        return train if isinstance(train, dict) else {}

    def close(self) -> None:
        self.write_trainer_state()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
