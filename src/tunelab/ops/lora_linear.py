"""The LoRA linear map as one autograd Function, with the adapter's scale and sum folded into the matmuls.

For input x (M x in), frozen W (out x in), A (r x in), B (out x r), s = alpha/r:

    y = x W^T + s (x A^T) B^T

peft runs that as five operations: x W^T, x A^T, (xA^T) B^T, "* s" and "+", each of the last two a
full pass over the M x out output. Here the scale and the sum go into an in-place `addmm_` on the
base output (y = x W^T; y += s xa B^T): the M x out output is written once. Backward, for upstream
dy (M x out):

    dB  = s dy^T xa                    (out x r)
    dxa = s dy B                       (M x r)
    dA  = dxa^T x                      (r x in)
    dx  = dy W + dxa A                 (addmm_ again, instead of two matmuls and a sum)

A 4-bit base (a QuantLinear) goes the same way with W = its dequantized weight, decoded in the
forward and decoded again in backward for dy W instead of being kept. The measured gain is in
docs/performance.md.
"""

from __future__ import annotations

import torch
from torch import nn


class _LoraLinear(torch.autograd.Function):
    """y = x W^T + b + s (x A^T) B^T with W (and b) frozen; gradients for x, A and B."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, a: torch.Tensor,
                b: torch.Tensor, scaling: float, quant: nn.Module | None = None) -> torch.Tensor:
        ctx.quant = quant  # a QuantLinear: W is decoded from it here and again in backward
        if quant is not None:
            weight = quant._decode(x.dtype)
        x2 = x.reshape(-1, x.shape[-1])
        xa = x2 @ a.t()  # M x r
        base = x2 @ weight.t() if bias is None else torch.addmm(bias, x2, weight.t())
        y = base.addmm_(xa, b.t(), alpha=scaling)  # base += s xa B^T, in place: no copy, no extra pass
        ctx.save_for_backward(x2, xa, weight if quant is None else None, a, b)
        ctx.scaling = scaling
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, xa, weight, a, b = ctx.saved_tensors
        s = ctx.scaling
        dy2 = dy.reshape(-1, dy.shape[-1])
        need_x, _, _, need_a, need_b, _, _ = ctx.needs_input_grad
        db = (dy2.t() @ xa).mul_(s) if need_b else None  # out x r
        dxa = (dy2 @ b).mul_(s) if (need_a or need_x) else None  # M x r
        da = dxa.t() @ x2 if need_a else None  # r x in
        dx = None
        if need_x:
            if ctx.quant is not None:
                weight = ctx.quant._decode(dy.dtype)
            dx = (dy2 @ weight).addmm_(dxa, a).view(*dy.shape[:-1], weight.shape[1])  # dy W + dxa A
        return dx, None, None, da, db, None, None


def lora_linear(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, a: torch.Tensor,
                b: torch.Tensor, scaling: float, quant: nn.Module | None = None) -> torch.Tensor:
    """x W^T + bias + scaling (x A^T) B^T, with W and bias frozen (no gradient is formed for them);
    W = quant's dequantized weight when `quant` (a QuantLinear) is given instead of `weight`."""
    return _LoraLinear.apply(x, weight, bias, a, b, float(scaling), quant)
