"""LoRA layers whose plain case runs the folded `tunelab.ops.lora_linear` (same function, fewer passes).

peft builds each LoRA layer through a list of dispatchers, first match wins. `register_lora_layers`
puts ours first with peft's custom-module mapping (`LoraConfig._register_custom_module`), the way
peft's `tuners/lora/bnb.py` adds one layer class per base type:

    torch.nn.Linear (exactly)   -> FusedLoraLinear        (a peft `lora.Linear`)
    quant.nn.QuantLinear        -> FusedLoraQuantLinear   (the QLoRA layer of adapters/qlora.py)
      (and its subclass quant.gguf_linear.GGUFBlockLinear: a GGUF file's blocks kept as stored)

Every other base (bitsandbytes' Linear4bit, which subclasses nn.Linear, Conv1D, ...), and an
nn.Linear targeted by parameter name or with fan_in_fan_out, falls through to peft's own dispatch.

Each layer's forward computes, for x (... x in), W (out x in), bias b, A (r x in), B (out x r),
s = alpha / r:

    y = x W^T + b + s (x A^T) B^T

through `lora_linear` (W = the dequantized 4-bit weight for a QuantLinear base) in the plain case,
checked at every call (`_plain_adapter`): no extra forward arguments, adapters enabled, not
merged, one active adapter, no dropout, no variant (DoRA, ...), no lora bias, a frozen base whose
bias is frozen too, x, A and B in the base's dtype (float32 for a QuantLinear computing in x's
dtype) and no autocast. Anything else runs the parent layer's forward, so the result is always the
same function of the same weights (tests/adapters/test_lora_fused.py checks outputs and gradients
against the parents'). The layers hold the parents' parameters under the parents' names: the
saved adapter is plain PEFT, loads in `PeftModel.from_pretrained`, and `merge_and_unload` merges
it as peft does. The measured gain is in docs/performance.md.
"""

from __future__ import annotations

import torch
from torch import nn

from tunelab.adapters.qlora import lora_quant_linear_cls  # first: installs the bitsandbytes import deferral
from tunelab.ops.lora_linear import lora_linear
from tunelab.quant.codecs import FORMATS_4BIT
from tunelab.quant.gguf_linear import GGUFBlockLinear
from tunelab.quant.nn import QuantLinear

from peft.tuners.lora.layer import Linear as _PeftLoraLinear  # noqa: E402  (after the deferral above)
from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: E402


def _plain_base(base, x: torch.Tensor) -> bool:
    """A frozen nn.Linear, or a 4-bit QuantLinear computing in x's dtype, with x's dtype."""
    if type(base) is nn.Linear:
        return not base.weight.requires_grad and x.dtype == base.weight.dtype
    if type(base) is QuantLinear:
        return (base.fmt in FORMATS_4BIT and not base.act_quant and base.compute_dtype in (None, x.dtype)
                and x.dtype == torch.float32)
    if type(base) is GGUFBlockLinear:  # decodes in fp32
        return base.compute_dtype in (None, x.dtype) and x.dtype == torch.float32
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


class _FoldedForward:
    """forward: `lora_linear` in the plain case, else the next class's (the peft layer's) forward."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        name = None if (args or kwargs) else _plain_adapter(self, x)
        if name is None:
            return super().forward(x, *args, **kwargs)
        base = self.base_layer
        quant = base if type(base) in (QuantLinear, GGUFBlockLinear) else None
        return lora_linear(x, None if quant is not None else base.weight, base.bias, self.lora_A[name].weight,
                           self.lora_B[name].weight, self.scaling[name], quant)


class FusedLoraLinear(_FoldedForward, _PeftLoraLinear):
    """peft's LoRA Linear on an nn.Linear base (same constructor, parameters, merge and state dict)."""


class FusedLoraQuantLinear(_FoldedForward, lora_quant_linear_cls()):
    """The QLoRA layer on a QuantLinear base (adapters/qlora.py), with the folded plain case."""


FUSED_LAYERS = (FusedLoraLinear, FusedLoraQuantLinear)


def dispatch_fused_linear(target: nn.Module, adapter_name: str, config, parameter_name: str | None = None,
                          **kwargs) -> nn.Module | None:
    """peft dispatcher: a FusedLoraLinear for an exact nn.Linear base, else None (peft's own
    dispatchers then run: bitsandbytes' Linear4bit, a targeted parameter, fan_in_fan_out)."""
    base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
    if type(base) is not nn.Linear or parameter_name is not None or config.fan_in_fan_out:
        return None
    return FusedLoraLinear(target, adapter_name, config=config, **kwargs)


def register_lora_layers(lora_config) -> None:
    """Have peft build our LoRA layers (module doc) when `lora_config` is applied to a model."""
    lora_config._register_custom_module({QuantLinear: FusedLoraQuantLinear, nn.Linear: dispatch_fused_linear})
