"""`GGUFBlockLinear`: a frozen Linear whose weight stays in a GGUF file's Q4_0 / Q4_1 / Q8_0 blocks
(or Q5_0 / Q5_1 blocks and Q4_K / Q5_K / Q6_K super-blocks, kept raw: quant/gguf_kquants.py).

    y = x W'^T + b,   W' = gguf_blocks.decode(blocks)   (decoded every forward, and again in backward)

It is a `QuantLinear` for everything that asks for one (peft's custom-module dispatch, so the LoRA
layer is adapters/fused.py's FusedLoraQuantLinear; `target_modules`, `count_params`, the merge's
`dequantize_linears`, the decode engine's weight reader): the same forward, `_DecodeAgainLinear`
(W' is not kept between forward and backward), `dequantize_weight` and `nbytes`; only the
stored format and `_decode` differ. The 4-bit NF4 API (`to_packed`, `load_packed`,
`block_absmax`) does not apply and raises.

Buffers: `qs` (uint8 [out, in/2], or int8 [out, in] for Q8_0), `d` (fp16 [out, in/32]) and, for
Q4_1, `m` (fp16 [out, in/32]): together exactly the GGUF tensor's bytes, so
nbytes() = out * in/32 * {18, 20, 34} (Q4_0, Q4_1, Q8_0).
"""

from __future__ import annotations

import torch
from torch import nn

from tunelab.quant.gguf_blocks import FORMATS, QK, GGUFBlocks, decode, split_blocks
from tunelab.quant.gguf_kquants import RAW_FORMATS
from tunelab.quant.nn import QuantLinear


class GGUFBlockLinear(QuantLinear):
    """A Linear [out, in] holding GGUF blocks (fmt: gguf_blocks.FORMATS, 32 or 256 weights a block along `in`).

    forward(x) = F.linear(x, W'.to(dtype), bias) with dtype as QuantLinear's (autocast's, else
    `compute_dtype`, else x's); W' is decoded in fp32 (bit for bit gguf.quants.dequantize) and cast.
    """

    def __init__(self, blocks: GGUFBlocks, bias: torch.Tensor | None = None,
                 compute_dtype: torch.dtype | None = None):
        nn.Module.__init__(self)  # not QuantLinear.__init__: its NF4 buffers are not ours
        if blocks.fmt not in FORMATS:
            raise ValueError(f"GGUFBlockLinear: unknown format {blocks.fmt!r}; one of {FORMATS}")
        self.out_features, self.in_features = blocks.shape
        self.fmt, self.double_quant, self.act_quant = blocks.fmt, False, False
        self.blocksize = RAW_FORMATS[blocks.fmt].block_weights if blocks.fmt in RAW_FORMATS else QK
        self.compute_dtype = compute_dtype
        self.register_buffer("qs", blocks.qs)
        self.register_buffer("d", blocks.d)  # None for the raw-kept formats (their scales are inside qs)
        self.register_buffer("m", blocks.m)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_raw(cls, raw: torch.Tensor, fmt: str, bias: torch.Tensor | None = None,
                 row_order: torch.Tensor | None = None, compute_dtype: torch.dtype | None = None):
        """From the GGUF tensor's raw bytes uint8 [out, row_bytes]; `row_order` (long [out]) reorders
        the output rows (row i = stored row row_order[i]), e.g. llama q/k back to HF order."""
        blocks = split_blocks(raw, fmt)
        if row_order is not None:
            blocks = blocks.select_rows(row_order)
        return cls(blocks, bias, compute_dtype)

    def blocks(self) -> GGUFBlocks:
        return GGUFBlocks(self.fmt, self.qs, self.d, self.m)

    @property
    def qweight(self) -> torch.Tensor:
        """The codes; peft looks for `qweight` to place adapters on the base layer's device."""
        return self.qs

    def _decode(self, dtype: torch.dtype) -> torch.Tensor:
        w = decode(self.blocks())
        return w if dtype == torch.float32 else w.to(dtype)

    def to_packed(self):
        raise TypeError("GGUFBlockLinear holds GGUF blocks, not a Packed4bit (use blocks())")

    def load_packed(self, p) -> None:
        raise TypeError("GGUFBlockLinear holds GGUF blocks, not a Packed4bit")

    def block_absmax(self) -> torch.Tensor:
        raise TypeError("GGUF blocks have scales (d) and minimums (m), not absmax constants")

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"fmt={self.fmt} (GGUF blocks)")
