"""What a run is to the server: the base, a LoRA adapter of it, or something refused (a 400 with
the reason), and an adapter read from its safetensors file onto the engine's projections.

Served: finished sft / pretrain / dpo runs whose `adapter/` is a plain LoRA (PEFT, safetensors)
on the q, k, v, o, gate, up, down projections of the served base. Refused, each with its reason:
    classify / reward runs          not a text generator (their head is a classifier)
    full / freeze runs (model/)     their own weights: serve them with `--base runs/NAME/model`
    qat / bitnet runs (quantized/)  a packed quantized model, not an adapter
    another base                    config.yaml's model.name resolves to another folder than --base
    DoRA, modules_to_save, LoRA on embed_tokens / lm_head, biases, fan_in_fan_out, a .bin file
A qlora run's adapter is applied to the full-precision base (what vLLM and Ollama do too); its
outputs differ slightly from the 4-bit model it trained on (`tunelab merge` writes that one).

Per projection, PEFT's scaling is s = alpha / r (alpha / sqrt(r) with use_rslora), with r and
alpha taken from rank_pattern / alpha_pattern when a pattern matches the module's name; the
engine keeps A.T and s B.T (infer/weights.py `Lora`), q/k/v and gate/up fused like the base.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from tunelab.errors import TunelabError
from tunelab.infer.weights import DecoderWeights, Lora, fuse_loras
from tunelab.serve.errors import APIError

FUSED = {"self_attn": [("qkv", ("q_proj", "k_proj", "v_proj")), ("o", ("o_proj",))],
         "mlp": [("gate_up", ("gate_proj", "up_proj")), ("down", ("down_proj",))]}
PROJS = {name for groups in FUSED.values() for _, names in groups for name in names}
_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


def refuse(run: str, why: str) -> APIError:
    return APIError(400, f"model '{run}' cannot be served: {why}", param="model", code="model_not_supported")


@dataclass
class RunInfo:
    """A finished run the server can serve: its folder, config and template."""

    name: str
    path: Path
    config: dict
    template: object  # tunelab.data.templates.Template

    @property
    def key(self) -> str:
        """The adapter's name in the engine: its folder and when it finished (a retrained run reloads)."""
        return f"{self.path.resolve()}@{(self.path / 'DONE').stat().st_mtime_ns}"


def same_model(a: str, b: str) -> bool:
    """Do two model names (aliases, folders, hub ids) resolve to the same weights?"""
    from tunelab.models.registry import resolve

    if a == b:
        return True
    try:
        pa, pb = resolve(a).path, resolve(b).path
    except TunelabError:
        return False
    return Path(pa).expanduser().resolve() == Path(pb).expanduser().resolve() if Path(pa).exists() else pa == pb


def open_run(name: str, path: Path, base: str) -> RunInfo:
    """The run at `path` as served on `base`, or the 400 that says why it is not (module docstring)."""
    from tunelab.data.templates import Template
    from tunelab.runs.kinds import GENERATIVE_TASKS, require_run

    try:
        _, cfg = require_run(path)
    except TunelabError as e:
        raise refuse(name, e.message.replace(str(path), name)) from None  # no server paths to clients
    task = str(cfg.get("task") or "sft")
    if task not in GENERATIVE_TASKS:
        raise refuse(name, f"it is a {task} run (a classifier head, not a text generator); "
                           "use `tunelab predict` on it")
    if (path / "quantized").exists():
        raise refuse(name, "it saved a packed quantized model (qat / bitnet), not an adapter")
    if not (path / "adapter").is_dir():
        if (path / "model").is_dir():
            raise refuse(name, "it is a full fine-tune (its own weights in model/, no adapter); "
                               f"serve it with `tunelab serve --base {path / 'model'}`")
        raise refuse(name, "it has no adapter/ folder")
    run_base = str((cfg.get("model") or {}).get("name", ""))
    if not same_model(run_base, base):
        raise refuse(name, f"it was trained on base '{run_base}'; this server serves '{base}' "
                           "(one base per server: start another with --base)")
    check_adapter_config(name, path / "adapter")
    try:
        template = Template.load(path / "template.json")
    except (OSError, ValueError, TypeError, TunelabError) as e:
        raise refuse(name, f"unreadable template.json ({type(e).__name__})") from None
    return RunInfo(name, path, cfg, template)


def _adapter_config(name: str, adapter_dir: Path) -> dict:
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise refuse(name, f"unreadable adapter_config.json ({type(e).__name__})") from None
    return cfg if isinstance(cfg, dict) else {}


def check_adapter_config(name: str, adapter_dir: Path) -> dict:
    """adapter_config.json of a plain LoRA the engine computes, else the 400 naming what is not."""
    cfg = _adapter_config(name, adapter_dir)
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise refuse(name, f"a {cfg.get('peft_type')} adapter (only LoRA is served)")
    if cfg.get("use_dora"):
        raise refuse(name, "a DoRA adapter (its magnitude vectors are not computed by the engine)")
    if cfg.get("modules_to_save"):
        raise refuse(name, f"the adapter saves whole modules ({', '.join(cfg['modules_to_save'])}), "
                           "e.g. a classification head or an embedding")
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        raise refuse(name, "the adapter trains biases")
    if cfg.get("fan_in_fan_out"):
        raise refuse(name, "fan_in_fan_out adapters (GPT-2 style Conv1D) are not served")
    targets = cfg.get("target_modules")
    if isinstance(targets, list):
        other = sorted(set(targets) - PROJS)
        if other:
            raise refuse(name, f"LoRA on {', '.join(other)} (served: the attention and MLP projections)")
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise refuse(name, "no adapter_model.safetensors (only safetensors files are loaded)")
    return cfg


def _pattern(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: the first key matching the end of the module's name."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def read_adapter(name: str, adapter_dir: Path, w: DecoderWeights) -> dict[tuple[int, str], Lora]:
    """{(block index, "qkv" | "o" | "gate_up" | "down"): fused Lora in the engine's dtype and device}.

    Shapes are checked against the base: A [r, in], B [out, r] of the projection."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg = check_adapter_config(name, adapter_dir)
    try:
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    except (OSError, SafetensorError) as e:
        raise refuse(name, f"unreadable adapter_model.safetensors ({type(e).__name__})") from None
    found: dict[tuple[int, str, str], dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if m is None or m.group(3) not in PROJS or m.group(2) not in FUSED:
            raise refuse(name, f"unexpected adapter tensor '{key}'")
        found.setdefault((int(m.group(1)), m.group(2), m.group(3)), {})[m.group(4)] = t.float()
    nq, nkv, hd = w.n_heads, w.n_kv_heads, w.head_dim
    inter = w.blocks[0].down.w.shape[0 if w.blocks[0].down.transposed else 1] if w.blocks else 0
    shapes = {"q_proj": (w.hidden, nq * hd), "k_proj": (w.hidden, nkv * hd), "v_proj": (w.hidden, nkv * hd),
              "o_proj": (nq * hd, w.hidden), "gate_proj": (w.hidden, inter), "up_proj": (w.hidden, inter),
              "down_proj": (inter, w.hidden)}  # (in, out)
    out: dict[tuple[int, str], Lora] = {}
    for i in range(len(w.blocks)):
        for group, fused in FUSED.items():
            for slot, names in fused:
                parts = []
                for proj in names:
                    ab = found.pop((i, group, proj), None)
                    if ab is None:
                        parts.append([])
                        continue
                    a, b = ab.get("A"), ab.get("B")
                    n_in, n_out = shapes[proj]
                    if a is None or b is None or a.shape[1] != n_in or b.shape[0] != n_out or a.shape[0] != b.shape[1]:
                        raise refuse(name, f"the adapter does not fit the base (layer {i} {proj})")
                    module = f"model.layers.{i}.{group}.{proj}"
                    r = a.shape[0]
                    alpha = float(_pattern(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", r)))
                    s = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
                    parts.append([(a, b * s)])
                lo = fuse_loras([shapes[p][1] for p in names], parts, w.dtype)
                if lo is not None:
                    out[(i, slot)] = Lora(lo.at.to(w.embed.device), lo.bt.to(w.embed.device))
    if found:
        raise refuse(name, f"the adapter has layers the base does not ({min(found)[0]})")
    return out


def attach(w: DecoderWeights, key: str, loras: dict[tuple[int, str], Lora]) -> None:
    """Put an adapter's Loras on the engine's projections under `key` (Proj.named)."""
    for (i, slot), lo in loras.items():
        getattr(w.blocks[i], slot).named[key] = lo


def detach(w: DecoderWeights, key: str) -> None:
    for blk in w.blocks:
        for slot in ("qkv", "o", "gate_up", "down"):
            getattr(blk, slot).named.pop(key, None)
