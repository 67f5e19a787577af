"""The decode engine's copy of a decoder's weights (infer/weights.py `read_weights` fills it): the
containers (Proj, Lora, Block, DecoderWeights) and the reading of one projection out of a
transformers (optionally PEFT-wrapped) model.

In fp32 every matrix is stored transposed, `Wt = W.T` contiguous ([in, out]): MKL's one-row
product `x @ Wt` streams it faster than `F.linear(x, W)`; bf16 keeps `W` ([out, in]), the layout its
kernels are fast on (docs/inference.md has both measurements). With `weights="int8"` a matrix is
stored per output channel as int8, `W ~= q * scale[out]` (scale = absmax / 127), prepacked for
fbgemm's dynamic-quantized linear: y = dequant(quant_u8(x) @ q) + b, a quarter of fp32's bytes to
read per token, and no longer transformers' arithmetic (tokens can differ from fp32). With
`weights="int4"` (bf16 engine) a matrix already on a 4- or 8-bit grid (a GGUF Q4/Q8 source) is
stored as its exact 4-bit codes for torch's int4 kernel (infer/int4.py); the others stay bf16.

A LoRA layer contributes either merged, `Wt = (W0 + s B A).T` formed in fp32 (what `tunelab merge`
writes), or kept apart as `(A.T, s B.T)` so that `y = x Wt + (x A.T)(s B.T)`: adapters stay
swappable and the base is never rewritten. A 4-bit `QuantLinear` base is decoded once to the
engine's dtype (the exact weights training saw, as merge does).

Reading raises `Unsupported` (a reason in one line) for what the engine does not compute exactly
(DoRA, a bias on o/gate/up/down, a layer type it does not know); callers fall back to transformers'
`generate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


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
    int4: object = None  # infer/int4.Int4Weight: the weight's exact 4-bit codes (weights="int4")
    named: dict[str, Lora] = field(default_factory=dict)  # adapters applied to the rows a route gives them


@dataclass
class Block:
    """One decoder layer. Beyond Llama's (the first six fields), per family (infer/arch.py): post
    norms on the attention and MLP outputs, q/k norms (`qk_norm` [nq + nkv, hd], one row per head;
    or `q_norm` [nq hd], `k_norm` [nkv hd] over all heads), a sliding window, the rope table's key."""

    attn_norm: torch.Tensor | None  # None: no norm before attention (olmo2)
    qkv: Proj
    o: Proj
    mlp_norm: torch.Tensor | None
    gate_up: Proj
    down: Proj
    attn_post_norm: torch.Tensor | None = None
    mlp_post_norm: torch.Tensor | None = None
    qk_norm: torch.Tensor | None = None
    q_norm: torch.Tensor | None = None
    k_norm: torch.Tensor | None = None
    window: int | None = None  # attend to the last `window` positions only (this one included)
    rope: str = "default"  # which of DecoderWeights.ropes rotates q and k


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
    # ---- what other families add (infer/arch.py); the defaults are Llama's ----
    family: str = "llama"
    plain: bool = True  # Llama's layer: decode.py's own forward; else infer/layers.py's
    ropes: dict[str, Callable] = field(default_factory=dict)  # key -> (x, positions) -> (cos, sin)
    norm_fp32: bool = False  # rmsnorm = (x / rms(x) * w).to(dtype) in fp32, not w * (x / rms(x)).to(dtype)
    act: Callable = F.silu
    embed_scale: torch.Tensor | None = None  # x = embed[token] * embed_scale (Gemma: sqrt(hidden) in dtype)
    attn_scale: float | None = None  # None: 1 / sqrt(head_dim)
    attn_softcap: float | None = None  # scores = c tanh(scores / c)
    final_softcap: float | None = None  # logits = c tanh(logits / c)

    def __post_init__(self):
        if not self.ropes:  # one rope for every layer: the model's rotary embedding
            self.ropes = {"default": self.rotary}

    @property
    def hidden(self) -> int:
        return self.embed.shape[1]


def unwrap(model):
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


def read_proj(mod: nn.Module, adapter: str | None, merge: bool) -> tuple[torch.Tensor, torch.Tensor | None, list]:
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


def proj(parts: list[tuple], dtype: torch.dtype, bias_ok: bool, weights: str = "dense",
         dense_batches: bool = False) -> Proj:
    """Stack the outputs of several projections of the same input into one Proj (fused qkv, gate_up).
    int4 with `dense_batches`: a bf16 copy beside the codes for many-row products (infer/int4.py)."""
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
    if weights == "int4":
        from tunelab.infer.int4 import pack_exact

        codes = pack_exact(full, keep_dense=dense_batches)
        if codes is None:
            raise Unsupported("a matrix is not on a 4- or 8-bit grid (int4 weights hold a model converted from "
                              "a Q4/Q8 GGUF exactly; use bf16)")
        return Proj(None, bias, loras, int4=codes)
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
