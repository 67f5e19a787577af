"""QLoRA on a GGUF file as stored: the model built from the GGUF, its Linear weights kept in their blocks.

    method.quant_type  auto (default)  gguf when the model is a GGUF file (or the embedded alias, a Q4_1
                                       GGUF) whose every block Linear is Q4_0, Q4_1, Q8_0, Q4_K or Q6_K, and
                                       method.quant_backend is not bitsandbytes; else nf4
                       gguf            those blocks, or one clear error saying why not
                       nf4 | fp4       the dequantized model re-quantized (adapters/qlora.quantize_base)

Why: the GGUF's weights *are* the model the user has. Dequantizing to fp32 and re-quantizing to NF4
rounds twice (Q4_1 -> fp32 is exact, fp32 -> NF4 is a second, different rounding); keeping the blocks
trains on exactly the GGUF's weights, and the base costs the file's bytes for those layers
(docs/quantization.md, "Training on the GGUF's own blocks").

Building: the architecture from the config (the resolved model's config.json when its cache is
there, else transformers' reading of the GGUF metadata) with parameters on the meta device; then
each GGUF tensor is read (memory-mapped, one at a time): every Linear of the blocks
(q, k, v, o, gate, up, down) becomes a `GGUFBlockLinear` over its blocks; everything else
(embeddings, norms, an untied head) is dequantized to the compute dtype. Llama's q/k rows are
stored permuted per head in GGUF (ggml's rope pairs adjacent dims); the blocks' rows are put back
in HF order (`unpermute_rows`), which never touches a code since a block lies inside one row.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.quant.gguf_blocks import GGML_TYPE_NAMES, decode, split_blocks
from tunelab.quant.gguf_file import GGUFFile, read_gguf
from tunelab.quant.gguf_linear import GGUFBlockLinear

@dataclass(frozen=True)
class GGUFArch:
    """What a GGUF of one `general.architecture` stores differently from the transformers model.

    permuted_qk  q/k rows permuted per head (convert_hf_to_gguf's llama permute): put back in HF order
    norm_shift   every `*norm.weight` is stored as HF's + shift (Gemma's (1 + w) RMSNorm: stored 1 + w),
                 so HF's = stored - shift, as transformers' GGUF loader does
    """

    permuted_qk: bool = False
    norm_shift: float = 0.0


ARCHES: dict[str, GGUFArch] = {
    "llama": GGUFArch(permuted_qk=True),
    "qwen2": GGUFArch(),
    "gemma3": GGUFArch(norm_shift=1.0),
}


def gguf_path_for(name: str) -> Path | None:
    """The GGUF file behind a model name: an alias shipped as GGUF (when its package is installed; one
    in chunk packages is assembled, models/gguf_parts.py) or a path ending in .gguf; None for anything else."""
    from tunelab.models.registry import ALIASES, alias_gguf

    alias = ALIASES.get(name)
    if alias is not None:
        return alias_gguf(alias)
    p = Path(name).expanduser()
    return p if p.suffix == ".gguf" and p.is_file() else None


def _reader(path: Path) -> GGUFFile:
    try:
        return read_gguf(path)
    except (ValueError, OSError) as e:
        raise TunelabError(f"cannot read GGUF {path}: {e}", where="model.name") from e


def linear_kinds() -> tuple[str, ...]:
    """GGUF tensor kinds that are Linear weights of a block."""
    return ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def _is_block_linear(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "blk" and parts[2] in linear_kinds() and parts[3] == "weight"


def why_not_blocks(reader) -> str | None:
    """None when the GGUF can be trained as stored, else the reason (architecture, tensor types)."""
    arch = reader.get("general.architecture")
    if arch not in ARCHES:
        return f"architecture {arch!r} is not one of {', '.join(ARCHES)}"
    odd = sorted({t.tensor_type.name for t in reader.tensors
                  if _is_block_linear(t.name) and t.tensor_type.name not in GGML_TYPE_NAMES})
    if odd:
        return f"its Linear weights include {', '.join(odd)} (kept as blocks: {', '.join(GGML_TYPE_NAMES)})"
    return None


def unpermute_rows(n_rows: int, n_head: int) -> torch.Tensor:
    """Row order taking a GGUF llama q/k matrix back to HF's: HF row i = GGUF row index[i] (the
    inverse of convert_hf_to_gguf's permute; per head of d rows, [0, d/2, 1, d/2+1, ...] -> [0..d-1])."""
    rows = torch.arange(n_rows)
    return rows.reshape(n_head, 2, n_rows // n_head // 2).transpose(1, 2).reshape(n_rows).argsort()


def _raw(t) -> torch.Tensor:
    """The tensor's bytes / values as a torch tensor of its own (the file stays read-only)."""
    return torch.from_numpy(np.array(t.data))


def _dense(t, dtype: torch.dtype) -> torch.Tensor:
    """A GGUF tensor dequantized: our decoders for the block types we keep, gguf.quants for others."""
    name = t.tensor_type.name
    if name in GGML_TYPE_NAMES:
        w = decode(split_blocks(_raw(t), GGML_TYPE_NAMES[name]))
    elif name in ("F32", "F16"):
        w = _raw(t).float()
    else:
        from gguf import quants

        w = torch.from_numpy(np.ascontiguousarray(quants.dequantize(t.data, t.tensor_type)))
    return w.to(dtype)


def _config_and_tokenizer(name: str, path: Path):
    """(transformers config, tokenizer, folder or file the run records): the resolved cache's config
    and tokenizer when complete (models/registry.resolve wrote them), else read from the GGUF."""
    from transformers import AutoConfig, AutoTokenizer

    from tunelab.models.registry import ALIASES, model_cache_dir

    key = name if name in ALIASES else "gguf-" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    cache = model_cache_dir(key)  # registry.resolve's cache folder for this name
    if (cache / "config.json").is_file() and (cache / "DONE").is_file():
        config, tok, where = AutoConfig.from_pretrained(str(cache)), AutoTokenizer.from_pretrained(str(cache)), cache
    else:
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        tok, where = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name), path
    config.__dict__.pop("quantization_config", None)  # the built model's weights are not transformers-GGUF
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return config, tok, where


def _set_tensor(model: nn.Module, hf_name: str, value: torch.Tensor) -> None:
    mod_name, _, leaf = hf_name.rpartition(".")
    mod = model.get_submodule(mod_name)
    old = mod._parameters.get(leaf)
    if old is not None and tuple(old.shape) != tuple(value.shape):
        value = value.reshape(old.shape)
    mod._parameters[leaf] = nn.Parameter(value, requires_grad=False)


def build_model(path: Path, config, dtype: torch.dtype = torch.float32, reader=None) -> nn.Module:
    """The causal LM of `config` with the GGUF's weights: block Linears as GGUFBlockLinear, the rest
    dequantized to `dtype`; every parameter frozen. TunelabError when a tensor has no place."""
    import gguf
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    reader = reader if reader is not None else _reader(path)
    reason = why_not_blocks(reader)
    if reason:
        raise TunelabError(f"{path.name} cannot be trained as stored: {reason}", where="method.quant_type",
                           hint="use method.quant_type: nf4 (re-quantize the dequantized model)")
    arch = reader.get("general.architecture")
    rule = ARCHES[arch]
    with init_empty_weights(include_buffers=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    kind = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(kind, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    hf_of = {}
    for hf in model.state_dict():
        if tied and hf == "lm_head.weight":
            continue
        g = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if g is not None:
            hf_of[g] = hf
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    seen = set()
    for t in reader.tensors:
        hf = hf_of.get(t.name)
        if hf is None:
            if t.name == "rope_freqs.weight":
                continue  # rope factors: transformers computes them from the config
            raise TunelabError(f"GGUF tensor {t.name} has no place in {type(model).__name__}", where=str(path))
        seen.add(hf)
        order = None
        if rule.permuted_qk and t.name.split(".")[-2] in ("attn_q", "attn_k"):
            order = unpermute_rows(int(t.ne[-1]), n_head if ".attn_q." in t.name else n_kv)
        if _is_block_linear(t.name):
            lin_name = hf.rpartition(".")[0]
            parent_name, _, child = lin_name.rpartition(".")
            old = model.get_submodule(lin_name)
            bias = old.bias if getattr(old, "bias", None) is not None and old.bias.device.type != "meta" else None
            layer = GGUFBlockLinear.from_raw(_raw(t), GGML_TYPE_NAMES[t.tensor_type.name], bias, order)
            setattr(model.get_submodule(parent_name), child, layer)
            continue
        w = _dense(t, torch.float32)
        if rule.norm_shift and t.name.endswith("norm.weight"):
            w = w - rule.norm_shift  # stored 1 + w; subtracted in fp32, as transformers' loader does
        w = w.to(dtype)
        if order is not None:  # a q/k bias
            w = w.index_select(0, order)
        if hf.endswith(".bias") and isinstance(model.get_submodule(hf.rpartition(".")[0]), GGUFBlockLinear):
            model.get_submodule(hf.rpartition(".")[0]).bias = nn.Parameter(w, requires_grad=False)
            continue
        _set_tensor(model, hf, w)
    if tied:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    missing = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise TunelabError(f"{path.name} lacks tensors for {', '.join(missing[:3])}", where=str(path))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def base_nbytes(model: nn.Module) -> dict[str, int]:
    """{'blocks': bytes of the stored weights of every QuantLinear (GGUF blocks or NF4 codes and
    constants), 'dense': bytes of every other parameter and buffer (tied tensors once)}."""
    from tunelab.quant.nn import QuantLinear

    quant = [m for m in model.modules() if isinstance(m, QuantLinear)]
    blocks = sum(m.nbytes() for m in quant)
    block_ids = {id(b) for m in quant for b in m.buffers()}
    seen, dense = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in block_ids or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        dense += t.numel() * t.element_size()
    return {"blocks": blocks, "dense": dense}


def wants_gguf_blocks(cfg, where: str = "method.quant_type"):
    """(GGUF path, its reader) to train as stored for this qlora run config (methods/qlora.py asks), or
    None (then method.quant_type auto means nf4). Refuses quant_type gguf where it cannot apply, with
    the reason."""
    m = cfg.method
    if m.quant_type in ("nf4", "fp4"):
        return None
    explicit = m.quant_type == "gguf"
    if m.quant_backend == "bitsandbytes":
        if explicit:
            raise TunelabError("method.quant_type gguf runs on tunelab's backend", where="method.quant_backend",
                               hint="drop quant_backend: bitsandbytes, or use quant_type: nf4")
        return None
    path = gguf_path_for(cfg.model.name)
    if path is None:
        if explicit:
            raise TunelabError(f"model '{cfg.model.name}' is not a GGUF file", where=where,
                               hint="give a .gguf file (or the embedded alias), or use quant_type: nf4")
        return None
    reader = _reader(path)
    reason = why_not_blocks(reader)
    if reason:
        if explicit:
            raise TunelabError(f"{path.name} cannot be trained as stored: {reason}", where=where,
                               hint="use method.quant_type: nf4 (re-quantize the dequantized model)")
        return None
    return path, reader


def load_gguf_qlora_base(cfg, device: torch.device | None = None):
    """(model, tokenizer, ResolvedModel) for a qlora run config on a GGUF trained as stored, or None
    when the run is not that case (`wants_gguf_blocks`). `cfg` is left unchanged: method.quant_type
    auto is settled by the qlora method's `resolve` (methods/qlora.py), which the recipe calls first,
    so the run's config.yaml records the base it trained on."""
    from tunelab.models.load import pick_dtype
    from tunelab.models.registry import ResolvedModel

    found = wants_gguf_blocks(cfg)
    if found is None:
        return None
    path, reader = found
    device = device or torch.device("cpu")
    config, tok, where = _config_and_tokenizer(cfg.model.name, path)
    model = build_model(path, config, pick_dtype(cfg.model.dtype, device), reader).to(device)
    return model, tok, ResolvedModel(cfg.model.name, str(where), "gguf")
