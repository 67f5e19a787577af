"""Quantization-aware training: fake-quantized Linears (QAT) and BitNet conversion, then export.

    prepare_qat(model, "int4")  Linear -> FakeQuantLinear (latent fp32 W, forward uses Q(W), STE)
    to_bitnet(model)            Linear -> BitLinear (ternary W + 8-bit activations, STE)
    ... fine-tune with the training engine (`tunelab.train.engine.train_loop`); a quantization
        warm-up is its `before_step` hook: before_step=LambdaWarmup(steps) ...
    convert_qat(model)          FakeQuantLinear / BitLinear -> QuantLinear (real packed weights)

After `convert_qat` the model computes exactly what it computed in training (same Q(W); BitLinear
becomes a ternary QuantLinear with `act_quant=True`).
"""

from __future__ import annotations

from torch import nn

from tunelab.quant.nn import BitLinear, FakeQuantLinear, QuantLinear, replace_linears

QAT_FORMATS = ("int8", "int4", "nf4", "fp4", "ternary")


def prepare_qat(model: nn.Module, fmt: str = "int8", skip: tuple[str, ...] = ("lm_head",),
                blocksize: int = 64) -> nn.Module:
    """Wrap every nn.Linear (except skipped names) with fake quantization, in place; returns model."""
    if fmt not in QAT_FORMATS:
        raise ValueError(f"unknown QAT format {fmt!r}; one of {QAT_FORMATS}")
    replace_linears(model, lambda _n, lin: FakeQuantLinear(lin, fmt, blocksize), skip)
    return model


def to_bitnet(model: nn.Module, skip: tuple[str, ...] = ("lm_head",), lam: float = 1.0) -> nn.Module:
    """Replace every nn.Linear (except skipped names) by a BitLinear sharing its weight, in place."""
    replace_linears(model, lambda _n, lin: BitLinear(lin, lam), skip)
    return model


def set_lambda(model: nn.Module, lam: float) -> None:
    """Quantization warm-up: lam = 0 is full precision, 1 fully quantized (BitLinear and FakeQuant)."""
    for m in model.modules():
        if isinstance(m, BitLinear):
            m.lam = lam
        elif isinstance(m, FakeQuantLinear):
            m.fq.lam = lam


class LambdaWarmup:
    """A training loop's `before_step(model)` hook: before optimizer step k (1, 2, ...) the
    quantization strength is set to lam = min(1, k / steps) (`set_lambda`), so it rises linearly
    from 1/steps to fully quantized at step `steps` and stays there."""

    def __init__(self, steps: int):
        if steps < 1:
            raise ValueError(f"LambdaWarmup needs steps >= 1, got {steps}")
        self.steps, self.step = steps, 0

    def __call__(self, model: nn.Module) -> None:
        self.step += 1
        set_lambda(model, min(1.0, self.step / self.steps))


def convert_qat(model: nn.Module, double_quant: bool = False) -> nn.Module:
    """Replace FakeQuantLinear / BitLinear by QuantLinear holding the packed Q(W), in place."""

    def make(_name, m):
        if isinstance(m, BitLinear):
            return QuantLinear.from_weight(m.weight, m.bias, "ternary", act_quant=True)
        return QuantLinear.from_weight(m.weight, m.bias, m.fmt, m.fq.blocksize, double_quant)

    replace_linears(model, make, skip=(), types=(FakeQuantLinear, BitLinear))
    return model
