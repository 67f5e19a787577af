"""4-bit blockwise codecs (NF4, FP4, int4) and bitsandbytes-style double quantization.

Pure tensor functions, any device. A weight tensor is flattened, cut into blocks of `blocksize`
values, and each block is scaled by its absolute maximum into [-1, 1]:

    absmax_b = max_i |w_i|            (one fp32 constant per block)
    q_i      = argmin_k |w_i / absmax_b - code[k]|     (a 4-bit index into a 16-entry code book)
    w_i'     = code[q_i] * absmax_b

Two indices share a byte, the first value in the high nibble: byte = (q_0 << 4) | q_1.

NF4 and FP4 code books, the rounding rule and the packed layout are identical to bitsandbytes'
`quantize_4bit(A, blocksize=64, quant_type="nf4"|"fp4")` (tests compare bytes), so either
backend reads the other's weights. Double quantization (QLoRA, `compress_statistics=True`) stores
the fp32 absmax constants as 8-bit codes of bitsandbytes' dynamic map, in blocks of 256, after
subtracting their mean:

    bits/param = 4 + 32/64                        = 4.5      (plain)
               = 4 + 8/64 + 32/(64*256)           ≈ 4.127    (double-quantized, + one fp32 offset)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

FORMATS_4BIT = ("nf4", "fp4", "int4")
DQ_BLOCKSIZE = 256  # absmax constants are double-quantized in blocks of 256 (bitsandbytes' choice)

# NF4: quantiles of N(0, 1), normalized to [-1, 1] (QLoRA appendix; bitsandbytes' table, sorted).
_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]
# FP4 (1 sign, 2 exponent, 1 mantissa bit, bias 2) in bit-pattern order, then divided by 12:
# 0b0000 = 0, 0b0001 = 0.0625, 0b0010 = 8, ..., 0b1xxx = the negatives.
_FP4 = [0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0]
# int4 symmetric: index k holds (k - 8) / 7, so levels -7..7 are used and -8 never is.
_INT4 = [float(k - 8) for k in range(16)]


def code_book(fmt: str) -> torch.Tensor:
    """The 16 fp32 values a 4-bit index decodes to (index order = bit pattern), max |value| = 1."""
    if fmt == "nf4":
        data = torch.tensor(_NF4, dtype=torch.float32)
    elif fmt == "fp4":
        data = torch.tensor(_FP4, dtype=torch.float32)
        data = data / data.abs().max()  # / 12, exactly as bitsandbytes' get_4bit_type
    elif fmt == "int4":
        data = torch.tensor(_INT4, dtype=torch.float32) / 7.0
    else:
        raise ValueError(f"unknown 4-bit format {fmt!r}; one of {FORMATS_4BIT}")
    return data


def _bounds_and_order(fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoints between sorted code values, and the sorted -> bit-pattern index map."""
    code = code_book(fmt)
    order = torch.argsort(code)  # identity for nf4 and int4; fp4 is not sorted by bit pattern
    midpoints = (code[order[:-1]] + code[order[1:]]) / 2
    return midpoints, order


def dynamic_map() -> torch.Tensor:
    """A fresh copy of `_dynamic_map()` (safe to modify)."""
    return _dynamic_map().clone()


@lru_cache(maxsize=None)
def _dynamic_map() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic code: 256 sorted values in [-0.993, 1] (`create_dynamic_map()`).

    Dynamic exponent + fraction: for exponent i = 0..6 there are 2**i fraction steps at scale
    10**(i-6), both signs (2 * (1 + 2 + ... + 64) = 254 values), plus 0 and 1.
    """
    data: list[float] = []
    for i in range(7):  # max_exponent_bits = 7, total_bits = 8, signed
        fraction_items = 2 ** i + 1
        bounds = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist()
        data += (-(10 ** (-6 + i)) * means).tolist()
    data += [0.0, 1.0]  # 2 * (1 + 2 + ... + 64) + 2 = 256 values
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def quantize_blockwise_8bit(x: torch.Tensor, blocksize: int = DQ_BLOCKSIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax 8-bit quantization onto `dynamic_map()` -> (codes uint8 [n], absmax fp32 [blocks]).

    Exact nearest code to v = x / absmax (ties go to the lower code). bitsandbytes' CPU kernel
    uses an approximate search whose decision points sit slightly off the midpoints, so a few codes
    can differ from its by one step (how often: docs/quantization.md, "bitsandbytes compatibility");
    the format and decoding are the same, so either side decodes the other's constants exactly.
    """
    code = _dynamic_map().to(x.device)
    flat = x.detach().reshape(-1).float()
    n = flat.numel()
    nblocks = -(-n // blocksize)  # ceil(n / blocksize)
    padded = torch.nn.functional.pad(flat, (0, nblocks * blocksize - n)).view(nblocks, blocksize)
    absmax = padded.abs().amax(dim=1)
    normed = (padded / absmax[:, None]).reshape(-1)[:n]
    left = (torch.searchsorted(code, normed, right=True) - 1).clamp(0, 255)
    right = (left + 1).clamp(max=255)
    closer = (normed - code[right]).abs() < (normed - code[left]).abs()
    return torch.where(closer, right, left).to(torch.uint8), absmax


def dequantize_blockwise_8bit(codes: torch.Tensor, absmax: torch.Tensor, blocksize: int = DQ_BLOCKSIZE) -> torch.Tensor:
    """Inverse of `quantize_blockwise_8bit`: code[q] * absmax[block], fp32, flat."""
    code = _dynamic_map().to(codes.device)
    n = codes.numel()
    nblocks = absmax.numel()
    vals = torch.nn.functional.pad(code[codes.long()], (0, nblocks * blocksize - n)).view(nblocks, blocksize)
    return (vals * absmax[:, None]).reshape(-1)[:n]


@dataclass
class Packed4bit:
    """A 4-bit blockwise-quantized tensor.

    packed: uint8 [ceil(n/2)], two indices per byte (first value in the high nibble).
    absmax: fp32 [blocks], or uint8 [blocks] when double-quantized (then `absmax_scale` fp32
            [ceil(blocks/256)] and `absmax_offset` fp32 scalar decode it: dyn[q] * scale + offset).
    """

    packed: torch.Tensor
    absmax: torch.Tensor
    shape: tuple[int, ...]
    fmt: str
    blocksize: int
    absmax_scale: torch.Tensor | None = None
    absmax_offset: torch.Tensor | None = None

    @property
    def double_quant(self) -> bool:
        return self.absmax_scale is not None

    def block_absmax(self) -> torch.Tensor:
        """fp32 absmax per block (decoding the double quantization if present)."""
        if not self.double_quant:
            return self.absmax
        return dequantize_blockwise_8bit(self.absmax, self.absmax_scale) + self.absmax_offset

    def nbytes(self) -> int:
        """Bytes of packed codes + constants."""
        extra = [self.absmax_scale, self.absmax_offset] if self.double_quant else []
        return sum(t.numel() * t.element_size() for t in [self.packed, self.absmax, *extra])


def quantize_4bit(x: torch.Tensor, fmt: str = "nf4", blocksize: int = 64, double_quant: bool = False) -> Packed4bit:
    """Blockwise absmax 4-bit quantization (see module docstring). Same arithmetic as bitsandbytes'
    reference kernel: scaled = clamp(x * (1 / absmax), -1, 1), then bucketize on code midpoints."""
    if fmt not in FORMATS_4BIT:
        raise ValueError(f"unknown 4-bit format {fmt!r}; one of {FORMATS_4BIT}")
    if blocksize <= 0 or blocksize % 2:
        raise ValueError(f"blocksize must be a positive even number, got {blocksize}")
    bounds, order = _bounds_and_order(fmt)
    bounds, order = bounds.to(x.device), order.to(x.device)
    flat = x.detach().reshape(-1).float()
    n = flat.numel()
    rem = n % blocksize
    full = n - rem
    blocks = flat[:full].view(-1, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if rem:  # a last, shorter block
        am = flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, am.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / am, -1, 1)])
    if scaled.numel() % 2:
        scaled = torch.nn.functional.pad(scaled, (0, 1))
    q = torch.bucketize(scaled, bounds, out_int32=True)
    if fmt == "fp4":
        q = order[q]
    q8 = q.to(torch.uint8)
    packed = (q8[::2] << 4) | q8[1::2]
    out = Packed4bit(packed=packed, absmax=absmax, shape=tuple(x.shape), fmt=fmt, blocksize=blocksize)
    if double_quant:
        offset = absmax.mean()
        out.absmax, out.absmax_scale = quantize_blockwise_8bit(absmax - offset, DQ_BLOCKSIZE)
        out.absmax_offset = offset
    return out


@lru_cache(maxsize=None)
def pair_table(fmt: str, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """256-entry decode table: entry b holds (code[b >> 4], code[b & 15]) as one 2-element word
    (fp32 pair -> float64 view, bf16/fp16 pair -> int32 view), so one gather decodes a byte.
    Cached per (fmt, dtype, device): treat the result as read-only."""
    code = code_book(fmt).to(device=device, dtype=dtype)
    pairs = torch.stack([code.repeat_interleave(16), code.repeat(16)], dim=1).contiguous()  # [256, 2]
    word = {4: torch.float64, 2: torch.int32}[pairs.element_size()]
    return pairs.view(word).view(256)


def dequantize_packed(packed: torch.Tensor, absmax: torch.Tensor, table: torch.Tensor, n: int, blocksize: int,
                      dtype: torch.dtype) -> torch.Tensor:
    """Fast decode: one `index_select` of 256-entry pair words per byte, then one multiply per block.

    Cost per weight: 0.5 byte read + one table gather + one multiply (no Python loops).
    `table` is `pair_table(fmt, dtype)`; with dtype bf16 the product code * absmax is rounded in bf16.
    Memory: the int32 index (2 bytes a weight) is freed before the multiply, which runs in place of the
    gathered values, so at most 2 + 4 bytes a weight are alive in fp32 (2 + 2 in bf16), not 2 + 4 + 4.
    """
    idx = packed.int()
    vals = table.index_select(0, idx).view(dtype)  # [2 * bytes], a new tensor (the table is not touched)
    del idx
    nblocks = absmax.numel()
    if nblocks * blocksize != vals.numel():  # odd n or n % blocksize != 0: pad the last block
        vals = torch.nn.functional.pad(vals[:n], (0, nblocks * blocksize - n))
    return vals.view(nblocks, blocksize).mul_(absmax.to(dtype).view(-1, 1)).view(-1)[:n]


def dequantize_4bit(q: Packed4bit, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """code[q] * absmax in fp32 (as bitsandbytes), then cast to `dtype`; returns q.shape."""
    n = 1
    for s in q.shape:
        n *= s
    table = pair_table(q.fmt, torch.float32, q.packed.device)
    w = dequantize_packed(q.packed, q.block_absmax(), table, n, q.blocksize, torch.float32)
    return w.view(q.shape).to(dtype)


def bits_per_param(fmt: str, blocksize: int = 64, double_quant: bool = False,
                   dq_blocksize: int = DQ_BLOCKSIZE) -> float:
    """Storage cost per weight, constants included (large-tensor limit, ignores the one offset).

    nf4/fp4/int4: 4 + 32/blocksize (= 4.5 at 64); with double quant 4 + 8/blocksize + 32/(blocksize*256)
    (= 4 + 0.125 + 0.00195 = 4.127 at 64).
    """
    if fmt not in FORMATS_4BIT:
        raise ValueError(f"unknown 4-bit format {fmt!r}")
    if double_quant:
        return 4 + 8 / blocksize + 32 / (blocksize * dq_blocksize)
    return 4 + 32 / blocksize
