"""A finished run's model, for inference: the base as trained (4-bit for qlora) + its adapter, or the
saved full / packed quantized model, with the run's template. Everything is read from the typed run
(`runs.open`, runs/run.py): no default is restated here."""

from __future__ import annotations

from pathlib import Path

from tunelab.config import RunConfig
from tunelab.quant import bnb_compat
from tunelab.runs.kinds import GENERATIVE_TASKS, require_run
from tunelab.runs.run import Run, validate_raw

bnb_compat.defer_bitsandbytes_import()  # attach_adapter imports peft: a plain LoRA run never imports bitsandbytes


def load_run(path: str | Path) -> tuple[Run, dict]:
    """Open a finished run of any task and return (Run, config.yaml as a dict); TunelabError when it is not
    one (`require_run` without a task check). `Run.config` is the validated RunConfig."""
    return require_run(path)


def load_run_model(path: Path, with_adapter: bool = True, device: str = "auto"):
    """(model, tokenizer, template) of a finished sft/pretrain/dpo run: the base as trained (4-bit for
    qlora) + its adapter. TunelabError for anything else (require_run)."""
    from tunelab.models.load import load_causal_lm

    rd, _ = require_run(path, GENERATIVE_TASKS, "generation")
    template = rd.template()
    if rd.weights == "quantized":  # qat / bitnet runs saved a packed quantized model
        from tunelab.models.load import load_tokenizer, pick_device
        from tunelab.models.registry import ResolvedModel
        from tunelab.quant.ptq import load as load_quantized

        q = rd.quantized_dir
        model = load_quantized(q).to(pick_device(device))
        return model, load_tokenizer(ResolvedModel(str(q), str(q), "local")), template
    if rd.weights == "model":  # full / freeze runs saved the whole model
        model, tok, _ = load_causal_lm(str(rd.model_dir), device=device)
        return model, tok, template
    model, tok = load_run_base(rd.config, device=device)
    if with_adapter:
        model = attach_adapter(model, rd.adapter_dir)
    return model, tok, template


def load_run_base(cfg: RunConfig | dict, device: str = "auto", dtype: str | None = None,
                  where: str = "model.name"):
    """(model, tokenizer): the base of an adapter run as it was trained (4-bit for qlora, in the run's
    `method.quant_type`). `cfg` is the run's RunConfig (`Run.config`); a config.yaml dict is validated
    first. `dtype` overrides the run's `model.dtype` (e.g. fp32 for merging)."""
    from tunelab.methods import method_of
    from tunelab.models.load import load_causal_lm

    if isinstance(cfg, dict):
        cfg = validate_raw(cfg, "config.yaml")
    m = cfg.method
    model, tok, _ = load_causal_lm(cfg.model.name, dtype=dtype or cfg.model.dtype, device=device, where=where)
    model = method_of(m).inference_base(model, m)  # qlora: the 4-bit base it trained on
    return model, tok


def attach_adapter(model, adapter_dir: Path):
    """Load the saved PEFT LoRA adapter in `adapter_dir` onto `model` (works on QuantLinear bases too).
    The files are read and checked by `adapters.peft_files.read_adapter`: TunelabError, one line, for an
    adapter tunelab does not load or one that does not fit `model`."""
    from peft import get_peft_model, set_peft_model_state_dict

    from tunelab.adapters.fused import register_lora_layers
    from tunelab.adapters.peft_files import check_fits, read_adapter

    files = read_adapter(adapter_dir)
    cfg = files.lora_config()
    cfg.inference_mode = True
    register_lora_layers(cfg)
    model = get_peft_model(model, cfg)
    result = set_peft_model_state_dict(model, files.state_dict())
    check_fits(result, adapter_dir)
    return model
