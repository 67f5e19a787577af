"""Uniform (integer) codecs: fp16/bf16 casts, int8 symmetric, uint8 asymmetric, ternary, activations.

Pure tensor functions. Every integer codec maps a float to an integer code with a scale s (and a
zero point z for the asymmetric one) shared by a *group* of values:

    granularity "tensor":  one group                         (1 constant)
                "channel": one group per row (dim 0)         (out constants for a [out, in] weight)
                "block":   consecutive blocks of `blocksize` (n / blocksize constants)

    symmetric  (absmax):  s = max|x| / qmax,          q = clamp(round(x / s), qmin, qmax),   x' = s q
                          signed:   qmax = 2**(bits-1) - 1 = 127, qmin = -127   (int8)
                          unsigned: qmax = 2**bits - 1 = 255,   qmin = 0        (uint8, for x >= 0)
    asymmetric (min-max): s = (max - min) / 255,      z = round(-min / s),
                          q = clamp(round(x / s) + z, 0, 255),                   x' = s (q - z)

Worked examples (tests/quant/test_integer.py):
    symmetric uint8 of [0, 1000]:  s = 1000/255 = 3.92,  250 -> round(250 / 3.92) = round(63.75) = 64
    asymmetric [-20, 1000]:        s = 1020/255 = 4.0,   z = round(20 / 4) = 5,  -20 -> 0, 1000 -> 255

Ternary (BitNet b1.58): gamma = mean|W|, q = clamp(round(W / gamma), -1, 1) in {-1, 0, 1},
W' = gamma q; stored 2 bits per weight, 4 per byte (code q+1, first weight in the top bits).
Activations (BitNet): per token, s = max|x| / 127, q = round(x / s) in [-127, 127].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

CASTS = {"fp16": torch.float16, "bf16": torch.bfloat16}
GRANULARITIES = ("tensor", "channel", "block")
_EPS = 1e-12  # guards all-zero groups


def cast(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """fp32 -> fp16 | bf16 (round to nearest even); `.float()` is the dequantization."""
    if fmt not in CASTS:
        raise ValueError(f"unknown cast {fmt!r}; one of {tuple(CASTS)}")
    return x.to(CASTS[fmt])


def _groups(x: torch.Tensor, granularity: str, blocksize: int) -> torch.Tensor:
    """x as a 2-D [groups, size] view (zero-padded for a short last block)."""
    if granularity == "tensor":
        return x.reshape(1, -1)
    if granularity == "channel":
        return x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(-1, 1)
    if granularity == "block":
        flat = x.reshape(-1)
        nblocks = -(-flat.numel() // blocksize)  # ceil
        return torch.nn.functional.pad(flat, (0, nblocks * blocksize - flat.numel())).view(nblocks, blocksize)
    raise ValueError(f"unknown granularity {granularity!r}; one of {GRANULARITIES}")


def _ungroup(g: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    n = 1
    for s in shape:
        n *= s
    return g.reshape(-1)[:n].reshape(shape)


@dataclass
class IntQuant:
    """Integer codes + per-group constants. q: int8 (signed) or uint8, same shape as the input;
    scale: fp32 [groups]; zero_point: int32 [groups] (asymmetric only)."""

    q: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    granularity: str
    blocksize: int

    def nbytes(self) -> int:
        consts = [self.scale] + ([self.zero_point] if self.zero_point is not None else [])
        return self.q.numel() * self.q.element_size() + sum(c.numel() * c.element_size() for c in consts)


def quantize_symmetric(x: torch.Tensor, bits: int = 8, granularity: str = "tensor", blocksize: int = 64,
                       signed: bool = True, absmax: torch.Tensor | float | None = None) -> IntQuant:
    """Absmax quantization (module docstring). `absmax` overrides the measured range (calibration/clipping)."""
    qmin, qmax = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    g = _groups(x.detach().float(), granularity, blocksize)
    amax = g.abs().amax(dim=1) if absmax is None else torch.as_tensor(absmax, dtype=torch.float32).expand(g.shape[0])
    scale = amax.clamp(min=_EPS) / qmax  # e.g. 1000 / 255 = 3.92
    q = torch.clamp(torch.round(g / scale[:, None]), qmin, qmax)
    dtype = torch.int8 if signed and bits <= 8 else (torch.uint8 if bits <= 8 else torch.int32)
    return IntQuant(_ungroup(q, tuple(x.shape)).to(dtype), scale, None, granularity, blocksize)


def quantize_asymmetric(x: torch.Tensor, bits: int = 8, granularity: str = "tensor", blocksize: int = 64,
                        lo: torch.Tensor | float | None = None, hi: torch.Tensor | float | None = None) -> IntQuant:
    """Min-max (affine) quantization onto [0, 2**bits - 1]; `lo`/`hi` override the measured range.
    The range is widened to include 0 so that 0 is exactly representable (q = z)."""
    qmax = 2 ** bits - 1
    g = _groups(x.detach().float(), granularity, blocksize)
    n = g.shape[0]
    mn = g.amin(dim=1) if lo is None else torch.as_tensor(lo, dtype=torch.float32).expand(n)
    mx = g.amax(dim=1) if hi is None else torch.as_tensor(hi, dtype=torch.float32).expand(n)
    mn, mx = mn.clamp(max=0.0), mx.clamp(min=0.0)
    scale = (mx - mn).clamp(min=_EPS) / qmax  # e.g. (1000 - (-20)) / 255 = 4.0
    zero_point = torch.clamp(torch.round(-mn / scale), 0, qmax)  # e.g. round(20 / 4.0) = 5
    q = torch.clamp(torch.round(g / scale[:, None]) + zero_point[:, None], 0, qmax)
    dtype = torch.uint8 if bits <= 8 else torch.int32
    return IntQuant(_ungroup(q, tuple(x.shape)).to(dtype), scale, zero_point.to(torch.int32), granularity, blocksize)


def dequantize_int(iq: IntQuant, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """x' = scale * (q - zero_point), per group."""
    g = _groups(iq.q.float(), iq.granularity, iq.blocksize)
    if iq.zero_point is not None:
        g = g - iq.zero_point.float()[:, None]
    return _ungroup(g * iq.scale[:, None], tuple(iq.q.shape)).to(dtype)


def bits_per_param_int(bits: int, granularity: str, n: int, groups: int, asymmetric: bool = False) -> float:
    """bits + constants / n: 32-bit scale per group (+ 32-bit zero point when asymmetric)."""
    return bits + groups * (64 if asymmetric else 32) / n


# --- ternary (BitNet b1.58) -------------------------------------------------------------------

def ternary_scale(w: torch.Tensor) -> torch.Tensor:
    """gamma = mean|W| (absmean), a scalar fp32 tensor."""
    return w.detach().float().abs().mean().clamp(min=1e-5)


def ternarize(w: torch.Tensor, gamma: torch.Tensor | None = None) -> torch.Tensor:
    """q = clamp(round(W / gamma), -1, 1) as int8 in {-1, 0, 1}."""
    gamma = ternary_scale(w) if gamma is None else gamma
    return torch.clamp(torch.round(w.detach().float() / gamma), -1, 1).to(torch.int8)


def pack_2bit(q: torch.Tensor) -> torch.Tensor:
    """{-1, 0, 1} int8 -> uint8 [ceil(n/4)]: byte = c0 << 6 | c1 << 4 | c2 << 2 | c3, c = q + 1."""
    c = (q.reshape(-1).to(torch.int16) + 1).to(torch.uint8)
    c = torch.nn.functional.pad(c, (0, (-c.numel()) % 4), value=1).view(-1, 4)  # pad with code 1 (= 0)
    return (c[:, 0] << 6) | (c[:, 1] << 4) | (c[:, 2] << 2) | c[:, 3]


_SHIFTS = torch.tensor([6, 4, 2, 0], dtype=torch.uint8)


def unpack_2bit(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of `pack_2bit`: int8 [n] in {-1, 0, 1}."""
    c = (packed[:, None] >> _SHIFTS.to(packed.device)) & 3  # [bytes, 4]
    return (c.reshape(-1)[:n].to(torch.int8) - 1)


@lru_cache(maxsize=None)
def _quad_table(dtype: torch.dtype, device=None) -> torch.Tensor:
    """256-entry table: byte -> its 4 ternary values as one word (4 x fp32 = complex128, 4 x bf16/fp16 = int64)."""
    codes = torch.arange(256, dtype=torch.int32)
    quad = torch.stack([((codes >> s) & 3).to(dtype) - 1 for s in (6, 4, 2, 0)], dim=1).contiguous()
    word = {4: torch.complex128, 2: torch.int64}[quad.element_size()]
    return quad.view(word).view(256).to(device)


def decode_ternary(packed: torch.Tensor, gamma: torch.Tensor, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """gamma * q for the first n weights: one table gather per byte (4 weights), one multiply; flat [n]."""
    work = dtype if dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32
    vals = _quad_table(work, packed.device).index_select(0, packed.int()).view(work)[:n]
    return (vals * gamma.to(work)).to(dtype)


@dataclass
class Ternary:
    """packed: uint8 [ceil(n/4)] (2 bits per weight); gamma: fp32 scalar; 2 + 32/n bits per param."""

    packed: torch.Tensor
    gamma: torch.Tensor
    shape: tuple[int, ...]

    def nbytes(self) -> int:
        return self.packed.numel() + 4


def quantize_ternary(w: torch.Tensor) -> Ternary:
    gamma = ternary_scale(w)
    return Ternary(pack_2bit(ternarize(w, gamma)), gamma, tuple(w.shape))


def dequantize_ternary(t: Ternary, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    n = 1
    for s in t.shape:
        n *= s
    return decode_ternary(t.packed, t.gamma, n, dtype).view(t.shape)


def quantize_activations_8bit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (last dim) absmax: s = max|x| / 127, q = round(x / s) int8 in [-127, 127] -> (q, s[..., 1])."""
    scale = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-5) / 127
    return torch.clamp(torch.round(x.float() / scale), -127, 127).to(torch.int8), scale


def dequantize_activations_8bit(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32):
    return (q.float() * scale).to(dtype)
