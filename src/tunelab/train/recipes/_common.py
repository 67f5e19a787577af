"""What every recipe does the same way: where a run resumes, and loading a 4-bit base through bitsandbytes."""

from __future__ import annotations

import torch

from tunelab.config import RunConfig
from tunelab.errors import TunelabError
from tunelab.runs.rundir import RunDir

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
    steps = list_checkpoints(run.path / "checkpoints") if not run.done else []
    if mode == "yes" and not steps:
        raise TunelabError(f"nothing to resume: {run.path} has no checkpoint", where="train.resume",
                           hint="drop --resume to start a new run")
    if mode == "no" or not steps:
        return None
    saved = yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8"))
    if comparable_config(saved) != comparable_config(cfg.model_dump(mode="json")):
        raise TunelabError(f"the config differs from the one {run.path} was started with", where="train.resume",
                           hint="resume with the same config, or pick another output.name")
    return steps[-1]


def load_bnb_base(cfg: RunConfig, device):
    """CUDA path: load the base 4-bit through transformers + bitsandbytes."""
    from transformers import AutoModelForCausalLM

    from tunelab.adapters.qlora import bnb_quantization_config
    from tunelab.models.load import load_tokenizer
    from tunelab.models.registry import resolve

    rm = resolve(cfg.model.name)
    tok = load_tokenizer(rm)
    compute = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    qc = bnb_quantization_config(cfg.method.quant_type, cfg.method.double_quant, compute)
    model = AutoModelForCausalLM.from_pretrained(rm.path, quantization_config=qc, device_map={"": str(device)})
    from peft import prepare_model_for_kbit_training

    # checkpointing is switched on after the adapters (run_sft), as for every other method
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, tok, rm
