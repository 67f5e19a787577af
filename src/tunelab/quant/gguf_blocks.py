"""GGUF block formats Q4_0, Q4_1 and Q8_0 (and, kept raw, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), decoded in PyTorch from
the file's bytes.

A GGUF weight [rows, cols] is stored row by row, each row cut into blocks of 32 weights along
`cols` (the Linear's input dim), each block laid out as (ggml's block_q4_0 / block_q4_1 / block_q8_0):

    Q4_0  18 bytes:  d fp16 | qs[16]            w[j] = d * (lo(qs[j]) - 8),  w[j+16] = d * (hi(qs[j]) - 8)
    Q4_1  20 bytes:  d fp16 | m fp16 | qs[16]   w[j] = d * lo(qs[j]) + m,    w[j+16] = d * hi(qs[j]) + m
    Q8_0  34 bytes:  d fp16 | qs[32] int8       w[j] = d * qs[j]
          (lo = the low nibble, hi = the high nibble; j = 0..15)

    bits/weight: Q4_0 18*8/32 = 4.5, Q4_1 20*8/32 = 5.0, Q8_0 34*8/32 = 8.5

`split_blocks` turns the raw bytes [rows, blocks * block_bytes] into separate arrays (`GGUFBlocks`:
d [rows, blocks] fp16, m likewise for Q4_1, and the codes) holding exactly the same bytes: the
4-bit codes are re-paired so that byte k of a block holds weights (2k, 2k+1) (low nibble first),
which lets `decode` read each byte with one 256-entry table gather, as codecs.dequantize_packed does.
`decode` computes in fp32 with the reference's operation order (d * q, then + m), so it equals
`gguf.quants.dequantize` bit for bit (tests/quant/test_gguf_blocks.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunelab.quant.gguf_kquants import RAW_FORMATS, decode_raw

QK = 32  # weights per block
BLOCK_BYTES = {"q4_0": 18, "q4_1": 20, "q8_0": 34}
FORMATS = tuple(BLOCK_BYTES) + tuple(RAW_FORMATS)  # the raw-kept ones: quant/gguf_kquants.py
GGML_TYPE_NAMES = {f.upper(): f for f in FORMATS}  # gguf's type name -> ours: "Q4_K" -> "q4_k"


@dataclass
class GGUFBlocks:
    """One GGUF weight's blocks, split by field: `qs` uint8 [rows, cols/2] (4-bit: byte k = weights
    2k | 2k+1 << 4) or int8 [rows, cols] (Q8_0); `d` fp16 [rows, cols/32]; `m` fp16 [rows, cols/32]
    (Q4_1 only, else None). Bytes: rows * cols/32 * BLOCK_BYTES[fmt], the file's. The raw-kept formats
    keep the blocks in `qs` (uint8 [rows, cols / block_weights * block_bytes], gguf_kquants.RAW_FORMATS)
    and no d / m."""

    fmt: str
    qs: torch.Tensor
    d: torch.Tensor | None = None
    m: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        rows, n = self.qs.shape
        if self.fmt in RAW_FORMATS:
            f = RAW_FORMATS[self.fmt]
            return rows, n // f.block_bytes * f.block_weights
        return rows, n * (1 if self.fmt == "q8_0" else 2)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.qs, self.d, self.m) if t is not None)

    def select_rows(self, index: torch.Tensor) -> GGUFBlocks:
        """The same blocks with rows reordered (row i of the result = row index[i]): a block never
        spans two rows, so rows permute without touching a code."""
        pick = (lambda t: None if t is None else t.index_select(0, index).contiguous())
        return GGUFBlocks(self.fmt, pick(self.qs), pick(self.d), pick(self.m))


def split_blocks(raw: torch.Tensor, fmt: str) -> GGUFBlocks:
    """Raw GGUF bytes of one weight, uint8 [rows, blocks * BLOCK_BYTES[fmt]] -> GGUFBlocks."""
    if fmt not in FORMATS:
        raise ValueError(f"GGUF block format {fmt!r} is not one of {FORMATS}")
    size = BLOCK_BYTES.get(fmt) or RAW_FORMATS[fmt].block_bytes
    rows, row_bytes = raw.shape
    if row_bytes % size:
        raise ValueError(f"{fmt}: a row of {row_bytes} bytes is not whole blocks of {size}")
    if fmt in RAW_FORMATS:
        return GGUFBlocks(fmt, raw.contiguous())
    b = raw.reshape(rows, row_bytes // size, size)
    d = b[..., 0:2].contiguous().view(torch.float16).reshape(rows, -1)
    if fmt == "q8_0":
        return GGUFBlocks(fmt, b[..., 2:].contiguous().view(torch.int8).reshape(rows, -1), d)
    m = b[..., 2:4].contiguous().view(torch.float16).reshape(rows, -1) if fmt == "q4_1" else None
    qs = b[..., size - 16:]  # [rows, blocks, 16]: byte j = weight j (low nibble) | weight j+16 (high)
    codes = torch.cat([qs & 15, qs >> 4], dim=-1)  # [rows, blocks, 32]: weight order
    paired = codes[..., 0::2] | (codes[..., 1::2] << 4)  # byte k = weights 2k (low) | 2k+1 (high)
    return GGUFBlocks(fmt, paired.reshape(rows, -1).contiguous(), d, m)


_TABLES: dict[tuple[str, torch.device], torch.Tensor] = {}


def _pair_table(fmt: str, device: torch.device) -> torch.Tensor:
    """256 fp32 pairs (lo(b) - off, hi(b) - off) as float64 words; off = 8 for Q4_0, 0 for Q4_1."""
    key = (fmt, device)
    if key not in _TABLES:
        b = torch.arange(256, device=device)
        off = 8 if fmt == "q4_0" else 0
        pairs = torch.stack([(b & 15) - off, (b >> 4) - off], dim=1).to(torch.float32).contiguous()
        _TABLES[key] = pairs.view(torch.float64).view(256)
    return _TABLES[key]


def decode(blocks: GGUFBlocks) -> torch.Tensor:
    """The weights [rows, cols] in fp32: d * q (Q8_0), d * (q - 8) (Q4_0), d * q + m (Q4_1)."""
    rows, cols = blocks.shape
    if blocks.fmt in RAW_FORMATS:
        return decode_raw(blocks.qs, blocks.fmt)
    d = blocks.d.to(torch.float32).reshape(-1, 1)
    if blocks.fmt == "q8_0":
        q = blocks.qs.to(torch.float32).reshape(-1, QK)
    else:
        q = _pair_table(blocks.fmt, blocks.qs.device).index_select(0, blocks.qs.reshape(-1).int())
        q = q.view(torch.float32).view(-1, QK)
    w = q * d  # one rounding, as numpy's d * q
    if blocks.m is not None:
        w += blocks.m.to(torch.float32).reshape(-1, 1)  # then + m, rounded again
    return w.view(rows, cols)


def dequantize_raw(raw: torch.Tensor, fmt: str) -> torch.Tensor:
    """decode(split_blocks(raw, fmt)): raw uint8 [rows, row_bytes] -> fp32 [rows, row_bytes / size * 32]."""
    return decode(split_blocks(raw, fmt))
