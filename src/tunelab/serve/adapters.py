"""What a run is to the server: the base, a LoRA adapter of it, or something refused (a 400 with
the reason), and an adapter read from its safetensors file onto the engine's projections.

Served: finished sft / pretrain / dpo runs whose `adapter/` is a plain LoRA (PEFT, safetensors)
on the attention and MLP projections of the served base (Phi-3: its fused qkv_proj and gate_up_proj).
Refused, each with its reason:
    classify / reward runs          not a text generator (their head is a classifier)
    full / freeze runs (model/)     their own weights: serve them with `--base runs/NAME/model`
    qat / bitnet runs (quantized/)  a packed quantized model, not an adapter
    another base                    config.yaml's model.name resolves to another folder than --base
    what every reader of adapter files refuses (adapters/peft_files.py: DoRA, modules_to_save, LoRA on
    embed_tokens / lm_head, biases, fan_in_fan_out, trainable tokens, a .bin file), LoRA on other modules
A qlora run's adapter is applied to the full-precision base (what vLLM and Ollama do too); its
outputs differ slightly from the 4-bit model it trained on (`tunelab merge` writes that one).

Per projection, PEFT's scaling is s = alpha / r (alpha / sqrt(r) with use_rslora), with r and
alpha taken from rank_pattern / alpha_pattern when a pattern matches the module's name; the
engine keeps A.T and s B.T (infer/weights.py `Lora`), q/k/v and gate/up fused like the base.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from tunelab.errors import TunelabError
from tunelab.infer.weights import DecoderWeights, Lora, fuse_loras
from tunelab.serve.errors import APIError



def fused_groups(family: str) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """{module group: [(engine slot, the family's projections stacked into it)]}: q, k, v -> qkv and
    gate, up -> gate_up for Llama's layout; Phi-3's qkv_proj and gate_up_proj are one projection each
    (infer/arch.py `Arch.qkv`, `Arch.gate_up`)."""
    from tunelab.infer.arch import ARCHS

    arch = ARCHS[family]
    return {"self_attn": [("qkv", tuple(arch.qkv)), ("o", ("o_proj",))],
            "mlp": [("gate_up", tuple(arch.gate_up)), ("down", ("down_proj",))]}


# every projection name any family's adapter may target (the served modules)
PROJS = {"q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "gate_proj", "up_proj", "gate_up_proj", "down_proj"}
_MODULE = re.compile(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)$")


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
    def adapter_dir(self) -> Path:
        from tunelab.runs.rundir import RunDir

        return RunDir(self.path).adapter_dir

    @property
    def key(self) -> str:
        """The adapter's name in the engine: its folder and when it finished (a retrained run reloads)."""
        from tunelab.runs.rundir import RunDir

        return f"{self.path.resolve()}@{RunDir(self.path).done_path.stat().st_mtime_ns}"


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
    from tunelab.runs.kinds import GENERATIVE_TASKS, require_run

    try:
        run, cfg = require_run(path)
    except TunelabError as e:
        raise refuse(name, e.message.replace(str(path), name)) from None  # no server paths to clients
    task = run.task
    if task not in GENERATIVE_TASKS:
        raise refuse(name, f"it is a {task} run (a classifier head, not a text generator); "
                           "use `tunelab predict` on it")
    if run.quantized_dir.exists():
        raise refuse(name, "it saved a packed quantized model (qat / bitnet), not an adapter")
    if not run.adapter_dir.is_dir():
        if run.model_dir.is_dir():
            raise refuse(name, "it is a full fine-tune (its own weights in model/, no adapter); "
                               f"serve it with `tunelab serve --base {run.model_dir}`")
        raise refuse(name, "it has no adapter/ folder")
    try:
        run_base = run.config.model.name
    except TunelabError as e:
        raise refuse(name, e.message.replace(str(path), name)) from None
    if not same_model(run_base, base):
        raise refuse(name, f"it was trained on base '{run_base}'; this server serves '{base}' "
                           "(one base per server: start another with --base)")
    check_adapter_config(name, run.adapter_dir)
    try:
        template = run.template()
    except (OSError, ValueError, TypeError, TunelabError) as e:
        raise refuse(name, f"unreadable template.json ({type(e).__name__})") from None
    return RunInfo(name, path, cfg, template)


def check_adapter_config(name: str, adapter_dir: Path) -> dict:
    """adapter_config.json of a plain LoRA the engine computes, else the 400 naming what is not: the
    refusals every reader makes (adapters/peft_files.py) and LoRA on modules other than the projections."""
    from tunelab.adapters.peft_files import read_adapter_config

    try:
        cfg = read_adapter_config(adapter_dir)
    except TunelabError as e:
        raise refuse(name, e.message) from None
    targets = cfg.get("target_modules")
    if isinstance(targets, list):
        other = sorted(set(targets) - PROJS)
        if other:
            raise refuse(name, f"LoRA on {', '.join(other)} (served: the attention and MLP projections)")
    return cfg


def _in_features(p) -> int:
    """A projection's input width however the engine stores it: dense w ([in, out] transposed, else
    [out, in]), int4 codes (scales_and_zeros [in / group, out, 2]) or an int8 prepacked matrix ([out, in])."""
    if p.w is not None:
        return p.w.shape[0 if p.transposed else 1]
    if p.int4 is not None:
        return p.int4.in_features
    return torch.ops.quantized.linear_unpack(p.packed)[0].shape[1]


def read_adapter(name: str, adapter_dir: Path, w: DecoderWeights) -> dict[tuple[int, str], Lora]:
    """{(block index, "qkv" | "o" | "gate_up" | "down"): fused Lora in the engine's dtype and device}.

    Shapes are checked against the base: A [r, in], B [out, r] of the projection."""
    from tunelab.adapters.peft_files import read_adapter as read_files

    check_adapter_config(name, adapter_dir)
    try:
        files = read_files(adapter_dir)
    except TunelabError as e:
        raise refuse(name, e.message) from None
    groups = fused_groups(w.family)
    served = {g: {p for _, names in slots for p in names} for g, slots in groups.items()}
    found: dict[tuple[int, str, str], dict[str, torch.Tensor]] = {}
    for module, (a, b) in files.modules.items():
        m = _MODULE.match(module)
        if m is None or m.group(2) not in groups or m.group(3) not in served.get(m.group(2), ()):
            raise refuse(name, f"unexpected adapter tensor '{module}'")
        found[(int(m.group(1)), m.group(2), m.group(3))] = {"A": a.float(), "B": b.float(), "module": module}
    nq, nkv, hd = w.n_heads, w.n_kv_heads, w.head_dim
    inter = _in_features(w.blocks[0].down) if w.blocks else 0
    shapes = {"q_proj": (w.hidden, nq * hd), "k_proj": (w.hidden, nkv * hd), "v_proj": (w.hidden, nkv * hd),
              "o_proj": (nq * hd, w.hidden), "gate_proj": (w.hidden, inter), "up_proj": (w.hidden, inter),
              "down_proj": (inter, w.hidden),  # (in, out)
              "qkv_proj": (w.hidden, (nq + 2 * nkv) * hd), "gate_up_proj": (w.hidden, 2 * inter)}
    out: dict[tuple[int, str], Lora] = {}
    for i in range(len(w.blocks)):
        for group, fused in groups.items():
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
                    parts.append([(a, b * files.scaling(ab["module"]))])
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
