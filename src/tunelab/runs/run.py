"""A run, read back: `runs.open(path) -> Run`, the finished run's folder with its `RunConfig` validated again.

`runs.open` is in runs/__init__.py. `Run` is a `RunDir` (every part of the folder by accessor: `adapter_dir`,
`model_dir`, `quantized_dir`, `checkpoints_dir`, `checkpoint(step)`, `template_path`, `metrics_path`,
`export_dir`, `done`, ...) plus:

    raw        config.yaml as written (a dict; `versions` included)
    config     the same validated as a `RunConfig` (TunelabError, one line, when it does not validate),
               with the autos a run written before `train/resolve.py` existed could still record settled
               to what that run trained with (`settle_recorded`)
    versions   the library versions the run was trained with
    task, method, weights ("adapter" | "model" | "quantized" | None), template()
    labels     a classify run's labels from labels.json, in the head's order

Runs trained since record every auto resolved (`train/resolve.py`), so `config` is exactly the run that
trained. The kind checks (`require_run`: a run, of a task the command serves, finished) stay on the raw
dict, so a folder whose config.yaml names only its task is still told apart.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import yaml

from tunelab.config import RunConfig, from_dict
from tunelab.errors import TunelabError
from tunelab.runs.rundir import ADAPTER, MODEL, QUANTIZED, RunDir

DAMAGED = "the run folder is damaged: train it again"


def read_raw(path: str | Path) -> dict:
    """config.yaml of the run folder at `path` as a dict; TunelabError when it is unreadable or not a mapping."""
    p = RunDir(path).config_path
    try:
        cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TunelabError(f"unreadable config.yaml ({type(e).__name__})", where=str(p), hint=DAMAGED) from e
    if not isinstance(cfg, dict):
        raise TunelabError("config.yaml is not a mapping", where=str(p), hint=DAMAGED)
    return cfg


def settle_recorded(cfg: RunConfig) -> RunConfig:
    """The autos a run recorded before resolve() existed, as that run trained: qlora's quant_type auto meant
    nf4 (a GGUF-blocks base always recorded gguf: it was resolved in place before config.yaml was written).
    A config whose autos are already settled is returned unchanged."""
    m = cfg.method
    if m.name == "qlora" and m.quant_type == "auto":
        m.quant_type = "nf4"
    return cfg


def validate_raw(raw: dict, where: str) -> RunConfig:
    """A RunConfig from config.yaml's mapping (`versions` dropped); TunelabError naming `where` if invalid."""
    data = {k: v for k, v in raw.items() if k != "versions"}
    try:
        return settle_recorded(from_dict(data, source=where))
    except TunelabError as e:
        raise TunelabError(f"config.yaml does not validate: {e.message}", where=e.where or where,
                           hint="train the run again with this tunelab version, or fix config.yaml") from None


class Run(RunDir):
    """A finished run folder read back (see the module docstring). Build one with `runs.open(path)`."""

    def __init__(self, path: str | Path, raw: dict | None = None):
        super().__init__(path)
        self._raw = raw

    @property
    def raw(self) -> dict:
        if self._raw is None:
            self._raw = read_raw(self.path)
        return self._raw

    @cached_property
    def config(self) -> RunConfig:
        return validate_raw(self.raw, str(self.config_path))

    @property
    def versions(self) -> dict:
        return dict(self.raw.get("versions") or {})

    @property
    def task(self) -> str:
        return str(self.raw.get("task") or "sft")

    @property
    def method(self) -> str:
        return self.config.method.name

    @property
    def weights(self) -> str | None:
        """Which trained weights the folder holds: "quantized" (qat / bitnet), "model" (full / freeze, a
        classify run without lora), "adapter" (lora / qlora), None when none of them is there."""
        if self.quantized_dir.exists():
            return QUANTIZED
        if self.model_dir.exists():
            return MODEL
        if self.adapter_dir.is_dir():
            return ADAPTER
        return None

    @cached_property
    def labels(self) -> list[str]:
        """labels.json's labels (a classify run's, in the head's order)."""
        return list(json.loads(self.labels_path.read_text(encoding="utf-8"))["labels"])

    def template(self):
        """The prompt template the run trained with (template.json), for inference to reuse."""
        from tunelab.data.templates import Template

        return Template.load(self.template_path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

