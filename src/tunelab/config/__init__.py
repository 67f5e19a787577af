"""Run configuration: YAML validated by pydantic, with `key.sub=value` overrides from the CLI.

    model:  {name, dtype, device}
    data:   {train (path | hub id | [{path, weight, format, columns}]), validation, val_split, format, columns,
            template, system, max_length, truncation_side, train_on, dedupe, seed}
    method: {name: lora|qlora|full|freeze|qat|bitnet, r, alpha, dropout, target_modules, layers, quant_type, double_quant, quant_backend}
    train:  {lr, epochs, max_steps, batch_size, grad_accum, warmup_ratio, weight_decay, scheduler, precision, ...}
    output: {dir, name, overwrite}
    eval:   {prompts, max_new_tokens, expect_suffix}
    task:   sft | classify | pretrain | reward | dpo | grpo; task sections `classify`, `preference`, `grpo`

Unknown keys are rejected with the closest valid name: `train.lr_rate: unknown key - did you mean 'lr'?`.
"""

from __future__ import annotations

import copy
from difflib import get_close_matches
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunelab.errors import TunelabError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelConfig(_Section):
    name: str = "smollm2-135m-instruct"
    dtype: str = "auto"  # auto | fp32 | bf16 | fp16 (weights as loaded)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps


FormatName = Literal["auto", "messages", "sharegpt", "prompt_completion", "alpaca", "text", "classification",
                     "preference"]


class DataSpec(_Section):
    """One dataset of a mixture: `{path, weight, format, columns, split}`.

    weight w takes round(w * n) of the dataset's n examples: w < 1 subsamples, w > 1 repeats
    (e.g. n = 120, w = 2.5 -> 300 = 2 full copies + 60 sampled), deterministic in `data.seed`.
    `format` and `columns` default to the `data:` section's; `split` is for hub datasets.
    """

    path: str
    weight: float = Field(1.0, gt=0)
    format: FormatName | None = None
    columns: dict[str, str] | None = None  # our field name -> the file's field name
    split: str | None = None  # hub datasets: which split (default: train, or validation for data.validation)


def _specs(value: Any, name: str) -> Any:
    """`data.train` / `data.validation`: a path, or a list of paths / {path, weight, ...} specs."""
    if not isinstance(value, list):
        return value
    if not value:
        raise ValueError(f"data.{name} is an empty list; give a path or at least one {{path: ...}}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            raise ValueError(f"data.{name}[{i}] must be a path or a mapping with 'path'")
        try:
            out.append(DataSpec.model_validate(item))
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ValueError(f"data.{name}[{i}].{loc}: {err['msg']}") from None
    return out


class DataConfig(_Section):
    train: str | list[DataSpec]  # a file, a directory, a hub id (hf:owner/name), or a list of DataSpec (a mixture)
    validation: str | list[DataSpec] | None = None
    val_split: float = Field(0.0, ge=0.0, lt=1.0)  # used when `validation` is not given
    format: FormatName = "auto"  # auto: detected per record from its fields (and the task)
    columns: dict[str, str] = Field(default_factory=dict)  # renames applied before detection: {prompt: question}
    # auto = the model's own chat template | llama2 | mistral | gemma | chatml | qwen3 | llama3 | phi3 | alpaca | qa | custom
    template: str = "auto"
    system: str | None = None  # instructions string given as the system turn
    custom_template: dict[str, str] | None = None  # for template: custom (keys: system, user, assistant, stop)
    max_length: int = Field(512, ge=8)
    truncation_side: Literal["right", "left"] = "right"
    # reply: loss on every assistant turn (default) | last: only the final assistant turn | all: every token
    train_on: Literal["reply", "last", "all"] = "reply"
    # reasoning (reasoning_content or an inline <think> block, docs/tools.md): learn: the think block is part of
    # the learned reply | mask: it is input only. An empty think block is never learned.
    reasoning: Literal["learn", "mask"] = "learn"
    # drop: earlier assistant turns (before the last user message) lose their reasoning, as Qwen3's template
    # renders them | keep: every turn keeps it (a template that drops it itself still does)
    earlier_reasoning: Literal["drop", "keep"] = "drop"
    dedupe: bool = False  # drop exact duplicate examples (before weights repeat anything)
    seed: int = 42

    @field_validator("train", "validation", mode="before")
    @classmethod
    def _mixture(cls, v: Any, info) -> Any:
        return _specs(v, info.field_name)


class MethodConfig(_Section):
    name: Literal["lora", "qlora", "full", "freeze", "qat", "bitnet"] = "lora"
    r: int = Field(16, ge=1)
    alpha: float = 32
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # > 0 copies every adapted layer's input (cost: docs/performance.md)
    target_modules: str | list[str] = "all-linear"
    # LoRA/QLoRA on the last N transformer blocks only ("all" = every block). Below them the frozen
    # base runs without autograd: no activations kept, no backward through those blocks.
    # Why 8: docs/performance.md, "Adapted blocks and learning rate".
    layers: Literal["all"] | int = 8
    # qlora's base: auto = the GGUF's own blocks (gguf) when model.name is a GGUF (or the embedded alias)
    # whose block Linears are all Q4_0/Q4_1/Q8_0/Q4_K/Q6_K, else nf4 (quant/gguf_load.py; docs/quantization.md)
    quant_type: Literal["auto", "nf4", "fp4", "gguf"] = "auto"
    double_quant: bool = True
    quant_backend: Literal["auto", "tunelab", "bitsandbytes"] = "auto"
    # qlora's streamed CPU base: int8 = embeddings and head as frozen int8 rows + an fp32 scale each
    # (quant/int8_rows.py: 1/4 of their fp32 bytes); none = fp32. Why not the default: docs/memory.md
    embed_quant: Literal["none", "int8"] = "none"
    freeze_layers: int = Field(2, ge=0)  # method freeze: train the last N blocks (+ lm_head)
    qat_format: Literal["int8", "int4", "nf4", "fp4", "ternary"] = "int8"  # method qat: the format trained for

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: Any) -> Any:
        if v != "all" and v < 1:
            raise ValueError("method.layers must be 'all' or a number of last blocks >= 1")
        return v


LORA_LR = 4e-4  # adapters on the last 8 blocks (how it was chosen: docs/performance.md, "Adapted blocks and learning rate")
FULL_LR = 2e-4


def default_lr(method: str) -> float:
    """train.lr when the config leaves it out: LORA_LR for lora/qlora, FULL_LR for every other method."""
    return LORA_LR if method in ("lora", "qlora") else FULL_LR


class TrainConfig(_Section):
    lr: float = Field(FULL_LR, gt=0)  # left out of a config: default_lr(method.name)
    epochs: float = Field(3, gt=0)
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    scheduler: Literal["linear", "cosine", "constant"] = "cosine"
    max_grad_norm: float = 1.0
    # auto: bf16 where the hardware does bf16 matmuls, fp16 on CUDA without bf16, else fp32 (settled, and
    # recorded in config.yaml, by train/resolve.py); fp16: fp16 autocast
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool | Literal["auto"] = "auto"  # auto: qlora, or when the estimate does not fit
    seed: int = 42
    eval_every: Literal["epoch", "never"] | int = "epoch"  # or every N optimizer steps
    keep_best: bool = True
    logging_steps: int = Field(1, ge=1)
    save_every: int = Field(0, ge=0)  # checkpoint every N optimizer steps (0 = only at epoch ends)
    # auto: a rerun of an unfinished run continues from its last checkpoint (says so in one line; a changed
    # config is refused with what to do); yes: must resume (--resume); no: start over (--overwrite)
    resume: Literal["no", "yes", "auto"] = "auto"
    # what a finished run keeps of its checkpoints (deleted after DONE): none | last | all (all: none pruned)
    keep_checkpoints: Literal["last", "all", "none"] = "none"
    threads: int = 0  # 0 = all cores
    early_stopping_patience: int = Field(0, ge=0)  # stop after N evaluations without improvement (0 = off)
    early_stopping_min_delta: float = Field(0.0, ge=0.0)  # an improvement must beat the best by more than this
    report_to: Literal["none", "tensorboard", "wandb", "mlflow"] = "none"  # metrics.jsonl is always written
    # adamw | adamw_fused (torch's fused kernel) | adamw8bit | paged_adamw8bit (bitsandbytes; paged: CUDA)
    optim: Literal["adamw", "adamw_fused", "adamw8bit", "paged_adamw8bit"] = "adamw"
    # CPU: glibc keeps freed activation buffers for the next step (runtime/allocator.py); auto = on;
    # false = smaller RSS, slower (measured: docs/design.md, "glibc keeps freed buffers")
    keep_freed_memory: bool | Literal["auto"] = "auto"


class OutputConfig(_Section):
    dir: str = "runs"
    name: str = "run"
    overwrite: bool = False


class EvalConfig(_Section):
    prompts: list[str] = Field(default_factory=list)  # held-out prompts sampled before/after training
    from_validation: int = 0  # also sample the first N validation prompts
    max_new_tokens: int = 64
    expect_suffix: str | None = None  # e.g. the persona's signature; the report counts replies ending with it


class ClassifyConfig(_Section):
    """task: classify. Labels come from the data (sorted) unless listed here (fixes their order)."""

    labels: list[str] | None = None
    metric: Literal["accuracy", "macro_f1"] = "accuracy"  # reported first; keep-best still follows val loss


class PreferenceConfig(_Section):
    """task: dpo / reward. beta = DPO temperature (TRL's `beta`)."""

    beta: float = Field(0.1, gt=0)
    loss_type: str = "sigmoid"  # TRL DPO loss_type
    max_prompt_length: int = Field(256, ge=8)


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
        if "lr" not in self.train.model_fields_set:
            self.train.lr = default_lr(self.method.name)
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
    ann = _fields(model)[key].annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


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
