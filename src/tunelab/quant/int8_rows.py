"""Frozen int8 embeddings and output head: one int8 code per weight, one fp32 scale per row.

    s_v  = max_j |W_vj| / 127                       (row v of the V x d matrix; the token's row)
    q_vj = round(W_vj / s_v) in [-127, 127]         (`integer.quantize_symmetric(W, 8, "channel")`,
                                                     the layout of QuantLinear's int8: absmax = 127 s)
    W'_vj = q_vj s_v,   |W'_vj - W_vj| <= s_v / 2   (half a step of the row's own scale)

    bytes = V d + 4 V     against 4 V d in fp32: 1/4 (+ 4/d), e.g. Llama-2-7B's embeddings and head
                          2 x 32,000 x 4,096 x (4 - 1) bytes less = 0.79 GB

Int8Embedding(ids) = q[ids] s[ids]: only the gathered rows are decoded.
Int8Head(h)        = h W'^T, `HEAD_CHUNK` vocabulary rows at a time: each chunk of W' is decoded into the
                     compute dtype, multiplied and dropped (chunk x d x 4 bytes alive, never V x d);
                     backward dL/dh = dL/dz W', again chunk by chunk. Both are frozen: no gradient reaches
                     q or s, gradients flow to the hidden states only.
A tied head (`Int8Head.tied`) reads the embedding's buffers: one int8 copy for both.
"""

from __future__ import annotations

import torch
from torch import nn

from tunelab.quant.integer import quantize_symmetric

ROW_CHUNK = 64  # rows quantized at a time: ~5 fp32 temporaries of 64 x d x 4 bytes (1 MB each at d = 4,096)
HEAD_CHUNK = 2048  # vocabulary rows decoded at a time in the head: 2,048 x 4,096 x 4 B = 34 MB


def quantize_rows(w: torch.Tensor, chunk: int = ROW_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 [V, d], s fp32 [V]) of a [V, d] weight (any float dtype, e.g. a bf16 view of a checkpoint),
    `chunk` rows at a time; equal to `quantize_symmetric(w, 8, "channel")` (a row's codes depend on it only)."""
    v, d = w.shape
    q, s = torch.empty(v, d, dtype=torch.int8), torch.empty(v)
    for r in range(0, v, chunk):
        iq = quantize_symmetric(w[r:r + chunk], 8, "channel")
        q[r:r + chunk], s[r:r + chunk] = iq.q, iq.scale
    return q, s


def decode_rows(q: torch.Tensor, s: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W' = q s per row, in `dtype` (the product in fp32, then cast): [..., d] for q [..., d], s [...]."""
    w = q.to(torch.float32).mul_(s.unsqueeze(-1))
    return w if dtype == torch.float32 else w.to(dtype)


class Int8Embedding(nn.Module):
    """nn.Embedding's forward on int8 rows: out = q[ids] s[ids] in `dtype` (the model's; fp32 on CPU).
    Buffers `qweight` int8 [V, d] and `scale` fp32 [V] (in state_dict); nothing trains."""

    def __init__(self, q: torch.Tensor, s: torch.Tensor, padding_idx: int | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = q.shape
        self.padding_idx, self.out_dtype = padding_idx, dtype
        self.register_buffer("qweight", q)
        self.register_buffer("scale", s)

    @classmethod
    def from_weight(cls, w: torch.Tensor, padding_idx: int | None = None,
                    dtype: torch.dtype = torch.float32) -> "Int8Embedding":
        return cls(*quantize_rows(w.detach()), padding_idx, dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return decode_rows(self.qweight[ids], self.scale[ids], self.out_dtype)

    def dequantize_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W' [V, d] (the whole matrix: for merges and tests, not the forward)."""
        return decode_rows(self.qweight, self.scale, dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows + fp32 scale"


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


class _ChunkedHeadProduct(torch.autograd.Function):
    """z = h W'^T with W' decoded `chunk` rows at a time; dh = dz W' the same way (W' frozen)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, q: torch.Tensor, s: torch.Tensor, dtype: torch.dtype, chunk: int):
        ctx.save_for_backward(q, s)
        ctx.dtype, ctx.chunk, ctx.h_dtype = dtype, chunk, h.dtype
        x = h.to(dtype)
        z = x.new_empty(*h.shape[:-1], q.shape[0])
        for v in range(0, q.shape[0], chunk):
            z[..., v:v + chunk] = x @ decode_rows(q[v:v + chunk], s[v:v + chunk], dtype).t()
        return z

    @staticmethod
    def backward(ctx, dz: torch.Tensor):
        q, s = ctx.saved_tensors
        dz = dz.to(ctx.dtype)
        dh = torch.zeros(*dz.shape[:-1], q.shape[1], dtype=torch.float32, device=dz.device)
        for v in range(0, q.shape[0], ctx.chunk):
            dh += (dz[..., v:v + ctx.chunk] @ decode_rows(q[v:v + ctx.chunk], s[v:v + ctx.chunk], ctx.dtype)).float()
        return dh.to(ctx.h_dtype), None, None, None, None


class Int8Head(nn.Module):
    """The output head on int8 rows: logits = h W'^T in the compute dtype (autocast's when it is on, else
    h's), `chunk` vocabulary rows decoded at a time. Frozen: gradients reach h only.
    Buffers `qweight`/`scale` as Int8Embedding's; `tied(emb)` shares the embedding's."""

    def __init__(self, q: torch.Tensor, s: torch.Tensor, chunk: int = HEAD_CHUNK, tied_to: Int8Embedding | None = None):
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.chunk = chunk
        self.bias = None
        self._tied = [tied_to] if tied_to is not None else []  # a list: not a submodule, no second state_dict entry
        if tied_to is None:
            self.register_buffer("qweight", q)
            self.register_buffer("scale", s)

    @classmethod
    def from_weight(cls, w: torch.Tensor, chunk: int = HEAD_CHUNK) -> "Int8Head":
        return cls(*quantize_rows(w.detach()), chunk)

    @classmethod
    def tied(cls, emb: Int8Embedding, chunk: int = HEAD_CHUNK) -> "Int8Head":
        return cls(emb.qweight, emb.scale, chunk, tied_to=emb)

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, s): its own buffers, or the tied embedding's."""
        if self._tied:
            return self._tied[0].qweight, self._tied[0].scale
        return self.qweight, self.scale

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q, s = self.rows()
        dtype = _compute_dtype(h)
        if not (h.requires_grad and torch.is_grad_enabled()):
            with torch.no_grad():
                return _ChunkedHeadProduct.forward(_NoCtx(), h, q, s, dtype, self.chunk)
        return _ChunkedHeadProduct.apply(h, q, s, dtype, self.chunk)

    def dequantize_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        q, s = self.rows()
        return decode_rows(q, s, dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int8 rows + fp32 scale"
                + (", tied to the embeddings" if self._tied else ""))


class _NoCtx:
    """A stand-in for autograd's ctx when the product runs without a graph."""

    def save_for_backward(self, *_):
        pass

