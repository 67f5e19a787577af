"""LoRA through peft.

    h = W0 x + (alpha / r) * B A x,   W0 frozen, A: r x in (Kaiming-uniform), B: out x r (zeros)

so the adapted model starts exactly at the base model. Trainable parameters per adapted
Linear: r * (in + out). Example computation, SmolLM2-135M (hidden 576, MLP 1536, k/v 192, 30 blocks),
r=16, all-linear:
  q, o: 16*(576+576) = 18,432 each; k, v: 16*(576+192) = 12,288 each; gate, up, down: 16*(576+1536) = 33,792 each
  per block 2*18,432 + 2*12,288 + 3*33,792 = 162,816
  method.layers = 8 (the default: the last 8 blocks): x 8 = 1,302,528 ("1.3M")
  method.layers = all: x 30 = 4,884,480 ("4.9M")
"""

from __future__ import annotations

import torch
from torch import nn

from tunelab.config import MethodConfig
from tunelab.models.structure import blocks_list, num_blocks


def quant_linear_types() -> tuple[type, ...]:
    """Our 4-bit layer type, when the quantization package is present."""
    try:
        from tunelab.quant.nn import QuantLinear
    except ImportError:
        return ()
    return (QuantLinear,)


def target_modules(model: nn.Module, spec: str | list[str]) -> list[str] | str:
    """`all-linear` -> every Linear leaf name except the output head; a list is used as given."""
    if spec != "all-linear":
        return [spec] if isinstance(spec, str) else list(spec)
    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, *quant_linear_types())) and not full.endswith(("lm_head", "score", "classifier")):
            names.add(full.split(".")[-1])
    return sorted(names)


def adapted_layers(model: nn.Module, layers: str | int) -> list[int] | None:
    """method.layers -> peft's layers_to_transform: None for all blocks, else the last N indices.

    e.g. 30 blocks, layers 6 -> [24, ..., 29]: blocks 0-23 stay frozen and, because nothing below
    block 24 needs a gradient, autograd records nothing there (no saved activations, no backward).
    """
    if layers == "all":
        return None
    n = num_blocks(model)
    return list(range(max(0, n - int(layers)), n)) if int(layers) < n else None


def lora_config(model: nn.Module, m: MethodConfig, task_type: str = "CAUSAL_LM",
                modules_to_save: list[str] | None = None):
    """peft LoraConfig; `modules_to_save` are trained whole and saved with the adapter (e.g. a new head)."""
    from peft import LoraConfig

    return LoraConfig(r=m.r, lora_alpha=m.alpha, lora_dropout=m.dropout,
                      target_modules=target_modules(model, m.target_modules), bias="none", task_type=task_type,
                      modules_to_save=modules_to_save, layers_to_transform=adapted_layers(model, m.layers))


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; packed 4-bit buffers count as their logical weights."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    total += sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, quant_linear_types()))
    return trainable, total


def human(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def trainable_summary(model: nn.Module) -> str:
    """e.g. 'trainable: 1.6M / 134.5M (1.2%)'."""
    t, n = count_params(model)
    return f"trainable: {human(t)} / {human(n)} ({100 * t / max(n, 1):.2f}%)"


def apply_lora(model: nn.Module, m: MethodConfig, task_type: str = "CAUSAL_LM",
               modules_to_save: list[str] | None = None):
    """Wrap `model` with a fresh LoRA adapter (peft), only the adapter (and `modules_to_save`) trainable.
    The LoRA layers are `adapters/fused.py`'s (peft's layers with a folded plain case: same values,
    fewer passes), on nn.Linear and QuantLinear bases alike."""
    from tunelab.adapters.fused import register_lora_layers

    from peft import get_peft_model  # after fused: it installs the bitsandbytes import deferral first

    cfg = lora_config(model, m, task_type, modules_to_save)
    register_lora_layers(cfg)
    return get_peft_model(model, cfg)


def freeze_all_but_last(model: nn.Module, n_layers: int) -> None:
    """method freeze: train only the last `n_layers` transformer blocks and the output head."""
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = blocks_list(model)
    if blocks is not None and n_layers > 0:
        for b in list(blocks)[-n_layers:]:
            for p in b.parameters():
                p.requires_grad_(True)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        head.weight.requires_grad_(True)


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copy of the adapter weights (for tests and checkpoints)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
