"""Output head + cross-entropy in one pass, chunk by chunk, with the gradient formed in the forward.

For target positions P with hidden states h (P x d), head weight W (V x d) and targets t:

    loss   = sum_i [ logsumexp_v(z_iv) - z_i,t_i ],        z = h W^T   (P x V logits)
    dL/dz  = softmax(z) - onehot(t)                         (per row; times the upstream scalar g)
    dL/dh  = (softmax(z) - onehot(t)) W                     (P x d)
    dL/dW  = (softmax(z) - onehot(t))^T h                   (V x d, only when W trains)

The loss is the last thing training computes and it is a plain sum, so dL/dh is known in the
forward already: each chunk of `chunk` rows makes its logits, turns them into softmax - onehot in
place and multiplies back by W, then the logits are dropped. Backward only scales the stored
dL/dh by g. Against `F.cross_entropy(head(h), t, reduction="sum")`:

- memory: nothing of size P x V outlives its chunk (the plain path keeps the logits' log-softmax,
  P x V x 4 bytes, until backward, plus transients of the same size); here chunk x V x 4 at a time,
  plus dL/dh (P x d x 4). SmolLM2, 3,000 reply positions: 590 MB kept until backward (and as much
  again while it runs) -> 7 MB kept, 201 MB alive while a 1,024-row chunk runs;
- time: the same two matmuls (z = h W^T, dL/dh = dz W), but no separate log-softmax, its backward,
  or the zero-filled P x V gradient of the NLL gather (measured: docs/performance.md, "The levers").

Gradients match cross_entropy's to float rounding, also under bf16 autocast where the two matmuls
run in bf16 (tests/ops/test_linear_ce.py). Used by `losses.reply_loss_sum` whenever the
head is a bias-free Linear, in training and in evaluation (loss only, chunk by chunk).
"""

from __future__ import annotations

import torch

from tunelab.ops.chunking import LOSS_CHUNK, loss_chunk_rows

CHUNK = LOSS_CHUNK  # rows of logits alive at a time: 1,024 x 49,152 x 4 B = 201 MB for SmolLM2


def _chunked(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, chunk: int, need_h: bool,
             need_w: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(loss sum, dL/dh or None, dL/dW in fp32 or None), `chunk` rows of logits at a time."""
    # equal chunks of at most `chunk` rows: 1,058 rows go as 529 + 529, not 1,024 + 34 (a thin
    # remainder matmul against the V x d head runs far below the full chunk's rate: docs/performance.md)
    chunk = loss_chunk_rows(h.shape[0], chunk) or chunk
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    grad_h = torch.empty_like(h) if need_h else None
    grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
    fp32 = weight.dtype == h.dtype == torch.float32 and not torch.is_autocast_enabled(h.device.type)
    # one logits buffer for every chunk: glibc does not hand a freed chunk-sized block back to the
    # next 64-byte-aligned request of the same size (torch's), so a new one per chunk would grow the
    # heap by one chunk each time (measured: docs/performance.md, "one logits buffer")
    buf = h.new_empty(min(chunk, h.shape[0]), weight.shape[0]) if fp32 else None
    for s in range(0, h.shape[0], chunk):
        hc, tc = h[s:s + chunk], target[s:s + chunk]
        if buf is not None:
            z = torch.mm(hc, weight.t(), out=buf[:len(hc)])  # chunk x V
        else:
            z = (hc @ weight.t()).float()
        z_t = z.gather(1, tc[:, None])  # the targets' logits, before z is overwritten
        m = z.amax(dim=-1, keepdim=True)
        e_sum = z.sub_(m).exp_().sum(dim=-1, keepdim=True)  # z := exp(z - max), in place
        total += (e_sum.log() + m - z_t).sum()  # logsumexp(z) - z_t
        if need_h or need_w:
            dz = z.div_(e_sum)  # softmax, still in place of the logits
            dz[torch.arange(len(tc), device=dz.device), tc] -= 1.0  # - onehot(t)
            dz = dz.to(weight.dtype)
            if need_h:
                grad_h[s:s + chunk] = dz @ weight
            if need_w:
                grad_w.addmm_(dz.t().float(), hc.float())
    return total, grad_h, grad_w


class _LinearCrossEntropySum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, chunk: int) -> torch.Tensor:
        total, grad_h, grad_w = _chunked(h, weight, target, chunk, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        dh = grad_h * g.to(grad_h.dtype) if grad_h is not None else None
        dw = (grad_w * g).to(ctx.weight_dtype) if grad_w is not None else None
        return dh, dw, None, None


def linear_cross_entropy_sum(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
                             chunk: int = CHUNK) -> torch.Tensor:
    """sum_i cross_entropy(h_i W^T, t_i): the value and gradients of
    `F.cross_entropy(h @ weight.T, target, reduction="sum")` without keeping P x V logits.
    With grad disabled (evaluation) only the loss is computed, still chunk by chunk."""
    if not torch.is_grad_enabled():
        return _chunked(h, weight, target, chunk, False, False)[0]
    if h.shape[0] == 0:
        return (h.sum() + weight.sum()) * 0.0
    return _LinearCrossEntropySum.apply(h, weight, target, chunk)
