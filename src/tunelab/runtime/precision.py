"""The compute precision training and inference run in.

`train.precision`: fp32 (no autocast), bf16 (bf16 autocast: matmuls in bf16, fp32 master weights),
fp16 (fp16 autocast: what auto picks on a GPU without bf16, written out by train/resolve.py), or
auto: bf16 where the hardware does bf16 matmuls natively (CUDA with bf16, else fp16; CPUs whose oneDNN
reports bf16 support: AVX-512-BF16 or AMX), fp32 elsewhere. docs/design.md ("Precision on
CPU") has the measurement behind the CPU rule.
"""

from __future__ import annotations

import torch

def cpu_has_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def int4_kernel_available() -> bool:
    """torch's CPU int4 kernel exists in this build (torch >= 2.6)."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and \
        hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")


def cpu_int4_decode() -> bool:
    """The decode engine's int4 weights (infer/int4.py) run here: native bf16 (their activations)
    and torch's CPU int4 kernel."""
    return cpu_has_bf16() and int4_kernel_available()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None = plain fp32. auto -> bf16 where the hardware does bf16 matmuls natively."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_bf16() else None
    return None
