"""K-quant ENCODERS: fp32 weights -> GGUF Q4_K / Q5_K / Q6_K blocks, as llama.cpp's reference quantizers
write them (ggml-quants.c: `quantize_row_q4_K_ref`, `quantize_row_q5_K_ref`, `quantize_row_q6_K_ref`, what
llama-quantize runs without an importance matrix). The decoders are quant/gguf_kquants.py.

Vectorised over super-blocks of 256 weights (numpy, float32), with the C arithmetic in its order, so the bytes
are the C's bit for bit where the C is deterministic (an x86-64 build: no fused multiply-add):

  * every sum is accumulated left to right in float32 (`_sum`, never numpy's pairwise sum);
  * `nearest_int(v)` is the C's magic-number rounding, (bits(v + 1.5 * 2^23) & 0x7fffff) - 0x400000, i.e.
    round half to even for |v| < 2^22 and the same garbage beyond;
  * fp16 stores round to nearest even (GGML_FP32_TO_FP16).

Q4_K / Q5_K (8 sub-blocks of 32, affine):  w ~= d * sc[s] * q - dmin * mn[s],  q in 0..15 / 0..31
    per sub-block, `make_qkx2_quants` fits (scale, min <= 0) by weighted least squares, weights
    av_x + |x| (av_x = rms of the sub-block), over iscale = (rmin + rdelta * is + nmax) / (max - min),
    is = 0..nstep (Q4_K: -1, 0.1, 20; Q5_K: -0.5, 0.1, 15), keeping the lowest weighted squared error;
    the 8 scales and 8 mins are then quantized to 6 bits against d = max scale / 63, dmin = max min / 63,
    and every weight is rounded again with the stored scales: q = nearest_int((x + dmin * mn) / (d * sc)).
Q6_K (16 sub-blocks of 16, symmetric):  w ~= d * sc[s] * (q - 32),  q in 0..63
    per sub-block, `make_qx_quants(nmax 32, rmse_type 1)` picks the scale among -(32 + 0.1 is) / max,
    is = -9..9, maximising (sum w x l)^2 / sum w l^2 with w = x^2; scales to int8 against d = -max / 128,
    then q = nearest_int(x / (d * sc)) + 32.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

QK_K = 256
F32 = np.float32
GROUP_MAX_EPS = F32(1e-15)
_MAGIC = F32(12582912.0)  # 1.5 * 2^23


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int on float32 `v`: int32 (round half to even for |v| <= 4194303)."""
    with np.errstate(invalid="ignore", over="ignore"):
        bits = (np.asarray(v, dtype=F32) + _MAGIC).view(np.int32)
    return (bits & 0x007FFFFF) - 0x00400000


def _sum(a: np.ndarray) -> np.ndarray:
    """Column sums of a [n, B], row 0 first, in float32 (the C loop's order; a is laid out [element, block])."""
    total = a[0].astype(F32, copy=True)
    for row in a[1:]:
        total += row
    return total


def _fp16_bytes(v: np.ndarray) -> np.ndarray:
    """float32 [n] -> [n, 2] uint8 of the fp16 (round to nearest even)."""
    with np.errstate(over="ignore"):
        return v.astype(np.float16).view(np.uint8).reshape(-1, 2)


def make_qkx2_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
                     nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's make_qkx2_quants (use_mad false) on every row of x [B, n] with weights w [B, n]:
    (scale [B], the_min [B] = -min >= 0, L [B, n] int32 in 0..nmax) with x ~= scale * L - the_min.
    Computed on the transposes [n, B] so each of the C's per-element steps is one vector operation."""
    x, w = np.ascontiguousarray(x.T, dtype=F32), np.ascontiguousarray(w.T, dtype=F32)
    mn, mx = x.min(axis=0), x.max(axis=0)
    sum_w, sum_x = _sum(w), _sum(w * x)
    mn = np.where(mn > 0, F32(0), mn)
    flat = mx == mn
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(nmax) / (mx - mn)
        scale = F32(1) / iscale
        L = np.clip(nearest_int(iscale * (x - mn)), 0, nmax)
        diff = (scale * L.astype(F32) + mn) - x
        best = _sum(w * (diff * diff))
        for step in range(nstep + 1):
            iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / (mx - mn)  # mn: the best fit so far
            la = np.clip(nearest_int(iscale * (x - mn)), 0, nmax)
            lf = la.astype(F32)
            wl = w * lf
            sum_l, sum_l2, sum_xl = _sum(wl), _sum(wl * lf), _sum(wl * x)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = this_min > 0
            this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
            this_min = np.where(pos, F32(0), this_min)
            diff = (this_scale * lf + this_min) - x
            cur = _sum(w * (diff * diff))
            better = (D > 0) & (cur < best) & ~flat
            L = np.where(better, la, L)
            best = np.where(better, cur, best)
            scale = np.where(better, this_scale, scale)
            mn = np.where(better, this_min, mn)
    L = np.where(flat, 0, L)
    scale = np.where(flat, F32(0), scale).astype(F32)
    return scale, (-mn).astype(F32), np.ascontiguousarray(L.T)


def make_qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's make_qx_quants with rmse_type 1 and no importance weights (w = x^2) on every row of x [B, n]:
    (scale [B], L [B, n] int32 in 0..2 nmax - 1) with x ~= scale * (L - nmax). Computed on x's transpose."""
    x = np.ascontiguousarray(x.T, dtype=F32)
    ax = np.abs(x)
    first = ax.argmax(axis=0)  # the C keeps the first index of the largest |x|
    amax = np.take_along_axis(ax, first[None], 0)[0]
    mx = np.take_along_axis(x, first[None], 0)[0]
    zero = amax < GROUP_MAX_EPS
    w = x * x
    wx = w * x

    def fit(iscale):
        lv = np.clip(nearest_int(iscale * x), -nmax, nmax - 1)
        lf = lv.astype(F32)
        return lv, _sum(wx * lf), _sum((w * lf) * lf)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lv, sumlx, suml2 = fit(F32(-nmax) / mx)
        L = lv + nmax
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            lv, sumlx, suml2 = fit(-(F32(nmax) + F32(0.1) * F32(step)) / mx)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(better, lv + nmax, L)
            scale = np.where(better, sumlx / suml2, scale)
            best = np.where(better, scale * sumlx, best)
    return np.where(zero, F32(0), scale).astype(F32), np.ascontiguousarray(np.where(zero, 0, L).T)


def _scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The 12 scale bytes of Q4_K / Q5_K from the 6-bit scales ls and mins lm [nb, 8]:
    bytes 0-3 = ls[0:4] | (ls[4:8] >> 4) << 6, bytes 4-7 = lm[0:4] | (lm[4:8] >> 4) << 6,
    bytes 8-11 = (ls[4:8] & 15) | (lm[4:8] & 15) << 4."""
    return np.concatenate([ls[:, :4] | ((ls[:, 4:] >> 4) << 6), lm[:, :4] | ((lm[:, 4:] >> 4) << 6),
                           (ls[:, 4:] & 15) | ((lm[:, 4:] & 15) << 4)], axis=1).astype(np.uint8)


def _affine_k(x: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """The shared part of Q4_K and Q5_K on x [nb, 256]: (d fp16 bytes, dmin fp16 bytes, 12 scale bytes,
    L [nb, 256] in 0..nmax)."""
    nb = x.shape[0]
    xs = x.reshape(nb * 8, 32)
    av_x = np.sqrt(_sum(np.ascontiguousarray(xs.T) ** 2) / F32(32))
    scales, mins, L = make_qkx2_quants(xs, av_x[:, None] + np.abs(xs), nmax, rmin, rdelta, nstep)
    scales, mins, L = scales.reshape(nb, 8), mins.reshape(nb, 8), L.reshape(nb, 8, 32)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0)).astype(F32)
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0)).astype(F32)
    ls = np.minimum(nearest_int(inv_scale[:, None] * scales) & 0xFF, 63)  # uint8_t = nearest_int(...)
    lm = np.minimum(nearest_int(inv_min[:, None] * mins) & 0xFF, 63)
    d16, dmin16 = (max_scale / F32(63)).astype(np.float16), (max_min / F32(63)).astype(np.float16)
    d = d16.astype(F32)[:, None] * ls.astype(F32)  # [nb, 8]
    dm = dmin16.astype(F32)[:, None] * lm.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(nearest_int((x.reshape(nb, 8, 32) + dm[..., None]) / d[..., None]), 0, nmax)
    L = np.where((d == 0)[..., None], L, q)  # a zero scale keeps make_qkx2_quants' L (the C's `continue`)
    return _fp16_bytes(d16), _fp16_bytes(dmin16), _scales_k4(ls, lm), L.reshape(nb, QK_K)


def encode_q4_k(x: np.ndarray) -> np.ndarray:
    """x float32 [nb, 256] -> Q4_K blocks uint8 [nb, 144]: d | dmin | scales[12] | qs[128], where byte l of
    the 32-byte group g holds weight l of sub-block 2g (low nibble) and of 2g+1 (high nibble)."""
    d, dmin, sc, L = _affine_k(np.asarray(x, dtype=F32), 15, -1.0, 0.1, 20)
    L = L.reshape(-1, 4, 2, 32)
    qs = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(-1, 128)
    return np.concatenate([d, dmin, sc, qs.astype(np.uint8)], axis=1)


def encode_q5_k(x: np.ndarray) -> np.ndarray:
    """x float32 [nb, 256] -> Q5_K blocks uint8 [nb, 176]: d | dmin | scales[12] | qh[32] | qs[128];
    bit s of qh[l] = the 5th bit of weight l of sub-block s, qs as Q4_K's with the low 4 bits."""
    d, dmin, sc, L = _affine_k(np.asarray(x, dtype=F32), 31, -0.5, 0.1, 15)
    L = L.reshape(-1, 8, 32)
    qh = ((L >> 4) << np.arange(8, dtype=np.int32)[None, :, None]).sum(axis=1)
    lo = (L & 15).reshape(-1, 4, 2, 32)
    qs = (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(-1, 128)
    return np.concatenate([d, dmin, sc, qh.astype(np.uint8), qs.astype(np.uint8)], axis=1)


def encode_q6_k(x: np.ndarray) -> np.ndarray:
    """x float32 [nb, 256] -> Q6_K blocks uint8 [nb, 210]: ql[128] | qh[64] | scales[16] int8 | d.
    Per 128-weight half h, l = 0..31: ql[64h + l] = q[l] & 15 | (q[l + 64] & 15) << 4, ql[64h + 32 + l] =
    q[l + 32] & 15 | (q[l + 96] & 15) << 4, qh[32h + l] = the high 2 bits of q[l], q[l+32], q[l+64], q[l+96]."""
    x = np.asarray(x, dtype=F32)
    nb = x.shape[0]
    scales, L = make_qx_quants(x.reshape(nb * 16, 16), 32)
    scales, L = scales.reshape(nb, 16), L.reshape(nb, 16, 16)
    first = np.abs(scales).argmax(axis=1)
    max_scale = np.take_along_axis(scales, first[:, None], 1)[:, 0]
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(-128) / max_scale
        d16 = (F32(1) / iscale).astype(np.float16)
        sc = ((np.minimum(nearest_int(iscale[:, None] * scales), 127) & 0xFF).astype(np.uint8)).view(np.int8)
        dd = d16.astype(F32)[:, None] * sc.astype(F32)
        q = np.clip(nearest_int(x.reshape(nb, 16, 16) / dd[..., None]), -32, 31) + 32
    L = np.where((dd == 0)[..., None], L, q).reshape(nb, 2, 4, 32)  # [block, half, quarter, l]
    lo, hi = L & 15, L >> 4
    ql = np.stack([lo[:, :, 0] | (lo[:, :, 2] << 4), lo[:, :, 1] | (lo[:, :, 3] << 4)], axis=2).reshape(nb, 128)
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(nb, 64)
    out = np.concatenate([ql.astype(np.uint8), qh.astype(np.uint8), sc.view(np.uint8), _fp16_bytes(d16)], axis=1)
    out[zero] = 0  # an all-zero super-block is written as 210 zero bytes
    return out


ENCODERS: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    "q4_k": (144, encode_q4_k),
    "q5_k": (176, encode_q5_k),
    "q6_k": (210, encode_q6_k),
}


def encode(w: np.ndarray, fmt: str, chunk_weights: int = 1 << 17) -> np.ndarray:
    """A weight [..., cols] (cols a multiple of 256) -> its GGUF bytes uint8 [..., cols / 256 * block_bytes]
    in `fmt` (q4_k | q5_k | q6_k), encoded about `chunk_weights` weights at a time (whole rows): the
    temporaries stay in cache, which makes it about twice as fast as one pass over a large matrix."""
    size, fn = ENCODERS[fmt]
    w = np.asarray(w, dtype=F32)
    if w.shape[-1] % QK_K:
        raise ValueError(f"{fmt}: a row of {w.shape[-1]} weights is not whole super-blocks of {QK_K}")
    rows = w.reshape(-1, w.shape[-1])
    rows_per_chunk = max(1, chunk_weights // max(1, rows.shape[1]))
    out = np.empty((rows.shape[0], rows.shape[1] // QK_K * size), dtype=np.uint8)
    for i in range(0, rows.shape[0], rows_per_chunk):
        part = rows[i:i + rows_per_chunk]
        out[i:i + len(part)] = fn(part.reshape(-1, QK_K)).reshape(len(part), -1)
    return out.reshape(*w.shape[:-1], -1)
