"""The run directory: the one artifact every later command reads.

    runs/<name>/
      config.yaml      resolved config + library versions
      template.json    the prompt template used in training (inference reuses it)
      adapter/         PEFT adapter (adapter_config.json + adapter_model.safetensors), loads in plain peft
      model/           full weights (methods full / freeze)
      quantized/       packed quantized weights + manifest.json (methods qat / bitnet)
      metrics.jsonl    one JSON object per log step / eval
      report.md, loss.png
      DONE             written last: a run without it is incomplete
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import yaml

from tunelab.errors import TunelabError


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("tunelab", "torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def done(self) -> bool:
        return (self.path / "DONE").exists()

    def refuse_if_done(self, overwrite: bool = False) -> None:
        """TunelabError when this run is finished and `overwrite` is not set."""
        if self.done and not overwrite:
            raise TunelabError(f"run {self.path} is already finished", where="output.name",
                               hint="pick another output.name, or pass --overwrite")

    def prepare(self, overwrite: bool = False) -> None:
        """Create the folder; refuse to replace a finished run unless `overwrite`; clear an unfinished one."""
        self.refuse_if_done(overwrite)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)

    def write_text(self, name: str, text: str) -> Path:
        p = self.path / name
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
        return p

    def log(self, record: dict) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Drop metric rows logged after `step` (a resumed run logs them again)."""
        rows = [r for r in self.metrics() if r.get("step", 0) <= step]
        self.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]

    def mark_done(self) -> None:
        self.write_text("DONE", time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")

    def begin(self, cfg, model_path: str, template=None, resume_step: int | None = None, console=None) -> None:
        """Start a fresh run (folder, config.yaml with library versions, template.json) or, when
        `resume_step` is given, keep the folder and drop metrics logged after that step."""
        from tunelab.config import dump_config

        if resume_step is None:
            self.prepare(cfg.output.overwrite)
            self.write_text("config.yaml", dump_config(cfg, {**library_versions(), "model_path": model_path}))
            if template is not None:
                template.save(self.path / "template.json")
        else:
            self.truncate_metrics(resume_step)
            if console is not None:
                console.print(f"resuming {self.path} from step {resume_step}")

    def save_weights(self, model, method: str, tokenizer=None) -> None:
        """lora / qlora -> adapter/ (plain PEFT); any other method -> model/ (+ the tokenizer when given)."""
        if method in ("lora", "qlora"):
            model.save_pretrained(str(self.path / "adapter"))
            return
        model.save_pretrained(str(self.path / "model"))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(self.path / "model"))


def load_run(path: str | Path) -> tuple[RunDir, dict]:
    """Open a finished run and return (RunDir, config dict); TunelabError when it is not one."""
    rd = RunDir(path)
    if not (rd.path / "config.yaml").exists():
        raise TunelabError(f"{rd.path} is not a tunelab run (no config.yaml)", where="RUN",
                           hint="give a folder under runs/ written by `tunelab train`")
    if not rd.done:
        raise TunelabError(f"run {rd.path} is incomplete (no DONE marker)", where="RUN",
                           hint="the training did not finish: train again")
    return rd, yaml.safe_load((rd.path / "config.yaml").read_text(encoding="utf-8"))


def load_run_model(path: Path, with_adapter: bool = True, device: str = "auto"):
    """(model, tokenizer, template) of a finished run: the base as trained (4-bit for qlora) + its adapter."""
    from tunelab.data.templates import Template
    from tunelab.models.load import load_causal_lm

    rd, cfg = load_run(path)
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

    from tunelab.adapters.qlora import register_quant_linear

    cfg = LoraConfig.from_pretrained(str(adapter_dir))
    cfg.inference_mode = True
    from tunelab.adapters.lora import quant_linear_types

    if any(isinstance(m, quant_linear_types()) for m in model.modules()):
        register_quant_linear(cfg)
    model = get_peft_model(model, cfg)
    result = set_peft_model_state_dict(model, load_file(str(adapter_dir / "adapter_model.safetensors")))
    if getattr(result, "unexpected_keys", None):
        raise TunelabError(f"adapter does not fit the base model: unexpected {result.unexpected_keys[:2]}",
                           where=str(adapter_dir))
    return model
