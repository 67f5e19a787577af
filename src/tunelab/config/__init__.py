"""Run configuration: YAML validated by pydantic, with `key.sub=value` overrides from the CLI.

    model:  {name, dtype, device}
    data:   {train (path | hub id | [{path, weight, format, columns}]), validation, val_split, format, columns,
            template, system, max_length, truncation_side, train_on, dedupe, seed}
    method: {name: lora|qlora|full|freeze|qat|bitnet, r, alpha, dropout, target_modules, layers, quant_type, double_quant, quant_backend}
    train:  {lr, epochs, max_steps, batch_size, grad_accum, warmup_ratio, weight_decay, scheduler, precision, ...}
    output: {dir, name, overwrite}
    eval:   {prompts, max_new_tokens, expect_suffix}
    task:   sft | classify | pretrain | reward | dpo | grpo; task sections `classify`, `preference`, `grpo`

The sections live in config/sections.py (classify: config/classify.py); this module puts them together
(`RunConfig`) and loads, validates and overrides them.

Unknown keys are rejected with the closest valid name: `train.lr_rate: unknown key - did you mean 'lr'?`.
"""

from __future__ import annotations

import copy
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from tunelab.config.classify import ClassifyConfig, check_metric_for_best, settle_setfit
from tunelab.config.sections import (  # noqa: F401  (re-exported: `from tunelab.config import ...` keeps working)
    FULL_LR,
    LORA_LR,
    DataConfig,
    DataSpec,
    EvalConfig,
    FormatName,
    MethodConfig,
    ModelConfig,
    OutputConfig,
    PreferenceConfig,
    TrainConfig,
    _Section,
    _specs,
    default_lr,
)
from tunelab.errors import TunelabError


class RunConfig(_Section):
    task: Literal["sft", "classify", "pretrain", "reward", "dpo", "grpo"] = "sft"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    grpo: dict[str, Any] = Field(default_factory=dict)  # task grpo; validated by train/grpo_config.py
    base_dir: str = "."  # the working folder: output.dir is relative to it, and input paths fall back to it
    # the config file's folder (load_config): relative input paths (data files, a model folder) are read from here
    config_dir: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if self.data.template == "custom" and not self.data.custom_template:
            raise ValueError("data.template is 'custom' but data.custom_template is missing")
        settle_setfit(self)  # before the lr default: it gives a setfit run SetFit's lr instead
        if "lr" not in self.train.model_fields_set:
            self.train.lr = default_lr(self.method.name)
        check_metric_for_best(self)
        return self

    def path(self, p: str) -> Path:
        """Resolve a path against base_dir (the working folder; output.dir)."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else Path(self.base_dir) / q

    def input_base(self, p: str, field: str = "data.train") -> Path:
        """The folder a relative input path `p` is read from: the config file's folder (config_dir) when
        `p` exists there, else the working folder (base_dir) when it exists there, with a one-line
        deprecation note (once per path), else the config's folder (the error names that path)."""
        if self.config_dir is None or Path(p).expanduser().is_absolute():
            return Path(self.base_dir)
        here, work = Path(self.config_dir), Path(self.base_dir)
        if not (here / p).exists() and (work / p).exists():
            working_folder_note(field, p, here, work)
            return work
        return here

    def run_dir(self) -> Path:
        return self.path(self.output.dir) / self.output.name


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_fields


def _submodel(model: type[BaseModel], key: str):
    """The section type of `key`: its annotation, or the section in an optional one (`SetFitConfig | None`)."""
    ann = _fields(model)[key].annotation
    for a in (ann, *get_args(ann)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _check_keys(data: dict, model: type[BaseModel], prefix: str, source: str) -> None:
    """Reject unknown keys with the closest valid name, before pydantic's wordier errors."""
    valid = list(_fields(model))
    for key, val in data.items():
        if key not in valid:
            close = get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
            raise TunelabError("unknown key", where=f"{source}: {prefix}{key}", hint=hint)
        sub = _submodel(model, key)
        if sub is not None and isinstance(val, dict):
            _check_keys(val, sub, f"{prefix}{key}.", source)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` strings (values parsed as YAML scalars/lists) onto nested dicts."""
    for item in overrides:
        if "=" not in item:
            raise TunelabError(f"override '{item}' is not key=value", where="command line", hint="e.g. train.lr=1e-4")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = _parse_scalar(raw)
    return data


def _yaml_line(text: str, dotted: tuple) -> int | None:
    """Best-effort line number of the last key of a dotted path in YAML text."""
    if not dotted:
        return None
    last = str(dotted[-1])
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip().startswith(f"{last}:"):
            return i
    return None


def from_dict(data: dict, source: str = "config", text: str = "") -> RunConfig:
    _check_keys(data, RunConfig, "", source)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        line = _yaml_line(text, err["loc"])
        where = f"{source}:{line}: {loc}" if line else f"{source}: {loc}"
        raise TunelabError(err["msg"], where=where, hint="fix the value (see examples/configs/)") from None


_NOTED: set = set()


def working_folder_note(field: str, p: str, config_dir: Path, work: Path) -> None:
    """Say once per path that it matched only in the working folder (the deprecated fallback)."""
    import os
    import sys

    if (field, p) in _NOTED:
        return
    _NOTED.add((field, p))
    better = os.path.relpath((work / p).resolve(), config_dir.resolve())
    print(f"note: {field}: '{p}' was found in the working folder, not next to the config ({config_dir}); "
          f"relative paths in a config are read from the config's folder, the working-folder fallback is "
          f"deprecated - write '{better}' or an absolute path", file=sys.stderr)


def _model_near_config(cfg: RunConfig) -> None:
    """model.name as a folder or .gguf relative to the config's folder: made absolute when it is there
    (an alias or hub id is left alone; one found only in the working folder gets the note)."""
    name = cfg.model.name
    if cfg.config_dir is None or Path(name).expanduser().is_absolute():
        return
    if (Path(cfg.config_dir) / name).exists():
        cfg.model.name = str((Path(cfg.config_dir) / name).resolve())
    elif (Path(cfg.base_dir) / name).exists() and ("/" in name or name.endswith(".gguf")):
        working_folder_note("model.name", name, Path(cfg.config_dir), Path(cfg.base_dir))


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Load and validate a YAML config; relative input paths (data files, a model folder) are read from the
    config file's folder, then from the working folder (deprecated, with a note); output.dir is relative
    to the working folder."""
    p = Path(path)
    if not p.is_file():
        raise TunelabError(f"config file not found: {path}", hint="give a YAML file, e.g. examples/configs/quickstart.yaml")
    text = p.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TunelabError(f"invalid YAML ({getattr(e, 'problem', e)})", where=where) from None
    if not isinstance(data, dict):
        raise TunelabError("the config must be a mapping of sections", where=str(path), hint="see examples/configs/")
    _check_keys(data, RunConfig, "", str(path))
    _check_keys(apply_overrides({}, overrides or []), RunConfig, "", "command line")  # a typo there is not the file's
    data = apply_overrides(data, overrides or [])
    data.setdefault("config_dir", str(p.resolve().parent))
    cfg = from_dict(data, source=str(path), text=text)
    _model_near_config(cfg)
    return cfg


def as_config(config: str | Path | dict | RunConfig, overrides: list[str] | None = None) -> RunConfig:
    """A validated RunConfig from a YAML path, a dict (the YAML's mapping) or a RunConfig, with
    `key.sub=value` overrides applied. A dict is not modified; a RunConfig without overrides is
    returned as it is; with overrides it is re-validated from its fields and the overrides.
    `overrides` is a list of strings like the command line's (`["train.lr=1e-4"]`) or one such string."""
    overrides = [overrides] if isinstance(overrides, str) else list(overrides or [])
    if isinstance(config, RunConfig):
        if not overrides:
            return config
        return from_dict(apply_overrides(config.model_dump(mode="json"), overrides), source="config")
    if isinstance(config, dict):
        return from_dict(apply_overrides(copy.deepcopy(config), overrides), source="config")
    if isinstance(config, (str, Path)):
        return load_config(config, overrides)
    raise TunelabError(f"a config is a YAML path, a dict or a RunConfig, not {type(config).__name__}",
                       where="config", hint="e.g. tunelab.train('examples/configs/quickstart.yaml')")


def dump_config(cfg: RunConfig, extra: dict | None = None) -> str:
    d = cfg.model_dump(mode="json")
    if extra:
        d["versions"] = extra
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
