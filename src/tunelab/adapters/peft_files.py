"""One reader of a PEFT LoRA adapter's files, with one set of refusals, for everything that reads one:
`runs.load.attach_adapter` (generate, chat, eval, merge, the streamed QLoRA merge), `serve/adapters.py`
(the decode engine) and `export/lora_gguf.py` (llama.cpp's adapter file).

    read_adapter_config(dir) -> dict         adapter_config.json, checked (what the folder must hold)
    read_adapter(dir) -> AdapterFiles        + adapter_model.safetensors, checked: config, tensors by module
                                             (A, B), rank / alpha / scaling per module, target modules

Refused, each with one TunelabError line (what, the adapter folder, how to fix), by every consumer:
    not LoRA (peft_type), DoRA (use_dora), modules_to_save (whole trained copies of layers), biases
    (bias != none, lora_bias), fan_in_fan_out (GPT-2 style Conv1D), trainable_token_indices (trained token
    embeddings), LoRA on the embedding or lm_head, a tensor that is not a LoRA A/B matrix, an A without
    its B, no adapter_model.safetensors (a .bin pickle is never loaded), unreadable files.
tunelab's own runs write none of these (a classify / reward run's head is a modules_to_save, and those
runs are read by peft directly, not through this reader). What fits a given base is each consumer's
check (the engine's projections and shapes, the GGUF tensor names, peft's unexpected keys).

PEFT's scaling for a module is alpha / r (alpha / sqrt(r) with use_rslora); r is A's rows and alpha
comes from alpha_pattern when a key matches the module's name, else lora_alpha (r when absent).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
HINT = "tunelab reads plain LoRA adapters on Linear layers (what method lora / qlora saves): retrain the run"
_AB = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$")


def refuse(what: str, adapter_dir: Path, hint: str | None = None) -> TunelabError:
    return TunelabError(what, where=str(adapter_dir), hint=hint or HINT)


def pattern_value(patterns: dict | None, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: the first key matching the module's name or a dotted suffix."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def check_config(cfg: dict, adapter_dir: Path, hint: str | None = None) -> dict:
    """`cfg` (adapter_config.json) when it is a LoRA every consumer reads; else the refusal (module docstring)."""
    def no(what: str) -> TunelabError:
        return refuse(what, adapter_dir, hint)

    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise no(f"adapter is {cfg.get('peft_type')}, not LoRA")
    if cfg.get("use_dora"):
        raise no("adapter is DoRA (a learned magnitude per column)")
    if cfg.get("modules_to_save"):
        raise no(f"adapter saves whole modules (modules_to_save {', '.join(map(str, cfg['modules_to_save']))}), "
                 "e.g. a classification head or an embedding")
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        raise no("adapter trains biases")
    if cfg.get("fan_in_fan_out"):
        raise no("adapter is fan_in_fan_out (GPT-2 style Conv1D layers)")
    if cfg.get("trainable_token_indices"):
        raise no("adapter trains token embeddings (trainable_token_indices)")
    return cfg


def read_adapter_config(adapter_dir: str | Path, hint: str | None = None) -> dict:
    """adapter_config.json of `adapter_dir`, checked (`check_config`), and its safetensors file present.
    `hint` replaces the default fix in a refusal (a consumer names its own way out)."""
    adapter_dir = Path(adapter_dir)
    try:
        cfg = json.loads((adapter_dir / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise refuse(f"unreadable {CONFIG} ({type(e).__name__})", adapter_dir, hint) from None
    if not isinstance(cfg, dict):
        raise refuse(f"{CONFIG} is not a mapping", adapter_dir, hint)
    check_config(cfg, adapter_dir, hint)
    if not (adapter_dir / WEIGHTS).is_file():
        raise refuse(f"no {WEIGHTS} (only safetensors files are loaded)", adapter_dir, hint)
    return cfg


@dataclass
class AdapterFiles:
    """A checked PEFT LoRA adapter: `config` (adapter_config.json), `tensors` (the state dict as saved) and
    `modules` {module name, e.g. model.layers.0.self_attn.q_proj: (A [r, in], B [out, r])}."""

    dir: Path
    config: dict
    tensors: dict
    modules: dict = field(default_factory=dict)

    @property
    def target_modules(self) -> list[str] | str | None:
        return self.config.get("target_modules")

    @property
    def rslora(self) -> bool:
        return bool(self.config.get("use_rslora"))

    def rank(self, module: str) -> int:
        """r of `module`: its A's rows."""
        return int(self.modules[module][0].shape[0])

    def alpha(self, module: str) -> float:
        """alpha of `module`: alpha_pattern's value for it, else lora_alpha (r when absent)."""
        return float(pattern_value(self.config.get("alpha_pattern"), module,
                                   self.config.get("lora_alpha", self.rank(module))))

    def scaling(self, module: str) -> float:
        """What PEFT multiplies B A by for `module`: alpha / r, or alpha / sqrt(r) with use_rslora."""
        r = self.rank(module)
        return self.alpha(module) / (math.sqrt(r) if self.rslora else r)

    def state_dict(self) -> dict:
        return self.tensors

    def lora_config(self):
        """peft's LoraConfig of the adapter (as `LoraConfig.from_pretrained(dir)` reads it)."""
        from peft import LoraConfig

        return LoraConfig.from_pretrained(str(self.dir))


def modules_of(tensors: dict, adapter_dir: Path, hint: str | None = None) -> dict:
    """{module name: (A, B)} from a PEFT state dict; refuses LoRA on the embedding / lm_head, any tensor that
    is not a LoRA A/B matrix, and an A without its B (or the reverse)."""
    pairs: dict[str, dict] = {}
    for key, t in tensors.items():
        if "lora_embedding" in key or ".embed_tokens." in key or ".lm_head." in key:
            raise refuse(f"adapter has LoRA on the embedding or lm_head ({key})", adapter_dir, hint)
        m = _AB.match(key)
        if not m:
            raise refuse(f"adapter holds {key}, which is not a LoRA A/B matrix", adapter_dir, hint)
        pairs.setdefault(m.group(1), {})[m.group(2)] = t
    for name, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise refuse(f"adapter has lora_A without lora_B (or the reverse) for {name}", adapter_dir, hint)
    return {name: (ab["A"], ab["B"]) for name, ab in pairs.items()}


def read_adapter(adapter_dir: str | Path, hint: str | None = None) -> AdapterFiles:
    """The adapter in `adapter_dir` (adapter_config.json + adapter_model.safetensors), read and checked
    (module docstring); TunelabError, one line naming the folder, for anything refused or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    cfg = read_adapter_config(adapter_dir, hint)
    try:
        tensors = load_file(str(adapter_dir / WEIGHTS))
    except (OSError, SafetensorError) as e:
        raise refuse(f"unreadable {WEIGHTS} ({type(e).__name__})", adapter_dir, hint) from None
    return AdapterFiles(adapter_dir, cfg, tensors, modules_of(tensors, adapter_dir, hint))


def check_fits(load_result, adapter_dir: Path) -> None:
    """TunelabError when peft's `set_peft_model_state_dict` found adapter tensors the model has no place for."""
    unexpected = getattr(load_result, "unexpected_keys", None)
    if unexpected:
        raise TunelabError(f"adapter does not fit the base model: unexpected {unexpected[:2]}",
                           where=str(adapter_dir), hint="attach it to the base the run was trained on")
