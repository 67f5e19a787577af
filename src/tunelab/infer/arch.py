"""What each model family's decoder layer is made of, for the decode engine: one `Arch` per family
(keyed by `tunelab.models.families.Family.name`), read once into `Block`s and `DecoderWeights`
flags by `read_blocks`, so the forward never compares family names.

    layer (every family)                              what an Arch says
    h = norm_attn_in(x)           (olmo2: h = x)       attn_in   the norm module's name or None
    q, k, v = h @ Wqkv                                 qkv       the projections stacked (phi3: qkv_proj)
    q, k = qk_norm(q), qk_norm(k)                      qk_norm   "head" per head (qwen3, gemma3),
                                                                 "all" over all heads (olmo2), None
    q, k = rope(q, k)                                  per_layer_rope  gemma3: the layer type's rope
    a = attention(q, K, V) @ Wo   (window, scale, softcap: from the config)
    x = x + norm_attn_out(a)      (gemma2/3, olmo2)    attn_out
    h = norm_mlp_in(x)            (olmo2: h = x)       mlp_in
    y = (act(h Wg) * (h Wu)) @ Wd                      gate_up   (phi3: gate_up_proj), act from the config
    x = x + norm_mlp_out(y)       (gemma2/3, olmo2)    mlp_out

Norms: "llama" is transformers' LlamaRMSNorm, w * (x / rms(x)).to(dtype); "fp32" multiplies in fp32
and casts after, (x / rms(x) * w32).to(dtype), with w32 = 1 + w for Gemma (its weights are offsets
from 1) and w for OLMo 2. Gemma scales the embeddings by sqrt(hidden) (in the model dtype) and
uses query_pre_attn_scalar^-1/2 as the attention scale.

A layer's sliding window (keys older than `sliding_window` positions are masked) comes from the
config: `layer_types` where the config has them ("sliding_attention" layers), else `sliding_window`
on every layer (mistral, phi3).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from tunelab.errors import TunelabError
from tunelab.infer.parts import Block, DecoderWeights, Unsupported, proj, read_proj
from tunelab.models.families import family_of

ROPE_TYPES = ("default", "linear", "llama3")  # cos/sin a function of the position alone
ACTIVATIONS: dict[str, Callable] = {"silu": F.silu, "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh")}


@dataclass(frozen=True)
class Arch:
    """One family's layer: the module names its weights are read from (a norm None: the layer has
    none there) and the pieces its forward adds to Llama's; the defaults are Llama's."""

    qkv: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    gate_up: tuple[str, ...] = ("gate_proj", "up_proj")
    attn_in: str | None = "input_layernorm"
    attn_out: str | None = None
    mlp_in: str | None = "post_attention_layernorm"
    mlp_out: str | None = None
    norm: str = "llama"  # "llama" | "fp32" (see the module docstring)
    norm_offset: float = 0.0  # Gemma: the stored weight is w - 1
    qk_norm: str | None = None  # "head" | "all"
    embed_scaled: bool = False  # x = embed[token] * sqrt(hidden)
    per_layer_rope: bool = False  # the rotary embedding takes the layer type (gemma3)
    query_scalar: bool = False  # attention scale = query_pre_attn_scalar^-1/2
    attn_softcap: bool = False  # config.attn_logit_softcapping applies (transformers' Gemma3Attention
    #                             keeps the value but never passes it to attention: gemma3 is False)


_LLAMA = Arch()
_GEMMA = dict(attn_out="post_attention_layernorm", mlp_in="pre_feedforward_layernorm",
              mlp_out="post_feedforward_layernorm", norm="fp32", norm_offset=1.0, embed_scaled=True,
              query_scalar=True)
ARCHS: dict[str, Arch] = {
    "llama": _LLAMA, "llama3": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA,
    "qwen3": Arch(qk_norm="head"),
    "gemma2": Arch(**_GEMMA, attn_softcap=True),
    "gemma3": Arch(**_GEMMA, qk_norm="head", per_layer_rope=True),
    "phi3": Arch(qkv=("qkv_proj",), gate_up=("gate_up_proj",)),
    "olmo2": Arch(attn_in=None, attn_out="post_attention_layernorm", mlp_in=None,
                  mlp_out="post_feedforward_layernorm", norm="fp32", qk_norm="all"),
}


def arch_of(cfg) -> tuple[str, Arch]:
    """(family name, Arch) of a transformers config; Unsupported for an architecture not listed."""
    try:
        name = family_of(cfg).name
    except TunelabError:
        name = None
    if name not in ARCHS:
        raise Unsupported(f"architecture '{cfg.model_type}' (the engine runs {', '.join(sorted(ARCHS))})")
    return name, ARCHS[name]


def check_config(family: str, cfg) -> None:
    """Unsupported, naming the piece, for what the engine does not compute of this config."""
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    kinds = [r for r in rope.values() if isinstance(r, dict)] or [rope]  # gemma3: one per layer type
    for r in kinds:
        kind = r.get("rope_type", r.get("type", "default"))
        if kind == "longrope":
            raise Unsupported(f"{family} longrope rope scaling (its short and long factors switch with the "
                              "sequence length)")
        if kind not in ROPE_TYPES:
            raise Unsupported(f"{family} rope type '{kind}'")
        if r.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0)) not in (None, 1.0):
            raise Unsupported(f"{family} partial rotary embedding (partial_rotary_factor "
                              f"{r.get('partial_rotary_factor', getattr(cfg, 'partial_rotary_factor', None))})")
    act = getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", "silu")
    if act not in ACTIVATIONS:
        raise Unsupported(f"{family} activation '{act}'")
    types = set(getattr(cfg, "layer_types", None) or ()) - {"full_attention", "sliding_attention"}
    if types:
        raise Unsupported(f"{family} layer types {sorted(types)}")
    if getattr(cfg, "use_bidirectional_attention", False):
        raise Unsupported(f"{family} bidirectional attention")


def windows(cfg) -> list[int | None]:
    """Each layer's sliding window (None: attends to every earlier position)."""
    n, win = cfg.num_hidden_layers, getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if types:
        return [win if t == "sliding_attention" else None for t in types[:n]]
    return [win] * n


def norm_weight(layer, name: str | None, arch: Arch, dtype: torch.dtype) -> torch.Tensor | None:
    """The weight the engine multiplies by: w in `dtype` (llama norms), w + offset in fp32 (fp32 norms)."""
    if name is None:
        return None
    w = getattr(layer, name).weight.detach()
    return w.to(dtype) if arch.norm == "llama" else w.float() + arch.norm_offset


def read_blocks(hf, arch: Arch, adapter, merge: bool, dtype: torch.dtype, weights: str,
                dense_batches: bool = False) -> list[Block]:
    """The engine's Blocks of a transformers decoder (`hf.model.layers`); `dense_batches`: parts.proj's."""
    cfg, blocks = hf.config, []
    nq, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    wins = windows(cfg)
    for i, layer in enumerate(hf.model.layers):
        at, mlp = layer.self_attn, layer.mlp
        blk = Block(
            attn_norm=norm_weight(layer, arch.attn_in, arch, dtype),
            qkv=proj([read_proj(getattr(at, n), adapter, merge) for n in arch.qkv], dtype, True, weights, dense_batches),
            o=proj([read_proj(at.o_proj, adapter, merge)], dtype, False, weights, dense_batches),
            mlp_norm=norm_weight(layer, arch.mlp_in, arch, dtype),
            gate_up=proj([read_proj(getattr(mlp, n), adapter, merge) for n in arch.gate_up], dtype, False, weights, dense_batches),
            down=proj([read_proj(mlp.down_proj, adapter, merge)], dtype, False, weights, dense_batches),
            attn_post_norm=norm_weight(layer, arch.attn_out, arch, dtype),
            mlp_post_norm=norm_weight(layer, arch.mlp_out, arch, dtype),
            window=wins[i],
            rope=cfg.layer_types[i] if arch.per_layer_rope else "default",
        )
        if arch.qk_norm == "head":  # one weight row per head: q's for the nq query heads, then k's
            q, k = norm_weight(at, "q_norm", arch, dtype), norm_weight(at, "k_norm", arch, dtype)
            blk.qk_norm = torch.cat([q.expand(nq, -1), k.expand(nkv, -1)]).contiguous()
        elif arch.qk_norm == "all":
            blk.q_norm, blk.k_norm = norm_weight(at, "q_norm", arch, dtype), norm_weight(at, "k_norm", arch, dtype)
        blocks.append(blk)
    return blocks


def ropes(hf, arch: Arch) -> dict[str, Callable]:
    """{rope key: (x, positions) -> (cos, sin)}: the model's own rotary embedding, per layer type for gemma3."""
    rotary = hf.model.rotary_emb
    if arch.per_layer_rope:
        return {t: partial(rotary, layer_type=t) for t in set(hf.config.layer_types)}
    return {"default": rotary}


def activation(cfg) -> Callable:
    return ACTIVATIONS[getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", "silu")]


def is_plain(w: DecoderWeights) -> bool:
    """Whether Llama's layer computes this model (decode.py's forward, with no per-family branch)."""
    blocks_plain = all(b.window is None and b.attn_norm is not None and b.mlp_norm is not None
                       and b.attn_post_norm is None and b.mlp_post_norm is None and b.qk_norm is None
                       and b.q_norm is None and b.rope == "default" for b in w.blocks)
    return (blocks_plain and not w.norm_fp32 and w.act is F.silu and w.embed_scale is None
            and w.attn_scale is None and w.attn_softcap is None and w.final_softcap is None
            and set(w.ropes) == {"default"})
