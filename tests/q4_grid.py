"""Test helper: move a model's weights onto a Q4_1 grid, as a base converted from a Q4_1 GGUF holds them."""

from __future__ import annotations

import torch

GROUP = 32


@torch.no_grad()
def snap_to_q4_1(model, gain: float = 4.0):
    """Every 2-D weight whose rows split into groups of 32, times `gain` (sharper random logits), set to
    lo + d round((w - lo) / d) per group, d = (hi - lo) / 15 (a constant group: any d). Returns `model`."""
    for p in model.parameters():
        if p.dim() == 2 and p.shape[1] % GROUP == 0:
            g = (p * gain).view(p.shape[0], -1, GROUP)
            lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
            d = ((hi - lo) / 15).clamp(min=1e-6)
            p.copy_((lo + d * torch.round((g - lo) / d)).view_as(p))
    return model
