"""QLoRA: a frozen 4-bit NormalFloat base + LoRA adapters in higher precision.

Two backends behind one choice (`method.quant_backend`):

  tunelab       (default on CPU/MPS) every Linear but lm_head becomes `tunelab.quant.nn.QuantLinear`:
                NF4 codes in blocks of 64 with absmax constants, double-quantized (8-bit, blocks of
                256): bits/param 4 + 8/64 + 32/(64*256) ~ 4.127 (4 + 32/64 = 4.5 without the
                double quantization). Its forward dequantizes into the compute dtype and calls
                F.linear, so the gradient always reaches the adapters, whatever ran before.
  bitsandbytes  (default on CUDA) transformers' BitsAndBytesConfig(nf4, double quant). On CPUs with
                AVX-512-BF16, bitsandbytes 0.50 repacks a Linear4bit weight into an inference layout
                on the first eval-mode no-grad forward and keeps it, after which LoRA gets no
                gradient; `restore_bnb_training_layout` undoes that before every training step run.
                On CPU, weights whose rows are not whole 64-blocks are decoded by tunelab's codec,
                not by bitsandbytes' AVX-512 kernel, which scales them wrongly
                (`tunelab.quant.bnb_compat.route_unaligned_cpu_dequantize`, docs/quantization.md).

bitsandbytes is imported only when that backend is used: importing this module (the sft, pretrain,
dpo and reward recipes, `tunelab merge` and adapters/fused.py do, before peft) installs
`tunelab.quant.bnb_compat.defer_bitsandbytes_import`, so a plain LoRA or tunelab-NF4 run neither pays
for the import (its cost: docs/quantization.md) nor gets bitsandbytes' CPU warnings.

The adapter is plain PEFT either way: the LoRA layer on a QuantLinear (`LoraQuantLinear`, and its
folded subclass in adapters/fused.py) is registered with peft's custom-module mechanism and saves
the same `lora_A`/`lora_B` keys as on an nn.Linear.
"""

from __future__ import annotations

import torch
from torch import nn

from tunelab.quant import bnb_compat

bnb_compat.defer_bitsandbytes_import()  # before anything imports peft (see the module docstring)


def _lora_layer_cls():
    from peft.tuners.lora.layer import LoraLayer

    class LoraQuantLinear(nn.Module, LoraLayer):
        """LoRA on a QuantLinear: y = dequant(W_nf4) x + (alpha/r) B A x; only A and B train."""

        def __init__(self, base_layer: nn.Module, adapter_name: str, config, r: int = 0, lora_alpha: int = 1, **kwargs):
            super().__init__()
            LoraLayer.__init__(self, base_layer)
            self.fan_in_fan_out = False
            self._active_adapter = adapter_name
            self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config)

        def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            result = self.base_layer(x)
            if self.disable_adapters:
                return result
            for name in self.active_adapters:
                if name not in self.lora_A.keys():
                    continue
                a, b = self.lora_A[name], self.lora_B[name]
                xa = x if torch.is_autocast_enabled() else x.to(a.weight.dtype)
                out = b(a(self.lora_dropout[name](xa))) * self.scaling[name]
                result = result + out.to(result.dtype)
            return result

        def get_delta_weight(self, adapter: str) -> torch.Tensor:
            return (self.lora_B[adapter].weight @ self.lora_A[adapter].weight) * self.scaling[adapter]

        def __repr__(self) -> str:
            return "lora." + super().__repr__()

    return LoraQuantLinear


_CLS = None


def lora_quant_linear_cls() -> type:
    """The peft LoRA layer class that wraps a QuantLinear (one class per process)."""
    global _CLS
    if _CLS is None:
        _CLS = _lora_layer_cls()
    return _CLS


def register_quant_linear(lora_config) -> None:
    """Teach peft to wrap QuantLinear layers in the unfolded `LoraQuantLinear` (no-op for models
    without them). `adapters.fused.register_lora_layers` registers the folded layers instead."""
    from tunelab.quant.nn import QuantLinear

    lora_config._register_custom_module({QuantLinear: lora_quant_linear_cls()})


def choose_backend(pref: str, device: torch.device) -> str:
    """auto -> bitsandbytes on CUDA (when installed), our pure-PyTorch NF4 elsewhere."""
    if pref != "auto":
        return pref
    if device.type == "cuda":
        try:
            import bitsandbytes  # noqa: F401

            return "bitsandbytes"
        except ImportError:
            pass
    return "tunelab"


def quantize_base(model: nn.Module, quant_type: str = "nf4", double_quant: bool = True,
                  compute_dtype: torch.dtype | None = None, skip=("lm_head",)) -> nn.Module:
    """Replace every Linear except `skip` with a frozen 4-bit QuantLinear, in place (a model loaded whole;
    `tunelab.quant.stream_load` builds the same model without holding the full-precision one)."""
    from tunelab.quant.nn import quantize_model

    if quant_type == "gguf":  # a GGUF-trained run loaded whole: its weights are the blocks' exact decode
        return freeze_quantized_base(model, compute_dtype)
    quant_type = "nf4" if quant_type == "auto" else quant_type  # auto on a model loaded whole: nf4
    quantize_model(model, quant_type, skip=tuple(skip), blocksize=64, double_quant=double_quant)
    freeze_quantized_base(model, compute_dtype)
    _own_storage(model)
    return model


def freeze_quantized_base(model: nn.Module, compute_dtype: torch.dtype | None = None) -> nn.Module:
    """Freeze every parameter and set each QuantLinear's compute dtype (None: the input's), in place."""
    from tunelab.quant.nn import QuantLinear

    if compute_dtype is not None:
        for m in model.modules():
            if isinstance(m, QuantLinear):
                m.compute_dtype = compute_dtype
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _own_storage(model: nn.Module) -> None:
    """Copy the weights left unquantized (embeddings, norms, head) into memory of their own.

    A model loaded from safetensors keeps its tensors in a memory map of the checkpoint file, so the
    file stays mapped for as long as any one of them lives, and every page quantization read stays
    resident; once these are copied the file's pages are released (measured: docs/quantization.md,
    "Resident memory after quantizing").
    """
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device.type == "cpu" and t.dtype.is_floating_point:
            t.data = t.data.clone()


def bnb_quantization_config(quant_type: str, double_quant: bool, compute_dtype: torch.dtype):
    """transformers' 4-bit config for the bitsandbytes backend (its entry point: also routes CPU decodes
    of weights whose rows are not whole blocks through tunelab's codec)."""
    from transformers import BitsAndBytesConfig

    bnb_compat.route_unaligned_cpu_dequantize()
    quant_type = "fp4" if quant_type == "fp4" else "nf4"  # auto (and gguf, refused before) -> nf4
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute_dtype)


def restore_bnb_training_layout(model: nn.Module) -> int:
    """Undo bitsandbytes' CPU inference repacking so LoRA gets gradients again; returns layers fixed."""
    bnb_compat.route_unaligned_cpu_dequantize()  # idempotent: for models not built by bnb_quantization_config
    try:
        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return 0
    fixed = 0
    for m in model.modules():
        if isinstance(m, Linear4bit):
            qs = getattr(m.weight, "quant_state", None)
            if qs is not None and getattr(qs, "packing_format_for_cpu", False):
                m.weight.data, m.weight.quant_state = _convert_weight_packed_for_cpu_inverse(m.weight.data, qs)
                fixed += 1
    return fixed
