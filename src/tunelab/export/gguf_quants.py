"""The `--quant` values of the GGUF export, one `GgufQuant` object each (GGUF_QUANT_TYPES), and the encoder of
every tensor type they write.

A quant is llama-quantize's file type: a `general.file_type`, a default tensor type, and the per-tensor rules of
llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp) for it:

    1-D tensors, norms, biases            F32 (never quantized)
    f32 / f16 / bf16                      every matrix in that type
    the output matrix (`output`, or       Q8_0 when the default is Q8_0 or the row length is not a multiple of the
      `token_embd` when tied)             default's block, else Q6_K
    token_embd (untied)                   the default; Q4_K for the ternary types
    attn_v (attn_qkv), ffn_down           q4_k_m / q5_k_m: Q6_K in the layers where use_more_bits(i, n):
                                          i < n/8 or i >= 7n/8 or (i - n/8) % 3 == 2
    every other matrix                    the default
    a row length the type's block does    llama.cpp's fallback: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
      not divide                          TQ1_0 / TQ2_0 -> Q4_0, then F16 if 32 does not divide it either;
                                          Q8_0 / Q4_0 -> F16

    quant    general.file_type   default   bits/weight of the default
    f32      0 ALL_F32           F32       32
    f16      1 MOSTLY_F16        F16       16
    bf16     32 MOSTLY_BF16      BF16      16
    q8_0     7 MOSTLY_Q8_0       Q8_0      8.5
    q4_0     2 MOSTLY_Q4_0       Q4_0      4.5
    q4_k_m   15 MOSTLY_Q4_K_M    Q4_K      4.5  (Q6_K 6.5625 where the rules say)
    q5_k_m   17 MOSTLY_Q5_K_M    Q5_K      5.5
    tq1_0    36 MOSTLY_TQ1_0     TQ1_0     1.6875 (ternary weights only: a BitNet run)
    tq2_0    37 MOSTLY_TQ2_0     TQ2_0     2.0625

Not carried: the rules that depend on MoE experts, Falcon, or a 70B Llama's 8-way shared attn_v (bumped from
Q4_K to Q5_K there); no family tunelab exports has them at the sizes it trains.

Encoders: Q4_K / Q5_K / Q6_K are tunelab.quant.kquant_encode (ggml's reference quantizers, bit for bit); the
others are gguf-py's numpy quantizers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tunelab.errors import TunelabError

_LAYER = re.compile(r"^blk\.(\d+)\.")
K_FORMATS = {"Q4_K": "q4_k", "Q5_K": "q5_k", "Q6_K": "q6_k"}  # encoded by quant/kquant_encode.py
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
            "Q8_0": "F16", "Q4_0": "F16"}  # llama-quant.cpp tensor_type_fallback (+ F16 for the legacy types)
TERNARY_TYPES = ("TQ1_0", "TQ2_0")


def _T(name: str):
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType[name]


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of the layers that get more bits: the first and last eighth, and every third between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def role_of(name: str, tied: bool) -> str:
    """The rules' category of a GGUF tensor name (llama-quant.cpp tensor_get_category): output (the output matrix,
    or token_embd when tied), token_embd, attn_v (attn_v / attn_qkv), ffn_down, or other."""
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        return "output"
    if name == "token_embd.weight":
        return "token_embd"
    if "attn_v.weight" in name or "attn_qkv.weight" in name:
        return "attn_v"
    return "ffn_down" if "ffn_down" in name else "other"


def block_of(qtype) -> int:
    from gguf import GGML_QUANT_SIZES

    return GGML_QUANT_SIZES[qtype][0]


@dataclass(frozen=True)
class GgufQuant:
    """One `--quant` value. `default` is the type of every matrix the rules do not change; `floating`: no rules,
    every matrix in `default`; `token_embd`: an untied token_embd's type (None: the default); `more_bits`: the
    roles that get Q6_K in the use_more_bits layers; `ternary`: the matrices must be ternary (a BitNet run)."""

    name: str
    file_type: str  # gguf.LlamaFileType member
    default: str  # gguf.GGMLQuantizationType member
    floating: bool = False
    token_embd: str | None = None
    more_bits: tuple[str, ...] = ()
    ternary: bool = False

    @property
    def ftype(self) -> int:
        import gguf

        return int(gguf.LlamaFileType[self.file_type])

    def matrix_type(self, role: str, layer: int | None, n_layers: int, cols: int) -> str:
        """The type llama_tensor_get_type picks for a matrix of `role` in block `layer`, before any fallback."""
        if self.floating:
            return self.default
        if role == "output":
            return "Q8_0" if self.default == "Q8_0" or cols % block_of(_T(self.default)) else "Q6_K"
        if role == "token_embd":
            return self.token_embd or self.default
        if role in self.more_bits and layer is not None and use_more_bits(layer, n_layers):
            return "Q6_K"
        return self.default

    def tensor_type(self, name: str, shape: tuple[int, ...], tied: bool, n_layers: int):
        """(GGMLQuantizationType, fell_back) for the GGUF tensor `name` of numpy `shape` (rows last) in a model of
        `n_layers` blocks; `tied`: token_embd is also the output matrix. fell_back: the rules' type does not fit
        the row length and llama.cpp's fallback (FALLBACK) was taken."""
        if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
            return _T("F32"), False
        m = _LAYER.match(name)
        t = self.matrix_type(role_of(name, tied), int(m.group(1)) if m else None, n_layers, shape[-1])
        fell_back = False
        while t not in ("F32", "F16", "BF16") and shape[-1] % block_of(_T(t)):
            t, fell_back = FALLBACK.get(t, "F16"), True
        return _T(t), fell_back


GGUF_QUANT_TYPES: dict[str, GgufQuant] = {q.name: q for q in (
    GgufQuant("f32", "ALL_F32", "F32", floating=True),
    GgufQuant("f16", "MOSTLY_F16", "F16", floating=True),
    GgufQuant("bf16", "MOSTLY_BF16", "BF16", floating=True),
    GgufQuant("q8_0", "MOSTLY_Q8_0", "Q8_0"),
    GgufQuant("q4_0", "MOSTLY_Q4_0", "Q4_0"),
    GgufQuant("q4_k_m", "MOSTLY_Q4_K_M", "Q4_K", more_bits=("attn_v", "ffn_down")),
    GgufQuant("q5_k_m", "MOSTLY_Q5_K_M", "Q5_K", more_bits=("attn_v", "ffn_down")),
    GgufQuant("tq1_0", "MOSTLY_TQ1_0", "TQ1_0", token_embd="Q4_K", ternary=True),
    GgufQuant("tq2_0", "MOSTLY_TQ2_0", "TQ2_0", token_embd="Q4_K", ternary=True),
)}


def gguf_quant(name: str) -> GgufQuant:
    """The quant called `name`. Raises TunelabError (one line naming the choices) for any other name."""
    if name not in GGUF_QUANT_TYPES:
        raise TunelabError(f"unknown GGUF quant '{name}'", where="--quant", hint=f"one of: {', '.join(GGUF_QUANT_TYPES)}")
    return GGUF_QUANT_TYPES[name]


def encode(arr: np.ndarray, qtype, name: str = "") -> np.ndarray:
    """The bytes of fp32 `arr` [..., cols] in `qtype` (F32/F16: the array itself). A ternary type is checked:
    every weight must come back within 1/1000 of the tensor's largest (the fp16 rounding of a block's scale),
    which holds for a BitNet weight gamma * {-1, 0, +1} and for nothing trained in full precision."""
    from gguf import quants

    if qtype.name in K_FORMATS:
        from tunelab.quant.kquant_encode import encode as encode_k

        return encode_k(arr, K_FORMATS[qtype.name])
    raw = quants.quantize(arr, qtype)
    if qtype.name in TERNARY_TYPES:
        err = float(np.abs(quants.dequantize(raw, qtype).reshape(arr.shape) - arr).max(initial=0.0))
        if err > 1e-3 * float(np.abs(arr).max(initial=0.0)):
            raise TunelabError(f"{name or 'a tensor'} is not ternary (max |w - {qtype.name}(w)| = {err:.3g})",
                               where="--quant", hint="tq1_0 / tq2_0 write the weights of a bitnet run; "
                                                     "use q4_k_m or q8_0 for other models")
    return raw


def decode(raw: np.ndarray, qtype, shape: tuple[int, ...]) -> np.ndarray:
    """fp32 weights of `shape` from their GGUF bytes (gguf-py's dequantizers, what transformers' loader uses)."""
    from gguf import quants

    return quants.dequantize(raw, qtype).reshape(shape).astype(np.float32, copy=False)
