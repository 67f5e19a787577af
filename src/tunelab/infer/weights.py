"""The weights of a decoder, read out of a transformers (optionally PEFT-wrapped) model for the decode
engine (infer/decode.py), into the containers of infer/parts.py:

    per block:  q, k, v fused into one [in, (nq + 2 nkv) hd] matrix (phi3's qkv_proj as it is), gate
                and up into one [in, 2 I] (phi3's gate_up_proj), o [nq hd, hidden], down [I, hidden];
                the norms the family has (infer/arch.py: one `Arch` per family)
    model:      the token embedding, the final norm, the head (the embedding itself when tied), and
                the family's flags (embedding scale, attention scale, soft-caps, rope per layer type)

How a matrix is stored (fp32 transposed, bf16 as is, int8 prepacked) and how a LoRA contributes
(merged, or kept apart as (A.T, s B.T)) is infer/parts.py's docstring.

`read_weights` raises `Unsupported` (a reason in one line, naming the missing piece) for anything
the engine does not compute exactly: an architecture not in infer/arch.py, DoRA, biases on
o/gate/up/down, rope scaling whose cos/sin depend on the sequence length (longrope, dynamic),
partial rotary embeddings; callers fall back to transformers' `generate`.
"""

from __future__ import annotations

import torch

from tunelab.infer import arch as archs
from tunelab.infer.parts import (  # noqa: F401  (re-exported: the engine's containers)
    Block,
    DecoderWeights,
    Lora,
    Proj,
    Unsupported,
    fuse_loras,
    proj,
    read_proj,
    unwrap,
)

WEIGHTS = ("dense", "int8", "int4")


def read_weights(model, dtype: torch.dtype = torch.float32, merge: bool = True,
                 weights: str = "dense", dense_batches: bool = False) -> DecoderWeights:
    """The engine's copy of `model`'s weights in `dtype` (see the module docstring), its matrices int8
    with `weights="int8"`, or with `weights="int4"` (dtype bf16) every block matrix as its exact 4-bit
    codes (infer/int4.py: Unsupported when one is not on a grid), with `dense_batches` a bf16 copy of
    each beside them for products of many rows; Unsupported if the engine cannot compute this model."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}")
    if weights == "int4":
        from tunelab.infer.int4 import int4_kernel_available

        if dtype != torch.bfloat16:
            raise ValueError("int4 weights take bf16 activations: dtype must be torch.bfloat16")
        if not int4_kernel_available():
            raise Unsupported("this torch build has no CPU int4 kernel (_weight_int4pack_mm_for_cpu)")
    if weights == "int8" and torch.backends.quantized.engine not in ("x86", "fbgemm"):
        raise Unsupported(f"int8 weights need fbgemm (x86); this build's engine is "
                          f"'{torch.backends.quantized.engine}'")
    hf, adapter = unwrap(model)
    cfg = hf.config
    family, arch = archs.arch_of(cfg)
    archs.check_config(family, cfg)
    dec = getattr(hf, "model", None)
    if not hasattr(dec, "layers"):
        raise Unsupported(f"{type(hf).__name__} (the engine runs the decoder of a *ForCausalLM)")
    blocks = archs.read_blocks(hf, arch, adapter, merge, dtype, weights, dense_batches)
    embed_mod = dec.embed_tokens
    if hasattr(embed_mod, "base_layer"):
        raise Unsupported("a LoRA on the embedding")
    head_parts = [read_proj(hf.get_output_embeddings(), adapter, merge)]
    try:
        head = proj(head_parts, dtype, True, weights, dense_batches)
    except Unsupported:  # int4: a head off the grid stays bf16 (the blocks' matrices may not)
        head = proj(head_parts, dtype, True, "dense")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    scalar = getattr(cfg, "query_pre_attn_scalar", None) if arch.query_scalar else None
    w = DecoderWeights(
        embed=embed_mod.weight.detach().to(dtype), blocks=blocks,
        norm=archs.norm_weight(dec, "norm", arch, dtype), head=head, n_heads=cfg.num_attention_heads,
        n_kv_heads=cfg.num_key_value_heads, head_dim=head_dim, eps=cfg.rms_norm_eps, rotary=dec.rotary_emb,
        dtype=dtype, family=family, ropes=archs.ropes(hf, arch), norm_fp32=arch.norm == "fp32",
        act=archs.activation(cfg),
        embed_scale=torch.tensor(cfg.hidden_size ** 0.5).to(dtype) if arch.embed_scaled else None,
        attn_scale=scalar ** -0.5 if scalar else None,
        attn_softcap=getattr(cfg, "attn_logit_softcapping", None) if arch.attn_softcap else None,
        final_softcap=getattr(cfg, "final_logit_softcapping", None))
    w.plain = archs.is_plain(w)
    return w
