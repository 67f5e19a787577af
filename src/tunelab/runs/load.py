"""A finished run's model, for inference: the base as trained (4-bit for qlora) + its adapter, or the
saved full / packed quantized model, with the run's template."""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.runs.kinds import GENERATIVE_TASKS, require_run
from tunelab.runs.rundir import RunDir

def load_run(path: str | Path) -> tuple[RunDir, dict]:
    """Open a finished run of any task and return (RunDir, config dict); TunelabError when it is not one
    (`require_run` without a task check)."""
    return require_run(path)


def load_run_model(path: Path, with_adapter: bool = True, device: str = "auto"):
    """(model, tokenizer, template) of a finished sft/pretrain/dpo run: the base as trained (4-bit for
    qlora) + its adapter. TunelabError for anything else (require_run)."""
    from tunelab.data.templates import Template
    from tunelab.models.load import load_causal_lm

    rd, cfg = require_run(path, GENERATIVE_TASKS, "generation")
    template = Template.load(rd.path / "template.json")
    if (rd.path / "quantized").exists():  # qat / bitnet runs saved a packed quantized model
        from tunelab.models.load import load_tokenizer, pick_device
        from tunelab.models.registry import ResolvedModel
        from tunelab.quant.ptq import load as load_quantized

        q = rd.path / "quantized"
        model = load_quantized(q).to(pick_device(device))
        return model, load_tokenizer(ResolvedModel(str(q), str(q), "local")), template
    if (rd.path / "model").exists():  # full / freeze runs saved the whole model
        model, tok, _ = load_causal_lm(str(rd.path / "model"), device=device)
        return model, tok, template
    model, tok = load_run_base(cfg, device=device)
    if with_adapter:
        model = attach_adapter(model, rd.path / "adapter")
    return model, tok, template


def load_run_base(cfg: dict, device: str = "auto", dtype: str | None = None, where: str = "model.name"):
    """(model, tokenizer): the base of an adapter run as it was trained (4-bit for qlora).

    `dtype` overrides the run's `model.dtype` (e.g. fp32 for merging)."""
    from tunelab.models.load import load_causal_lm

    method = cfg.get("method", {})
    model, tok, _ = load_causal_lm(cfg["model"]["name"], dtype=dtype or cfg["model"].get("dtype", "auto"),
                                   device=device, where=where)
    if method.get("name") == "qlora":
        from tunelab.adapters.qlora import quantize_base

        quantize_base(model, method.get("quant_type", "nf4"), method.get("double_quant", True))
    return model, tok


def attach_adapter(model, adapter_dir: Path):
    """Load a saved PEFT LoRA adapter onto `model` (works on QuantLinear bases too)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    from tunelab.adapters.fused import register_lora_layers

    cfg = LoraConfig.from_pretrained(str(adapter_dir))
    cfg.inference_mode = True
    register_lora_layers(cfg)
    model = get_peft_model(model, cfg)
    result = set_peft_model_state_dict(model, load_file(str(adapter_dir / "adapter_model.safetensors")))
    if getattr(result, "unexpected_keys", None):
        raise TunelabError(f"adapter does not fit the base model: unexpected {result.unexpected_keys[:2]}",
                           where=str(adapter_dir))
    return model
