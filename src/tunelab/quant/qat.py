"""Quantization-aware training: fake-quantized Linears (QAT) and BitNet conversion, then export.

    prepare_qat(model, "int4")  Linear -> FakeQuantLinear (latent fp32 W, forward uses Q(W), STE)
    to_bitnet(model)            Linear -> BitLinear (ternary W + 8-bit activations, STE)
    ... fine-tune (the training engine, or `finetune_lm` below for a short measured loop) ...
    convert_qat(model)          FakeQuantLinear / BitLinear -> QuantLinear (real packed weights)

After `convert_qat` the model computes exactly what it computed in training (same Q(W); BitLinear
becomes a ternary QuantLinear with `act_quant=True`).
"""

from __future__ import annotations

import math

import torch
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


def convert_qat(model: nn.Module, double_quant: bool = False) -> nn.Module:
    """Replace FakeQuantLinear / BitLinear by QuantLinear holding the packed Q(W), in place."""

    def make(_name, m):
        if isinstance(m, BitLinear):
            return QuantLinear.from_weight(m.weight, m.bias, "ternary", act_quant=True)
        return QuantLinear.from_weight(m.weight, m.bias, m.fmt, m.fq.blocksize, double_quant)

    replace_linears(model, make, skip=(), types=(FakeQuantLinear, BitLinear))
    return model


def lm_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a causal LM on a [batch, seq] batch."""
    return model(input_ids=input_ids, labels=input_ids).loss


@torch.no_grad()
def perplexity(model: nn.Module, batches: list[torch.Tensor]) -> float:
    """exp(mean token NLL) over [batch, seq] token batches (every position but the first is scored)."""
    was = model.training
    model.eval()
    nll, count = 0.0, 0
    for ids in batches:
        n = ids.numel() - ids.shape[0]  # tokens predicted: seq - 1 per row
        nll += lm_loss(model, ids).item() * n
        count += n
    model.train(was)
    return math.exp(nll / count)


def finetune_lm(model: nn.Module, batches: list[torch.Tensor], steps: int, lr: float = 1e-4,
                warmup_lambda_steps: int = 0, log=None) -> list[float]:
    """A short AdamW loop on causal-LM loss (cycling over `batches`), for QAT/BitNet recovery
    measurements; bf16 autocast on CPU. With warmup_lambda_steps > 0 the quantization strength
    rises linearly from 0 to 1 (set_lambda). Returns the loss per step."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(steps):
        if warmup_lambda_steps:
            set_lambda(model, min(1.0, (step + 1) / warmup_lambda_steps))
        ids = batches[step % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ids.device.type == "cpu"):
            loss = lm_loss(model, ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log:
            log(step, loss.item())
    return losses
