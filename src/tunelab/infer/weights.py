"""The weights of a Llama-family decoder, read out of a transformers (optionally PEFT-wrapped) model
for the decode engine (infer/decode.py).

    per block:  q, k, v fused into one [in, (nq + 2 nkv) hd] matrix, gate and up into one [in, 2 I],
                o [nq hd, hidden], down [I, hidden]; the two RMSNorm weights
    model:      the token embedding, the final norm, the head (the embedding itself when tied)

In fp32 every matrix is stored transposed, `Wt = W.T` contiguous ([in, out]): MKL's one-row
product `x @ Wt` streams it faster than `F.linear(x, W)`; bf16 keeps `W` ([out, in]), the layout its
kernels are fast on (docs/inference.md has both measurements). With `weights="int8"` a matrix is
stored per output channel as int8, `W ~= q * scale[out]` (scale = absmax / 127), prepacked for
fbgemm's dynamic-quantized linear: y = dequant(quant_u8(x) @ q) + b, a quarter of fp32's bytes to
read per token, and no longer transformers' arithmetic (tokens can differ from fp32).

A LoRA layer contributes either merged, `Wt = (W0 + s B A).T` formed in fp32 (what `tunelab merge`
writes), or kept apart as `(A.T, s B.T)` so that `y = x Wt + (x A.T)(s B.T)`: adapters stay
swappable and the base is never rewritten. A 4-bit `QuantLinear` base is decoded once to the
engine's dtype (the exact weights training saw, as merge does).

`read_weights` raises `Unsupported` (a reason in one line) for anything the engine does not compute
exactly: another architecture, DoRA, biases on o/gate/up/down, rope scaling other than the default
and llama3 kinds; callers fall back to transformers' `generate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

ARCHITECTURES = ("llama", "mistral", "qwen2")


class Unsupported(Exception):
    """This model cannot run on the decode engine; the message says why."""


@dataclass
class Lora:
    """One unmerged adapter on a projection: delta(x) = (x @ at) @ bt, with the scale folded into bt."""

    at: torch.Tensor  # [in, r]  = A.T
    bt: torch.Tensor  # [r, out] = s B.T,  s = alpha / r


@dataclass
class Proj:
    """y = x @ w (transposed) or F.linear(x, w) (+ bias) (+ every lora's delta); or, int8, fbgemm's
    dynamic-quantized linear of the prepacked weight (the bias inside it). `named` holds adapters
    that only some rows of a batch use (several LoRA adapters over one base: decode.py `_linear`)."""

    w: torch.Tensor | None  # [in, out] when transposed, else [out, in]; None when packed
    bias: torch.Tensor | None = None
    loras: list[Lora] = field(default_factory=list)
    transposed: bool = True
    packed: object = None  # torch.ops.quantized.linear_prepack(...) for int8
    named: dict[str, Lora] = field(default_factory=dict)  # adapters applied to the rows a route gives them


@dataclass
class Block:
    attn_norm: torch.Tensor
    qkv: Proj
    o: Proj
    mlp_norm: torch.Tensor
    gate_up: Proj
    down: Proj


@dataclass
class DecoderWeights:
    embed: torch.Tensor  # [vocab, hidden]
    blocks: list[Block]
    norm: torch.Tensor
    head: Proj
    n_heads: int
    n_kv_heads: int
    head_dim: int
    eps: float
    rotary: nn.Module  # the model's own rotary embedding (cos/sin are computed by it, exactly as in HF)
    dtype: torch.dtype

    @property
    def hidden(self) -> int:
        return self.embed.shape[1]


def _unwrap(model):
    """(the transformers model, the active LoRA adapter name or None)."""
    if hasattr(model, "get_base_model"):
        return model.get_base_model(), model.active_adapter
    return model, None


def _dense(mod: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W [out, in] in fp32, bias) of an nn.Linear or a tunelab QuantLinear (decoded)."""
    from tunelab.quant.nn import QuantLinear

    if isinstance(mod, QuantLinear):
        return mod.dequantize_weight(torch.float32), mod.bias
    if type(mod) is nn.Linear:
        return mod.weight.detach().float(), mod.bias
    raise Unsupported(f"{type(mod).__name__} layers are not computed by the decode engine")


def _read(mod: nn.Module, adapter: str | None, merge: bool) -> tuple[torch.Tensor, torch.Tensor | None, list]:
    """(W fp32 [out, in], bias, [(A [r, in], s B [out, r])]) of a projection; with `merge`,
    W = W0 + s B A and no loras."""
    loras = []
    if hasattr(mod, "modules_to_save") and hasattr(mod, "original_module"):  # peft's modules_to_save copy
        mod = mod.modules_to_save[adapter] if isinstance(adapter, str) and adapter in mod.modules_to_save \
            else mod.original_module
    if hasattr(mod, "base_layer") and hasattr(mod, "lora_A"):  # a peft LoraLayer
        if getattr(mod, "merged", False):
            raise Unsupported("the adapter is merged into the layer in place; unmerge it or merge it for good")
        names = [adapter] if isinstance(adapter, str) else list(adapter or [])
        for name in names:
            if name not in mod.lora_A:
                continue
            if getattr(mod, "use_dora", {}).get(name, False):
                raise Unsupported("DoRA adapters are not computed by the decode engine")
            a = mod.lora_A[name].weight.detach().float()  # [r, in]
            b = mod.lora_B[name].weight.detach().float() * mod.scaling[name]  # s B  [out, r]
            loras.append((a, b))
        mod = mod.base_layer
    w, bias = _dense(mod)
    if merge and loras:
        w = w + sum(b @ a for a, b in loras)  # W0 + s B A, in fp32 as `tunelab merge`
        loras = []
    return w, bias, loras


def _pack_int8(w: torch.Tensor, bias: torch.Tensor | None):
    """fbgemm's prepacked int8 weight: per output channel, q = round(W / s), s = absmax(row) / 127."""
    import warnings

    scale = (w.abs().amax(1) / 127).clamp(min=1e-12).double()
    with warnings.catch_warnings():  # quantized tensors are marked deprecated; they are what fbgemm takes
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(w.float(), scale, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, None if bias is None else bias.float())


def _proj(parts: list[tuple], dtype: torch.dtype, bias_ok: bool, weights: str = "dense") -> Proj:
    """Stack the outputs of several projections of the same input into one Proj (fused qkv, gate_up)."""
    full = torch.cat([w for w, _, _ in parts], 0) if len(parts) > 1 else parts[0][0]
    transposed = dtype == torch.float32
    wt = full.t().contiguous().to(dtype) if transposed else full.to(dtype).contiguous()
    biases = [b for _, b, _ in parts]
    if any(b is not None for b in biases) and not bias_ok:
        raise Unsupported("a bias on this projection is not computed by the decode engine")
    bias = None
    if any(b is not None for b in biases):
        bias = torch.cat([b.detach().float() if b is not None else torch.zeros(w.shape[0])
                          for (w, _, _), b in zip(parts, biases)]).to(dtype)
    fused = fuse_loras([w.shape[0] for w, _, _ in parts], [lo for _, _, lo in parts], dtype)
    loras = [fused] if fused is not None else []
    if weights == "int8":
        return Proj(None, None, loras, packed=_pack_int8(full, bias))
    return Proj(wt, bias, loras, transposed=transposed)


def fuse_loras(outs: list[int], parts: list[list[tuple]], dtype: torch.dtype) -> Lora | None:
    """One Lora over the stacked outputs of several projections (fused qkv, gate_up), from each
    projection's [(A [r, in], s B [out, r])] (an empty list: no adapter on that one); None if none.
    A stacked on the rank axis, B block-diagonal, so
    x @ [A1; A2].T @ blockdiag(s1 B1, s2 B2).T = [x A1.T (s1 B1).T, x A2.T (s2 B2).T]."""
    if not any(parts):
        return None
    at = torch.cat([a for lo in parts for a, _ in lo], 0).t().contiguous()
    bt = torch.zeros(at.shape[1], sum(outs))
    r0 = 0
    for lo, col0, n in zip(parts, [sum(outs[:i]) for i in range(len(outs))], outs):
        for a, b in lo:
            bt[r0:r0 + a.shape[0], col0:col0 + n] = b.t()
            r0 += a.shape[0]
    return Lora(at.to(dtype), bt.to(dtype))


WEIGHTS = ("dense", "int8")


def read_weights(model, dtype: torch.dtype = torch.float32, merge: bool = True,
                 weights: str = "dense") -> DecoderWeights:
    """The engine's copy of `model`'s weights in `dtype` (see the module docstring), its matrices int8
    with `weights="int8"`; Unsupported if the engine cannot compute this model."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}")
    if weights == "int8" and torch.backends.quantized.engine not in ("x86", "fbgemm"):
        raise Unsupported(f"int8 weights need fbgemm (x86); this build's engine is "
                          f"'{torch.backends.quantized.engine}'")
    hf, adapter = _unwrap(model)
    cfg = hf.config
    if cfg.model_type not in ARCHITECTURES:
        raise Unsupported(f"architecture '{cfg.model_type}' (the engine runs {', '.join(ARCHITECTURES)})")
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", "llama3"):
        raise Unsupported(f"rope type '{rope.get('rope_type')}'")
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", cfg.model_type == "mistral"):
        raise Unsupported("sliding-window attention")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise Unsupported(f"activation '{cfg.hidden_act}'")
    dec = hf.model
    blocks = []
    for layer in dec.layers:
        at, mlp = layer.self_attn, layer.mlp
        qkv = [_read(getattr(at, n), adapter, merge) for n in ("q_proj", "k_proj", "v_proj")]
        blocks.append(Block(
            attn_norm=layer.input_layernorm.weight.detach().to(dtype),
            qkv=_proj(qkv, dtype, True, weights),
            o=_proj([_read(at.o_proj, adapter, merge)], dtype, False, weights),
            mlp_norm=layer.post_attention_layernorm.weight.detach().to(dtype),
            gate_up=_proj([_read(mlp.gate_proj, adapter, merge), _read(mlp.up_proj, adapter, merge)], dtype,
                          False, weights),
            down=_proj([_read(mlp.down_proj, adapter, merge)], dtype, False, weights),
        ))
    embed_mod = dec.embed_tokens
    if hasattr(embed_mod, "base_layer"):
        raise Unsupported("a LoRA on the embedding")
    head_mod = hf.get_output_embeddings()
    head = _proj([_read(head_mod, adapter, merge)], dtype, True, weights)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return DecoderWeights(
        embed=embed_mod.weight.detach().to(dtype), blocks=blocks, norm=dec.norm.weight.detach().to(dtype),
        head=head, n_heads=cfg.num_attention_heads, n_kv_heads=cfg.num_key_value_heads, head_dim=head_dim,
        eps=cfg.rms_norm_eps, rotary=dec.rotary_emb, dtype=dtype)
