"""LoRA linear layers with the adapter's scale and sum folded into the matmuls (exact, fewer passes).

A LoRA layer computes, for input x (M x in), frozen W (out x in), A (r x in), B (out x r), s = alpha/r:

    y = x W^T + s (x A^T) B^T

peft runs that as five operations: x W^T, x A^T, (xA^T) B^T, "* s" and "+", each of the last two
a full pass over the M x out output, and the (M x r)(r x out) matmul with inner size r = 16 runs
at ~12 GFLOP/s on this CPU against ~120 for the base matmul. Here the scale and the sum go into
an in-place `addmm_` on the base output (y = x W^T; y += s xa B^T): the M x out output is written
once (out-of-place `addmm` would first copy it). Backward, for
upstream dy (M x out):

    dB  = s dy^T xa                    (out x r)
    dxa = s dy B                       (M x r)
    dA  = dxa^T x                      (r x in)
    dx  = dy W + dxa A                 (addmm_ again, instead of two matmuls and a sum)

Measured on the 2 cores here by `python benchmarks/lora_linear.py` (8 x 300 rows, r = 16, forward +
backward, best of 6), peft -> this: 576->1536 70.5 -> 59.4 ms, 1536->576 63.9 -> 58.4 ms,
576->576 26.0 -> 23.2 ms, 576->192 10.8 -> 9.1 ms; 1.14x over the four.

A 4-bit base (QLoRA's `QuantLinear`) goes the same way with W = its dequantized weight, decoded
in the forward and decoded again in backward for dy W instead of being kept (as
`quant.nn._DecodeAgainLinear`), so the adapted blocks hold no fp32 copy of their weights.

Only the plain case is routed here: one active adapter, no dropout, no DoRA/variants, no lora
bias, not merged, a torch.nn.Linear or 4-bit QuantLinear base, all weights and x in one dtype and
no autocast. Anything else (dropout, mixed adapters, bf16 autocast) takes the layer's own forward, so
the result is always the same function of the same weights; tests/adapters/test_lora_fused.py
checks outputs and gradients against peft's.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from tunelab.ops.lora_linear import lora_linear
from tunelab.quant.codecs import FORMATS_4BIT
from tunelab.quant.nn import QuantLinear


def _plain_base(base, x: torch.Tensor) -> bool:
    """A frozen nn.Linear, or a 4-bit QuantLinear computing in x's dtype, with x's dtype."""
    if type(base) is nn.Linear:
        return not base.weight.requires_grad and x.dtype == base.weight.dtype
    if type(base) is QuantLinear:
        return (base.fmt in FORMATS_4BIT and not base.act_quant and base.compute_dtype in (None, x.dtype)
                and x.dtype == torch.float32)
    return False


def _plain_adapter(layer, x: torch.Tensor) -> str | None:
    """The single active adapter's name when `layer` is in the plain case (see module doc), else None."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    if not isinstance(layer.lora_dropout[name], nn.Identity):
        return None
    base, la, lb = layer.base_layer, layer.lora_A[name], layer.lora_B[name]
    if la.bias is not None or lb.bias is not None or not _plain_base(base, x):
        return None
    if base.bias is not None and (base.bias.requires_grad or base.bias.dtype != x.dtype):
        return None
    if torch.is_autocast_enabled(x.device.type) or not (x.dtype == la.weight.dtype == lb.weight.dtype):
        return None
    return name


def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    name = None if (args or kwargs) else _plain_adapter(self, x)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    quant = None if type(base) is nn.Linear else base
    return lora_linear(x, None if quant is not None else base.weight, base.bias, self.lora_A[name].weight,
                       self.lora_B[name].weight, self.scaling[name], quant)


def fuse_lora_linears(model: nn.Module) -> int:
    """Route every peft LoRA Linear of `model` through `lora_linear` when it is in the plain case
    (checked at each call; otherwise peft's forward runs). Returns how many layers were routed."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    from tunelab.adapters.qlora import lora_quant_linear_cls

    routed = (LoraLinear, lora_quant_linear_cls())
    n = 0
    for mod in model.modules():
        if isinstance(mod, routed):
            mod.forward = types.MethodType(_forward, mod)
            n += 1
    return n
