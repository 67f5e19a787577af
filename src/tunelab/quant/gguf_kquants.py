"""GGUF formats kept as the file's bytes and decoded from them: the K-quants Q4_K, Q6_K, Q5_K and the 5-bit
Q5_0, Q5_1 (ggml's block_q4_K / block_q6_K / block_q5_K / block_q5_0 / block_q5_1).

Kept as uint8 [rows, cols / block_weights * block_bytes]; every decode unpacks the scales again and runs
the reference's arithmetic in its order, so the result is `gguf.quants.dequantize` bit for bit:

    Q4_K  144 bytes / 256: d fp16 | dmin fp16 | scales[12] (8 x (6-bit scale, 6-bit min)) | qs[128] (4-bit)
          sub-block s of 32: w = (d * sc[s]) * q - (dmin * mn[s]);  4.5 bits/weight
          byte j of the 32-byte group g holds weight j of sub-block 2g (low nibble) and of 2g+1 (high)
    Q5_K  176 bytes / 256: Q4_K's d | dmin | scales[12], then qh[32] (bit s of byte j = 5th bit of weight j
          of sub-block s) | qs[128];  q = nibble | bit << 4;  w = (d * sc[s]) * q - (dmin * mn[s]);  5.5 bits/weight
    Q6_K  210 bytes / 256: ql[128] (low 4 bits) | qh[64] (high 2 bits) | scales[16] int8 | d fp16
          sub-block s of 16: w = (d * scales[s]) * (q - 32);  6.5625 bits/weight
    Q5_0   22 bytes / 32:  d fp16 | qh u32 | qs[16];  q[j] = lo(qs[j]) | bit j of qh << 4,
          q[j+16] = hi(qs[j]) | bit j+16 of qh << 4;  w = d * (q - 16);  5.5 bits/weight
    Q5_1   24 bytes / 32:  d fp16 | m fp16 | qh u32 | qs[16];  q as Q5_0;  w = d * q + m;  6 bits/weight
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

QK_K = 256


def _fp16(b: torch.Tensor) -> torch.Tensor:
    """[..., 2] uint8 -> [...] fp32 (little-endian fp16)."""
    return b.contiguous().view(torch.float16).squeeze(-1).to(torch.float32)


def _q4_k_scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, 12] uint8 -> (sc [n, 8], mn [n, 8]): bytes 0-3 low 6 bits = sc 0-3, bytes 4-7 = mn 0-3;
    sc 4-7 = bytes 8-11 low nibble | (bytes 0-3 >> 2) & 0x30; mn 4-7 = bytes 8-11 >> 4 | (bytes 4-7 >> 2) & 0x30."""
    s = scales.reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def _nibbles(qs: torch.Tensor, n: int) -> torch.Tensor:
    """[n, 128] uint8 -> [n, 8, 32]: group g of 32 bytes gives sub-block 2g (low nibbles), 2g+1 (high)."""
    qs = qs.reshape(n, 4, 1, 32)
    return torch.cat([qs & 15, qs >> 4], dim=2).reshape(n, 8, 32)


def decode_q4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin = _fp16(b[:, 0:2]), _fp16(b[:, 2:4])
    sc, mn = _q4_k_scale_min(b[:, 4:16])
    scale = (d[:, None] * sc.to(torch.float32)).reshape(n, 8, 1)
    shift = (dmin[:, None] * mn.to(torch.float32)).reshape(n, 8, 1)
    return scale * _nibbles(b[:, 16:], n).to(torch.float32) - shift


def decode_q5_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    d, dmin = _fp16(b[:, 0:2]), _fp16(b[:, 2:4])
    sc, mn = _q4_k_scale_min(b[:, 4:16])
    scale = (d[:, None] * sc.to(torch.float32)).reshape(n, 8, 1)
    shift = (dmin[:, None] * mn.to(torch.float32)).reshape(n, 8, 1)
    qh = b[:, 16:48].reshape(n, 1, 32)
    bits = torch.cat([(qh >> s) & 1 for s in range(8)], dim=1)  # [n, 8 sub-blocks, 32]
    q = _nibbles(b[:, 48:], n) | (bits << 4)
    return scale * q.to(torch.float32) - shift


def decode_q6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    ql, qh = b[:, :128], b[:, 128:192]
    scales = b[:, 192:208].contiguous().view(torch.int8).to(torch.float32)
    d = _fp16(b[:, 208:210])
    scale = (d[:, None] * scales).reshape(n, 16, 1)
    lo = ql.reshape(n, 2, 1, 64)
    lo = torch.cat([lo & 15, lo >> 4], dim=2).reshape(n, 8, 32)  # [n, 2 halves x 2 nibbles x 2 x 32]
    hi = qh.reshape(n, 2, 1, 32)
    hi = torch.cat([(hi >> s) & 3 for s in (0, 2, 4, 6)], dim=2).reshape(n, 8, 32)
    q = ((lo | (hi << 4)).to(torch.int16) - 32).reshape(n, 16, 16).to(torch.float32)
    return scale * q


def _q5_codes(qh: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    """qh [n, 4] uint8 (a little-endian u32), qs [n, 16] -> the 5-bit codes [n, 32] (0..31)."""
    n = qs.shape[0]
    high = qh.reshape(n, 4, 1) >> torch.arange(8, dtype=torch.uint8, device=qh.device)  # bit k of byte i
    high = (high & 1).reshape(n, 32)  # bit j of the u32 -> weight j
    low = torch.cat([qs & 15, qs >> 4], dim=1)  # weights 0..15 low nibbles, 16..31 high nibbles
    return low | (high << 4)


def decode_q5_0(b: torch.Tensor) -> torch.Tensor:
    d = _fp16(b[:, 0:2])
    q = (_q5_codes(b[:, 2:6], b[:, 6:22]).to(torch.int16) - 16).to(torch.float32)
    return d[:, None] * q


def decode_q5_1(b: torch.Tensor) -> torch.Tensor:
    d, m = _fp16(b[:, 0:2]), _fp16(b[:, 2:4])
    return d[:, None] * _q5_codes(b[:, 4:8], b[:, 8:24]).to(torch.float32) + m[:, None]


@dataclass(frozen=True)
class RawFormat:
    """A format kept as raw blocks: `block_bytes` per `block_weights` weights (along a row), `decode`
    maps blocks uint8 [n, block_bytes] to their weights fp32 (any shape of n * block_weights)."""

    block_bytes: int
    block_weights: int
    decode: Callable[[torch.Tensor], torch.Tensor]


RAW_FORMATS: dict[str, RawFormat] = {
    "q4_k": RawFormat(144, QK_K, decode_q4_k),
    "q5_k": RawFormat(176, QK_K, decode_q5_k),
    "q6_k": RawFormat(210, QK_K, decode_q6_k),
    "q5_0": RawFormat(22, 32, decode_q5_0),
    "q5_1": RawFormat(24, 32, decode_q5_1),
}
K_BLOCK_BYTES = {k: f.block_bytes for k, f in RAW_FORMATS.items()}  # bytes per block of each raw-kept format


def decode_raw(raw: torch.Tensor, fmt: str) -> torch.Tensor:
    """Raw blocks uint8 [rows, row_bytes] -> fp32 [rows, row_bytes / block_bytes * block_weights]."""
    f = RAW_FORMATS[fmt]
    return f.decode(raw.reshape(-1, f.block_bytes)).reshape(raw.shape[0], -1)
