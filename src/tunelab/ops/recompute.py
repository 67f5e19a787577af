"""Per-call changes to a model's blocks that a gradient-checkpointed recompute must see again.

Some exact savings change what a block computes for one training call only (ops/unpad.py: the MLP
runs on the real rows). A checkpointed block runs its forward again in backward, after that call
has ended, so the recompute has to see the same change. The calls now running register their hooks
on `ACTIVE` (innermost last); `replay_context` is torch.utils.checkpoint's `context_fn` that puts
the hooks active at a checkpointed forward back around its recompute.
"""

from __future__ import annotations

import contextlib

import torch

ACTIVE: list = []  # hooks of the per-call contexts now running (innermost last); each can be entered again

def replay_context() -> tuple:
    """`context_fn` for torch.utils.checkpoint: (nothing around the forward, a fresh copy of the hooks
    active at the forward around the recompute). Called at each checkpointed forward, so it captures
    that call's state (ops/unpad.py: its real rows). A registered hook object has `fresh()`."""
    hooks = ACTIVE[-1] if ACTIVE else None
    replay = hooks.fresh() if hooks is not None else contextlib.nullcontext()
    return contextlib.nullcontext(), replay


def is_on(model) -> bool:
    """Is activation checkpointing on for `model` (HF or peft-wrapped, or any module holding HF blocks)?"""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        try:
            return bool(getattr(model, name))
        except AttributeError:
            continue
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())  # what both properties scan


def recomputes_blocks(module) -> bool:
    """Will `module`'s blocks run their forward again in backward? (checkpointing on, training, grad
    enabled). Anything that changes a block's forward for one call only (a shared prefix's cache,
    hooks) must not be used then: the recompute would not see it."""
    return module.training and torch.is_grad_enabled() and is_on(module)


def replays_per_call_state(module) -> bool:
    """Were `module`'s blocks set to checkpoint by `enable` (their recompute replays the per-call
    hooks: `ops.unpad.replay_context`)? False for checkpointing set up any other way."""
    from tunelab.ops.recompute import replay_context

    for m in module.modules():
        func = getattr(m, "_gradient_checkpointing_func", None)
        if func is not None and getattr(m, "gradient_checkpointing", False):
            return getattr(func, "keywords", {}).get("context_fn") is replay_context
    return False
