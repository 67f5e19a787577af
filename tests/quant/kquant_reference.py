"""A scalar transliteration of ggml-quants.c's reference K-quant quantizers (quantize_row_q4_K_ref, _q5_K_ref,
_q6_K_ref with make_qkx2_quants / make_qx_quants), one weight at a time in float32 numpy scalars, to check
the vectorised encoders of tunelab.quant.kquant_encode against. Slow (tens of ms per super-block): small inputs.

Every C `float` operation is one np.float32 operation here, in the C's order; `int` stays a Python int.
"""

from __future__ import annotations

import struct

import numpy as np

f = np.float32


def nearest_int(v) -> int:
    bits = struct.unpack("<i", struct.pack("<f", float(f(v) + f(12582912.0))))[0]
    return (bits & 0x007FFFFF) - 0x00400000


def fp16(v) -> int:
    return int(np.array([v], dtype=np.float32).astype(np.float16).view(np.uint16)[0])


def from_fp16(h: int):
    return f(np.array([h], dtype=np.uint16).view(np.float16)[0])


def make_qkx2_quants(n, nmax, x, weights, rmin, rdelta, nstep):
    """-> (scale, the_min, L)"""
    mn = x[0]
    mx = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        w = weights[i]
        sum_w = sum_w + w
        sum_x = sum_x + w * x[i]
    if mn > 0:
        mn = f(0)
    if mx == mn:
        return f(0), -mn, [0] * n
    iscale = f(nmax) / (mx - mn)
    scale = f(1) / iscale
    best_error = f(0)
    L = [0] * n
    for i in range(n):
        L[i] = max(0, min(nmax, nearest_int(iscale * (x[i] - mn))))
        diff = scale * f(L[i]) + mn - x[i]
        best_error = best_error + weights[i] * (diff * diff)
    for step in range(nstep + 1):
        iscale = (f(rmin) + f(rdelta) * f(step) + f(nmax)) / (mx - mn)
        sum_l = sum_l2 = sum_xl = f(0)
        Laux = [0] * n
        for i in range(n):
            lv = max(0, min(nmax, nearest_int(iscale * (x[i] - mn))))
            Laux[i] = lv
            w = weights[i]
            sum_l = sum_l + w * f(lv)
            sum_l2 = sum_l2 + w * f(lv) * f(lv)
            sum_xl = sum_xl + w * f(lv) * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = f(0)
                this_scale = sum_xl / sum_l2
            cur_error = f(0)
            for i in range(n):
                diff = this_scale * f(Laux[i]) + this_min - x[i]
                cur_error = cur_error + weights[i] * (diff * diff)
            if cur_error < best_error:
                L = list(Laux)
                best_error, scale, mn = cur_error, this_scale, this_min
    return scale, -mn, L


def make_qx_quants(n, nmax, x):
    """rmse_type 1, no quant weights -> (scale, L)"""
    mx = amax = f(0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax, mx = ax, x[i]
    if amax < f(1e-15):
        return f(0), [0] * n

    def fit(iscale):
        sumlx = suml2 = f(0)
        ls = []
        for i in range(n):
            lv = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
            ls.append(lv + nmax)
            w = x[i] * x[i]
            sumlx = sumlx + w * x[i] * f(lv)
            suml2 = suml2 + w * f(lv) * f(lv)
        return ls, sumlx, suml2

    L, sumlx, suml2 = fit(f(-nmax) / mx)
    scale = sumlx / suml2 if suml2 != 0 else f(0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        ls, sumlx, suml2 = fit(-(f(nmax) + f(0.1) * f(step)) / mx)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            L, scale = ls, sumlx / suml2
            best = scale * sumlx
    return scale, L


def _affine_block(x, nmax, rmin, rdelta, nstep):
    """Q4_K / Q5_K's common part on one super-block: (d, dmin, 12 scale bytes, L[256])."""
    scales, mins, L = [], [], []
    for j in range(8):
        xs = x[32 * j:32 * j + 32]
        sum_x2 = f(0)
        for v in xs:
            sum_x2 = sum_x2 + v * v
        av_x = np.sqrt(sum_x2 / f(32))
        weights = [av_x + abs(v) for v in xs]
        s, m, lj = make_qkx2_quants(32, nmax, xs, weights, rmin, rdelta, nstep)
        scales.append(s)
        mins.append(m)
        L += lj
    max_scale, max_min = f(0), f(0)
    for s, m in zip(scales, mins):
        max_scale = s if s > max_scale else max_scale
        max_min = m if m > max_min else max_min
    inv_scale = f(63) / max_scale if max_scale > 0 else f(0)
    inv_min = f(63) / max_min if max_min > 0 else f(0)
    sb = [0] * 12
    ls_all, lm_all = [], []
    for j in range(8):
        ls = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
        lm = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
        ls_all.append(ls)
        lm_all.append(lm)
        if j < 4:
            sb[j], sb[j + 4] = ls, lm
        else:
            sb[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
            sb[j - 4] |= (ls >> 4) << 6
            sb[j] |= (lm >> 4) << 6
    d, dmin = fp16(max_scale / f(63)), fp16(max_min / f(63))
    for j in range(8):
        dd = from_fp16(d) * f(ls_all[j])
        if dd == 0:
            continue
        dm = from_fp16(dmin) * f(lm_all[j])
        for ii in range(32):
            L[32 * j + ii] = max(0, min(nmax, nearest_int((x[32 * j + ii] + dm) / dd)))
    return d, dmin, sb, L


def q4_k_block(x) -> bytes:
    d, dmin, sb, L = _affine_block(x, 15, -1.0, 0.1, 20)
    qs = [L[j + l] | (L[j + l + 32] << 4) for j in range(0, 256, 64) for l in range(32)]
    return struct.pack("<HH", d, dmin) + bytes(sb) + bytes(qs)


def q5_k_block(x) -> bytes:
    d, dmin, sb, L = _affine_block(x, 31, -0.5, 0.1, 15)
    qh, ql = [0] * 32, []
    m1, m2 = 1, 2
    for n in range(0, 256, 64):
        for j in range(32):
            l1, l2 = L[n + j], L[n + j + 32]
            if l1 > 15:
                l1 -= 16
                qh[j] |= m1
            if l2 > 15:
                l2 -= 16
                qh[j] |= m2
            ql.append(l1 | (l2 << 4))
        m1, m2 = m1 << 2, m2 << 2
    return struct.pack("<HH", d, dmin) + bytes(sb) + bytes(qh) + bytes(ql)


def q6_k_block(x) -> bytes:
    scales, L = [], []
    max_scale = max_abs = f(0)
    for ib in range(16):
        s, lj = make_qx_quants(16, 32, x[16 * ib:16 * ib + 16])
        scales.append(s)
        L += lj
        if abs(s) > max_abs:
            max_abs, max_scale = abs(s), s
    if max_abs < f(1e-15):
        return bytes(210)
    iscale = f(-128) / max_scale
    d = fp16(f(1) / iscale)
    sc = [min(127, nearest_int(iscale * s)) for s in scales]
    for j in range(16):
        dd = from_fp16(d) * f(sc[j])
        if dd == 0:
            continue
        for ii in range(16):
            L[16 * j + ii] = max(-32, min(31, nearest_int(x[16 * j + ii] / dd))) + 32
    ql, qh = [0] * 128, [0] * 64
    for h, j in enumerate(range(0, 256, 128)):
        for l in range(32):
            q1, q2, q3, q4 = (L[j + l + k] & 0xF for k in (0, 32, 64, 96))
            ql[64 * h + l] = q1 | (q3 << 4)
            ql[64 * h + l + 32] = q2 | (q4 << 4)
            qh[32 * h + l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) \
                | ((L[j + l + 96] >> 4) << 6)
    return bytes(ql) + bytes(qh) + bytes(s & 0xFF for s in sc) + struct.pack("<H", d)


BLOCKS = {"q4_k": q4_k_block, "q5_k": q5_k_block, "q6_k": q6_k_block}


def encode_rows(x: np.ndarray, fmt: str) -> np.ndarray:
    """x float32 [nb, 256] -> uint8 [nb, block_bytes], one super-block at a time."""
    return np.stack([np.frombuffer(BLOCKS[fmt]([f(v) for v in row]), dtype=np.uint8) for row in x])
