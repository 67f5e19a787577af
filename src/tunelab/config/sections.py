"""The config sections (model, data, method, train, output, eval, preference): pydantic models, unknown
keys rejected (`extra="forbid"`). `RunConfig` (tunelab.config) puts them together; the classify section
lives in config/classify.py."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


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
    # what keep_best and early stopping compare: loss (lower is better) | accuracy | macro_f1 (higher is
    # better; task classify only). auto = macro_f1 for classify, loss for every other task (config/classify.py)
    metric_for_best: Literal["auto", "loss", "accuracy", "macro_f1"] = "auto"
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


class PreferenceConfig(_Section):
    """task: dpo / reward. beta = DPO temperature (TRL's `beta`)."""

    beta: float = Field(0.1, gt=0)
    loss_type: str = "sigmoid"  # TRL DPO loss_type
    max_prompt_length: int = Field(256, ge=8)
