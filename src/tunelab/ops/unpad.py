"""Run each block's MLP on the batch's real tokens only, not on its padding.

A batch of B rows padded to the longest row holds B x S positions, of which R are real. Attention
needs the B x S layout, but the MLP works position by position, so it can take the R real rows:

    x (B, S, d) -> x.view(B S, d)[real]  (R, d) -> mlp -> zeros (B S, d) with the R rows put back

The MLP is 3 of a Llama block's 4 matmul groups (SmolLM2: gate + up + down = 2.65M of 3.54M
weights per block), so padding costs 3/4 less there (how much padding a benchmark batch holds, and
the time saved: docs/performance.md).

Exact for every real position: rows are right-padded and attention is causal, so no real token
ever attends to a padding position, and the loss reads real positions only. Padding positions get
an MLP output of 0 (their hidden states are never read). Gradients flow through the gather and
the scatter.

Under gradient checkpointing a block's forward runs again in backward, after this context has
closed. `activation_ckpt.enable` passes `replay_context` to torch's checkpoint as its `context_fn`:
each checkpointed call records the hooks active in its forward and puts the same ones (the same
real rows) back around its recompute, so the recompute sees what the forward saw. Checkpointing
set up some other way (no replay) gets no hooks: its recompute would see different shapes.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from tunelab.ops.recompute import ACTIVE, recomputes_blocks, replays_per_call_state


def _mlps(decoder) -> list:
    from tunelab.models.structure import blocks_list

    blocks = blocks_list(decoder)
    if blocks is None:
        return []
    return [b.mlp for b in blocks if isinstance(getattr(b, "mlp", None), torch.nn.Module)]


class MlpHooks:
    """Gather/scatter hooks on `mlps` for inputs of `positions` rows, keeping the `real` ones.
    A context manager that can be entered again (the forward, then each recompute)."""

    def __init__(self, mlps: list, real: torch.Tensor, positions: int):
        self.mlps, self.real, self.positions = mlps, real, positions
        self._shapes: dict[int, torch.Size] = {}
        self._handles: list = []

    def _gather(self, module, args):
        x = args[0]
        if x.dim() < 2 or x.shape[:-1].numel() != self.positions:
            return None
        self._shapes[id(module)] = x.shape
        return (x.reshape(self.positions, x.shape[-1]).index_select(0, self.real), *args[1:])

    def _scatter(self, module, args, out):
        shape = self._shapes.pop(id(module), None)
        if shape is None:
            return None
        full = out.new_zeros(self.positions, out.shape[-1]).index_copy(0, self.real, out)
        return full.view(*shape[:-1], out.shape[-1])

    def fresh(self) -> "MlpHooks":
        """The same hooks (same rows), not yet entered: what a checkpointed recompute puts back."""
        return MlpHooks(self.mlps, self.real, self.positions)

    def __enter__(self) -> "MlpHooks":
        for mlp in self.mlps:
            self._handles.append(mlp.register_forward_pre_hook(self._gather))
            self._handles.append(mlp.register_forward_hook(self._scatter))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._shapes.clear()


@contextmanager
def mlp_on_real_rows(decoder, attention_mask: torch.Tensor | None):
    """While active, every block MLP of `decoder` sees only the rows where `attention_mask` is 1
    (for inputs of attention_mask's B x S positions; other inputs pass unchanged)."""
    if (attention_mask is None or bool(attention_mask.all())
            or (recomputes_blocks(decoder) and not replays_per_call_state(decoder))):
        yield
        return
    real = attention_mask.reshape(-1).nonzero().squeeze(1)
    hooks = MlpHooks(_mlps(decoder), real, attention_mask.numel())
    ACTIVE.append(hooks)
    try:
        with hooks:
            yield
    finally:
        ACTIVE.pop()
