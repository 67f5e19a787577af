"""GGUF K-quants Q4_K and Q6_K decoded in PyTorch from the raw super-blocks (256 weights each).

Kept as the file's bytes (uint8 [rows, cols/256 * size]); every decode unpacks the scales again
(12 or 16 bytes per 256 weights) and runs the reference's arithmetic in its order, so the result is
`gguf.quants.dequantize` bit for bit (ggml's block_q4_K / block_q6_K):

    Q4_K  144 bytes: d fp16 | dmin fp16 | scales[12] (8 x (6-bit scale, 6-bit min)) | qs[128] (4-bit)
          sub-block s of 32: w = (d * sc[s]) * q - (dmin * mn[s]);  4.5 bits/weight
          byte j of the 32-byte group g holds weight j of sub-block 2g (low nibble) and of 2g+1 (high)
    Q6_K  210 bytes: ql[128] (low 4 bits) | qh[64] (high 2 bits) | scales[16] int8 | d fp16
          sub-block s of 16: w = (d * scales[s]) * (q - 32);  6.5625 bits/weight
"""

from __future__ import annotations

import torch

QK_K = 256
K_BLOCK_BYTES = {"q4_k": 144, "q6_k": 210}


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


def decode_q4_k(raw: torch.Tensor) -> torch.Tensor:
    rows = raw.shape[0]
    b = raw.reshape(-1, K_BLOCK_BYTES["q4_k"])
    n = b.shape[0]
    d, dmin = _fp16(b[:, 0:2]), _fp16(b[:, 2:4])
    sc, mn = _q4_k_scale_min(b[:, 4:16])
    scale = (d[:, None] * sc.to(torch.float32)).reshape(n, 8, 1)
    shift = (dmin[:, None] * mn.to(torch.float32)).reshape(n, 8, 1)
    qs = b[:, 16:].reshape(n, 4, 1, 32)
    q = torch.cat([qs & 15, qs >> 4], dim=2).reshape(n, 8, 32).to(torch.float32)
    return (scale * q - shift).reshape(rows, -1)


def decode_q6_k(raw: torch.Tensor) -> torch.Tensor:
    rows = raw.shape[0]
    b = raw.reshape(-1, K_BLOCK_BYTES["q6_k"])
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
    return (scale * q).reshape(rows, -1)


def decode_k(raw: torch.Tensor, fmt: str) -> torch.Tensor:
    """Raw K-quant bytes uint8 [rows, row_bytes] -> fp32 [rows, row_bytes / size * 256]."""
    return decode_q4_k(raw) if fmt == "q4_k" else decode_q6_k(raw)
