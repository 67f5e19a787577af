"""How qlora's frozen base is stored, for the memory estimate: the block Linears' bits per weight, and the
embeddings and head in int8 rows.

Block Linears (`base`):
    NF4 + double quant    4 + 8/64 + 32/(64 x 256) = 4.127 bits (methods/qlora.py, QLORA_BITS)
    GGUF blocks           a GGML type's block bytes x 8 / its weights per block (gguf's GGML_QUANT_SIZES):
                          Q4_0 18 x 8/32 = 4.5, Q4_1 20 x 8/32 = 5.0, Q8_0 34 x 8/32 = 8.5,
                          Q4_K 144 x 8/256 = 4.5, Q6_K 210 x 8/256 = 6.5625
    a GGUF file's mix     sum over its block Linears (blk.N.attn_q/k/v/output, ffn_gate/up/down) of
                          weights x bits(type) / their weights (e.g. Q4_K_M files: Q4_K with some Q6_K)

Embeddings and head as int8 rows (`embed_quant: int8`, `quant.int8_rows`): V h + 4 V bytes a matrix
(one int8 per weight + one fp32 scale per row), once when tied. The head's logits then come from its
chunked product and go through plain cross-entropy (losses.reply_loss_sum's path for a head that is not
an nn.Linear), which keeps the fp32 log-softmax (P x V x 4) until backward, where its gradient and the
logits' (P x V x 4 each) are made: 2 P V x 4 at a time, + one chunk of decoded head rows
(HEAD_CHUNK x h x (4 + 2 under autocast: the fp32 product, then its bf16 cast)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.memory.shape import ModelShape

EMBED_QUANT = ("none", "int8")
LINEAR_KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class BaseBits:
    """Bits per stored block-Linear weight and how the estimate names them."""

    bits: float
    label: str


def ggml_bits(type_name: str) -> float:
    """Bits per weight of a GGML type, its constants included: block bytes x 8 / weights per block."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name.upper()]]
    except KeyError:
        names = ", ".join(t.name for t in GGML_QUANT_SIZES)
        raise TunelabError(f"unknown GGML type {type_name!r}", where="--quant-type", hint=f"one of: {names}") from None
    return size * 8 / block


def _is_block_linear(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 4 and parts[0] == "blk" and parts[2] in LINEAR_KINDS and parts[3] == "weight"


def gguf_mix(path: str | Path) -> dict[str, int]:
    """{GGML type name: weights} over the block Linears of a GGUF file (its tensor table only)."""
    from tunelab.quant.gguf_file import read_gguf

    try:
        f = read_gguf(path)
    except (ValueError, OSError) as e:
        raise TunelabError(f"cannot read GGUF {path}: {e}", where="MODEL") from e
    mix: dict[str, int] = {}
    for t in f.tensors:
        if _is_block_linear(t.name):
            n = 1
            for d in t.ne:
                n *= int(d)
            mix[t.tensor_type.name] = mix.get(t.tensor_type.name, 0) + n
    if not mix:
        raise TunelabError(f"{path} has no block Linear weights (blk.N.attn_q.weight, ...)", where="MODEL")
    return mix


def mix_bits(mix: dict[str, int]) -> BaseBits:
    """The weighted bits of a {type: weights} mix, labelled 'GGUF Q4_K 86% + Q6_K 14%'."""
    total = sum(mix.values())
    bits = sum(ggml_bits(t) * n for t, n in mix.items()) / total
    parts = sorted(mix.items(), key=lambda kv: -kv[1])
    label = "GGUF " + " + ".join(t if len(parts) == 1 else f"{t} {n / total:.0%}" for t, n in parts)
    return BaseBits(bits, label)


def gguf_base_of(model) -> Path | None:
    """The GGUF file qlora would train on as stored (`method.quant_type: auto`): `model` names a GGUF file
    or an alias shipped as one whose block Linears are all kept types (quant/gguf_load.py); else None."""
    if not isinstance(model, str):
        return None
    from tunelab.quant.gguf_file import read_gguf
    from tunelab.quant.gguf_load import gguf_path_for, why_not_blocks

    path = gguf_path_for(model)
    if path is None:
        return None
    try:
        return path if why_not_blocks(read_gguf(path)) is None else None
    except (ValueError, OSError):
        return None


def base_bits_of(base, nf4_bits: float, model=None) -> BaseBits:
    """'auto': the GGUF's mix when `model` is one qlora keeps as blocks (`gguf_base_of`), else NF4 + DQ;
    None or 'nf4': NF4 + DQ at `nf4_bits`; a GGML type name ('Q4_K'); a .gguf path (its mix); a mix dict."""
    if base == "auto":
        base = gguf_base_of(model)
    if base is None or base == "nf4":
        return BaseBits(nf4_bits, "NF4+DQ")
    if isinstance(base, dict):
        return mix_bits(base)
    if str(base).endswith(".gguf"):
        return mix_bits(gguf_mix(base))
    return mix_bits({str(base).upper(): 1})


def int8_rows_bytes(s: ModelShape) -> int:
    """Embeddings (+ the untied head) as int8 rows: (V h + 4 V) per matrix."""
    return (1 if s.tied else 2) * (s.vocab * s.hidden + 4 * s.vocab)


def int8_head_loss(s: ModelShape, positions: int, act: int) -> tuple[int, int, int]:
    """(kept until backward, transient, head cast) of the loss on an int8 head (module docstring)."""
    from tunelab.quant.int8_rows import HEAD_CHUNK

    kept = positions * s.vocab * 4
    chunk = min(s.vocab, HEAD_CHUNK) * s.hidden * (4 + (2 if act == 2 else 0))
    return kept, 2 * positions * s.vocab * 4 + chunk if positions else 0, 0


def int8_head_rows(kept: int, transient: int, act: int, target_fraction: float) -> list[tuple[str, int, str]]:
    return [("log-softmax (kept)", kept, f"P x V x 4 (plain cross-entropy on the int8 head; P = B S x {target_fraction:g})"),
            ("logits (transient)", transient, "2 P V x 4 (the gradients of the log-softmax and the logits) + "
             f"one chunk of decoded head rows x {4 + (2 if act == 2 else 0)}")]
