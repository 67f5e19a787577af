"""Post-training quantization of a whole causal LM, and its packed checkpoint.

    quantize(model, "nf4", double_quant=True, skip=("lm_head",))   every Linear -> QuantLinear
    save(model, out_dir, tokenizer)    out_dir/model.safetensors + manifest.json + config + tokenizer
    load(out_dir) -> model             the same tensors, bit for bit

The checkpoint holds each QuantLinear's buffers as they are (`<name>.packed`, `<name>.absmax`,
`<name>.absmax_scale`, `<name>.absmax_offset`), every other tensor in `rest_dtype` (bf16 by default:
embeddings, norms, a skipped lm_head), and `manifest.json` lists the quantized layers and their
format, so `load` rebuilds the same modules before reading the tensors. Tied tensors (lm_head =
embed_tokens) are stored once and re-tied on load.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.quant.nn import FORMATS, QuantLinear, replace_linears

PTQ_FORMATS = FORMATS  # nf4, fp4, int4, int8, ternary


def check_options(fmt: str, rest_dtype: str, blocksize: int, out: str | Path | None,
                  where: tuple[str, str, str, str] = ("fmt", "rest_dtype", "blocksize", "out")) -> None:
    """Refuse, in one line naming the option (`where`: how the caller spells fmt, rest_dtype, blocksize,
    out), what `quantize` + `save` cannot do: an unknown format or dtype, an odd or non-positive
    blocksize, an output path that is a file."""
    from tunelab.models.load import DTYPES

    if fmt not in PTQ_FORMATS:
        raise TunelabError(f"unknown format '{fmt}'", where=where[0], hint=f"one of: {', '.join(PTQ_FORMATS)}")
    if rest_dtype not in DTYPES:
        raise TunelabError(f"unknown dtype '{rest_dtype}'", where=where[1], hint="bf16, fp16 or fp32")
    if blocksize <= 0 or blocksize % 2:
        raise TunelabError(f"blocksize must be a positive even number, got {blocksize}", where=where[2])
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise TunelabError(f"{out} exists and is not a folder", where=where[3])
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
MANIFEST_VERSION = 1


def quantize(model: nn.Module, fmt: str, double_quant: bool = False, skip: tuple[str, ...] = ("lm_head",),
             blocksize: int = 64, calibrate: str | None = None, rest_dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every nn.Linear (except `skip`) by a QuantLinear in `fmt`, in place.

    calibrate (int8 only): "minmax" | "percentile" | "mse" chooses each output row's clipping value
    (`tunelab.quant.calibrate`). rest_dtype casts the remaining floating tensors (None = keep).
    """
    check_quantize(fmt, double_quant, calibrate)

    def make(_name: str, lin: nn.Linear) -> QuantLinear:
        return _quant_layer(lin.weight, lin.bias, fmt, double_quant, blocksize, calibrate)

    names = replace_linears(model, make, skip)
    if not names:
        raise TunelabError("no Linear layer left to quantize", where="--skip", hint="skip fewer layer names")
    if rest_dtype is not None:
        for mod in model.modules():
            if isinstance(mod, QuantLinear):
                continue
            for p in mod.parameters(recurse=False):
                if p.is_floating_point():
                    p.data = p.data.to(rest_dtype)
    return model


def check_quantize(fmt: str, double_quant: bool, calibrate: str | None) -> None:
    """Refuse an unknown format, --calibrate off int8, --double-quant off the 4-bit formats."""
    if fmt not in PTQ_FORMATS:
        raise TunelabError(f"unknown format '{fmt}'", where="--format", hint=f"one of: {', '.join(PTQ_FORMATS)}")
    if calibrate is not None and fmt != "int8":
        raise TunelabError(f"--calibrate applies to int8 (per-row clipping), not {fmt}", where="--calibrate",
                           hint="4-bit and ternary formats use their own absmax/absmean scales")
    if double_quant and fmt not in ("nf4", "fp4", "int4"):
        raise TunelabError(f"--double-quant applies to the 4-bit formats, not {fmt}", where="--double-quant")


def _quant_layer(weight: torch.Tensor, bias, fmt: str, double_quant: bool, blocksize: int,
                 calibrate: str | None) -> QuantLinear:
    clip = None
    if calibrate is not None:
        from tunelab.quant.calibrate import clip_value

        try:
            clip = clip_value(weight.detach().float(), calibrate, bits=8, per_channel=True)
        except ValueError as e:
            raise TunelabError(str(e), where="--calibrate") from e
    return QuantLinear.from_weight(weight, bias, fmt, blocksize, double_quant, clip=clip)


def stream_quantize(path: str | Path, fmt: str, double_quant: bool = False, skip: tuple[str, ...] = ("lm_head",),
                    blocksize: int = 64, calibrate: str | None = None,
                    rest_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """`quantize` of the safetensors checkpoint in `path` without loading it whole (`stream_load`): each
    Linear is quantized as its weight is read (4-bit formats by the chunked codec, the others from an
    fp32 copy of that one weight), biases kept in fp32 and every other tensor read as `rest_dtype`, so
    the result equals `quantize(load_causal_lm(path, fp32), ..., rest_dtype)` tensor for tensor."""
    from tunelab.quant.codecs import FORMATS_4BIT
    from tunelab.quant.stream_load import quant_linear_4bit, stream_quantized

    check_quantize(fmt, double_quant, calibrate)
    workers = torch.get_num_threads()

    def make(_name: str, w: torch.Tensor, b: torch.Tensor | None) -> QuantLinear:
        if fmt in FORMATS_4BIT:
            return quant_linear_4bit(w, b, fmt, blocksize, double_quant, workers=workers)
        return _quant_layer(w.float(), b, fmt, double_quant, blocksize, calibrate)

    model = stream_quantized(path, make, dtype=rest_dtype, skip=skip, bias_dtype=torch.float32)
    if not any(isinstance(m, QuantLinear) for m in model.modules()):
        raise TunelabError("no Linear layer left to quantize", where="--skip", hint="skip fewer layer names")
    return model


def quant_layers(model: nn.Module) -> dict[str, dict]:
    """name -> how to rebuild each QuantLinear (shape, format, flags)."""
    return {name: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None,
                   "fmt": m.fmt, "blocksize": m.blocksize, "double_quant": m.double_quant,
                   "act_quant": m.act_quant}
            for name, m in model.named_modules() if isinstance(m, QuantLinear)}


def _unique_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """state_dict without aliases: (name -> tensor, alias name -> stored name)."""
    tensors, tied, seen = {}, {}, {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.dtype, tuple(t.shape), t.storage_offset())
        if t.numel() and key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().contiguous().cpu()
    return tensors, tied


def save(model: nn.Module, out_dir: str | Path, tokenizer=None, source: str = "", extra: dict | None = None) -> dict:
    """Write the packed checkpoint; returns the manifest (with bytes on disk)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, tied = _unique_tensors(model)
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt", "producer": "tunelab.quant"})
    if getattr(model, "config", None) is not None:
        model.config.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    layers = quant_layers(model)
    manifest = {
        "version": MANIFEST_VERSION,
        "source": source,
        "formats": sorted({v["fmt"] for v in layers.values()}),
        "layers": layers,
        "tied": tied,
        "bytes_on_disk": (out / WEIGHTS).stat().st_size,
        "quantized_weight_bytes": sum(m.nbytes() for m in model.modules() if isinstance(m, QuantLinear)),
        "quantized_params": sum(v["in_features"] * v["out_features"] for v in layers.values()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    manifest["bits_per_quantized_param"] = 8 * manifest["quantized_weight_bytes"] / max(1, manifest["quantized_params"])
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(path: str | Path) -> dict:
    p = Path(path) / MANIFEST
    if not p.is_file():
        raise TunelabError(f"{path} is not a tunelab quantized checkpoint (no {MANIFEST})", where=str(path),
                           hint="create one with `tunelab quantize MODEL --format nf4 --out DIR`")
    try:
        manifest = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise TunelabError(f"invalid JSON ({e.msg})", where=f"{p}:{e.lineno}") from e
    if manifest.get("version") != MANIFEST_VERSION:
        raise TunelabError(f"unsupported manifest version {manifest.get('version')}", where=str(p))
    return manifest


def load(path: str | Path, device: str = "cpu") -> nn.Module:
    """Rebuild the model of a `save`d checkpoint: architecture from config.json, QuantLinear layers from
    the manifest, every tensor read back unchanged; returns the model in eval mode."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    manifest = read_manifest(path)
    config = AutoConfig.from_pretrained(path)
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every tensor is overwritten below: skip the random init
        model = AutoModelForCausalLM.from_config(config)
    layers = manifest["layers"]

    def make(name, lin):
        spec = layers[name]
        return QuantLinear(spec["in_features"], spec["out_features"], spec["bias"], spec["fmt"], spec["blocksize"],
                           spec["double_quant"], act_quant=spec.get("act_quant", False))

    for name in layers:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(name, getattr(parent, child)))
    tensors = load_file(str(path / WEIGHTS), device=device)
    for alias, stored in manifest.get("tied", {}).items():
        tensors[alias] = tensors[stored]
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("inv_freq")]
    if missing or unexpected:
        raise TunelabError(f"checkpoint does not match its manifest (missing {missing[:3]}, unexpected "
                           f"{unexpected[:3]})", where=str(path / WEIGHTS))
    if manifest.get("tied"):
        model.tie_weights()
    return model.to(device).eval()

