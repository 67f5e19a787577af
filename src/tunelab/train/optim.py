"""`train.optim`: the optimizer over the trainable parameters, and its name in transformers' Trainer (TRL tasks).

    adamw            torch.optim.AdamW (m, v in fp32: 8 bytes per trainable parameter)
    adamw_fused      torch.optim.AdamW(fused=True): the same update in one fused kernel per dtype/device
    adamw8bit        bitsandbytes AdamW8bit: m, v block-quantized to 8 bits (2 bytes + an fp32 absmax
                     per 256 values), CPU and CUDA in bitsandbytes >= 0.49; tensors under 4096 values
                     keep 32-bit state (bitsandbytes' min_8bit_size)
    paged_adamw8bit  bitsandbytes PagedAdamW8bit: the 8-bit states in CUDA unified memory, paged out to
                     host memory under GPU memory pressure (CUDA only)

`memory_optimizer(optim)` is the name `tunelab memory`'s estimator prices it as (memory/estimator.py
ADAM_BYTES: adamw 8 bytes, adamw8bit 2 + 8/256 per trainable parameter), so `gradient_checkpointing:
auto` decides on the optimizer the run uses.
"""

from __future__ import annotations

import torch

from tunelab.errors import TunelabError

HF_NAMES = {"adamw": "adamw_torch", "adamw_fused": "adamw_torch_fused", "adamw8bit": "adamw_bnb_8bit",
            "paged_adamw8bit": "paged_adamw_8bit"}


def memory_optimizer(optim: str) -> str:
    return "adamw8bit" if optim in ("adamw8bit", "paged_adamw8bit") else "adamw"


def check_optim(optim: str, device: torch.device) -> None:
    """One-line error for an optimizer this machine cannot run (paged on a non-CUDA device, bnb missing)."""
    if optim == "paged_adamw8bit" and device.type != "cuda":
        raise TunelabError(f"train.optim paged_adamw8bit pages optimizer states in CUDA memory; this run is on "
                           f"{device.type}", where="train.optim", hint="use adamw8bit (CPU and CUDA) or adamw")
    if optim in ("adamw8bit", "paged_adamw8bit"):
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise TunelabError(f"train.optim {optim} needs bitsandbytes", where="train.optim",
                               hint="pip install bitsandbytes, or use train.optim=adamw") from None
    if optim == "adamw_fused" and device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise TunelabError(f"train.optim adamw_fused has no fused kernel on {device.type}", where="train.optim",
                           hint="use train.optim=adamw")


def make_optimizer(params: list, optim: str, lr: float, weight_decay: float, device: torch.device):
    """The optimizer `optim` over `params` (betas 0.9, 0.999, eps 1e-8 for all of them)."""
    check_optim(optim, device)
    if optim == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if optim == "adamw_fused":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    import bitsandbytes as bnb

    cls = bnb.optim.AdamW8bit if optim == "adamw8bit" else bnb.optim.PagedAdamW8bit
    return cls(params, lr=lr, weight_decay=weight_decay)
