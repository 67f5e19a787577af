"""Quantized layers: `QuantLinear` (packed 4-bit weights, dequantized on the fly).

    y = x W'^T + b,   W' = dequantize(packed, absmax)   (W' is recomputed at every forward)

The packed weight is a buffer (no gradient); gradients flow to the input x (and so to LoRA
adapters wrapped around this layer). There is no cached inference layout: every forward, in train
or eval mode, with or without grad, runs the same decode + `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.quant import codecs
from tunelab.quant.codecs import FORMATS_4BIT, Packed4bit


def _compute_dtype(x: torch.Tensor, fixed: torch.dtype | None) -> torch.dtype:
    """The matmul dtype: autocast's if active for x's device, else `fixed`, else x's."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return fixed or x.dtype


class QuantLinear(nn.Module):
    """A Linear layer whose weight is stored 4-bit (nf4 | fp4 | int4), blockwise absmax.

    forward(x) = F.linear(x, W'.to(dtype), bias), W' the dequantized weight [out, in], dtype the
    autocast dtype when autocast is on, else `compute_dtype` (x cast to it and the output cast back),
    else x.dtype. The decode runs in that dtype: one 256-entry table gather per byte (two weights)
    and one multiply by the block constant, so in bf16 the product code * absmax is rounded once
    in bf16 (|error| <= 2**-8 relative vs. the fp32 decode).

    Buffers (saved in state_dict): `packed` uint8 [ceil(out*in/2)]; `absmax` fp32 [blocks], or
    uint8 [blocks] plus `absmax_scale` fp32 [ceil(blocks/256)] and `absmax_offset` fp32 [] with
    double quantization. Bytes are identical to bitsandbytes' `quantize_4bit` for nf4/fp4.

    Args:
        in_features, out_features: the Linear's shape.
        bias: whether there is a (frozen) bias.
        fmt: "nf4" (default), "fp4" or "int4".
        blocksize: weights per absmax constant (64).
        double_quant: quantize the absmax constants too (8-bit, blocks of 256): 4.5 -> 4.127 bits/param.
        compute_dtype: matmul dtype outside autocast (None = the input's dtype).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, fmt: str = "nf4",
                 blocksize: int = 64, double_quant: bool = True, compute_dtype: torch.dtype | None = None):
        super().__init__()
        if fmt not in FORMATS_4BIT:
            raise ValueError(f"QuantLinear: unknown format {fmt!r}; one of {FORMATS_4BIT}")
        self.in_features, self.out_features = in_features, out_features
        self.fmt, self.blocksize, self.double_quant = fmt, blocksize, double_quant
        self.compute_dtype = compute_dtype
        n = in_features * out_features
        nblocks = -(-n // blocksize)  # ceil
        self.register_buffer("packed", torch.zeros((n + 1) // 2, dtype=torch.uint8))
        if double_quant:
            self.register_buffer("absmax", torch.zeros(nblocks, dtype=torch.uint8))
            self.register_buffer("absmax_scale", torch.zeros(-(-nblocks // codecs.DQ_BLOCKSIZE)))
            self.register_buffer("absmax_offset", torch.zeros(()))
        else:
            self.register_buffer("absmax", torch.zeros(nblocks))
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: str = "nf4", blocksize: int = 64, double_quant: bool = True,
                    compute_dtype: torch.dtype | None = None) -> "QuantLinear":
        """Quantize `linear.weight` (any float dtype) into a new QuantLinear on the same device."""
        w = linear.weight.detach()
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, fmt, blocksize,
                double_quant, compute_dtype)
        q.load_packed(codecs.quantize_4bit(w, fmt, blocksize, double_quant))
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return q.to(w.device)

    def load_packed(self, p: Packed4bit) -> None:
        """Copy a `Packed4bit` of shape [out, in] into the buffers."""
        if tuple(p.shape) != (self.out_features, self.in_features) or p.fmt != self.fmt:
            raise ValueError(f"packed tensor {p.fmt} {tuple(p.shape)} does not fit "
                             f"{self.fmt} ({self.out_features}, {self.in_features})")
        if p.double_quant != self.double_quant or p.blocksize != self.blocksize:
            raise ValueError("packed tensor blocksize/double_quant differ from the layer's")
        self.packed = p.packed.clone()
        self.absmax = p.absmax.clone()
        if p.double_quant:
            self.absmax_scale = p.absmax_scale.clone()
            self.absmax_offset = p.absmax_offset.clone().reshape(())

    def to_packed(self) -> Packed4bit:
        """The stored weight as a `Packed4bit` (views of the buffers)."""
        return Packed4bit(self.packed, self.absmax, (self.out_features, self.in_features), self.fmt,
                          self.blocksize, getattr(self, "absmax_scale", None), getattr(self, "absmax_offset", None))

    def block_absmax(self) -> torch.Tensor:
        """fp32 absmax per block (decoded from 8 bits with double quantization)."""
        if not self.double_quant:
            return self.absmax
        return codecs.dequantize_blockwise_8bit(self.absmax, self.absmax_scale) + self.absmax_offset

    def _decode(self, dtype: torch.dtype) -> torch.Tensor:
        work = dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32  # the decode's dtype
        table = codecs.pair_table(self.fmt, work, self.packed.device)
        n = self.in_features * self.out_features
        w = codecs.dequantize_packed(self.packed, self.block_absmax(), table, n, self.blocksize, work)
        return w.view(self.out_features, self.in_features).to(dtype)

    @torch.no_grad()
    def dequantize_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W' [out, in]: code[q] * absmax computed in fp32 (as bitsandbytes), then cast to dtype."""
        return self._decode(torch.float32).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(x, self.compute_dtype)
        w = self._decode(dtype)  # no grad: buffers only
        if torch.is_autocast_enabled(x.device.type) or dtype == x.dtype:
            return F.linear(x, w, self.bias)
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.linear(x.to(dtype), w, bias).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"fmt={self.fmt}, blocksize={self.blocksize}, double_quant={self.double_quant}")


def is_skipped(name: str, skip: tuple[str, ...]) -> bool:
    """True if a module name matches a skip entry: the full name, or one dotted component
    ("lm_head" skips "lm_head" and "model.lm_head"; "mlp.down_proj" skips "layers.0.mlp.down_proj")."""
    return any(s and (name == s or name.endswith("." + s) or s in name.split(".")) for s in skip)


def quantize_model(model: nn.Module, fmt: str = "nf4", skip: tuple[str, ...] = ("lm_head",), blocksize: int = 64,
                   double_quant: bool = True, compute_dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every nn.Linear whose qualified name does not contain a `skip` entry by a QuantLinear,
    in place; returns the model. Tied weights (e.g. lm_head = embeddings) are left alone when skipped."""
    targets = [(name, mod) for name, mod in model.named_modules()
               if isinstance(mod, nn.Linear) and not is_skipped(name, skip)]
    for name, lin in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantLinear.from_linear(lin, fmt, blocksize, double_quant, compute_dtype))
    return model
