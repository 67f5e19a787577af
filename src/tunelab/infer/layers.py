"""The decode engine's shared pieces (a projection with its adapters, the two RMSNorm kinds, rope's
rotate_half) and its forward for every family whose layer is not Llama's (infer/arch.py says what
each adds; decode.py's `_forward` keeps Llama's own, branch-free). Same contract as
`DecodeEngine._forward`; per block, with every piece the weights do not have skipped:

    h      = norm(x, w_attn_in)
    q,k,v  = h @ Wqkv
    q,k    = qk_norm(q), qk_norm(k)                 per head [hd] or over all heads [n hd]
    q,k    = q cos(p) + rotate_half(q) sin(p)       cos, sin of the block's rope (gemma3: local / global)
    s      = scale q K^T                            scale = 1/sqrt(hd) or query_pre_attn_scalar^-1/2
    s      = c tanh(s / c)                          attention soft-capping (gemma2)
    a      = softmax(s + mask) V @ Wo               mask: causal, padding, and for a windowed layer
                                                    slot_q - slot_k < window
    x      = x + norm(a, w_attn_out)
    x      = x + norm(act(h' Wg) * (h' Wu) @ Wd, w_mlp_out),   h' = norm(x, w_mlp_in)

Slots differ by what positions differ by (a row's left padding is constant), so the window is
counted in cache slots, as transformers' sliding mask counts cache positions. Without soft-capping
attention is torch's SDPA; with it, transformers' eager arithmetic (scores in the model dtype,
softmax in fp32, a masked score = the dtype's min, so a fully masked pad row stays finite).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunelab.infer.parts import DecoderWeights, Proj

# which rows of a batch each named adapter applies to: [(name, row indices [k] long, or None = all rows)]
Route = list[tuple[str, "torch.Tensor | None"]]


def linear(x: torch.Tensor, p: Proj, route: Route | None = None) -> torch.Tensor:
    """x W^T (+ b) (+ (x A^T)(s B^T) for each unmerged adapter in `p.loras`), and for each
    (name, rows) of `route` the named adapter `p.named[name]`'s delta on those rows only
    (rows None: every row); a name this projection has no adapter for adds nothing."""
    if p.packed is not None:  # int8: fbgemm quantizes x per tensor (u8, reduced range) and adds the bias
        y = torch.ops.quantized.linear_dynamic(x, p.packed, True)
    elif p.int4 is not None:  # exact 4-bit codes (infer/int4.py), bf16 activations
        y = p.int4.matmul(x)
        if p.bias is not None:
            y = y + p.bias
    else:
        y = x @ p.w if p.transposed else F.linear(x, p.w)
        if p.bias is not None:
            y = y + p.bias
    for lo in p.loras:
        y = y + (x @ lo.at) @ lo.bt
    for name, rows in route or ():
        lo = p.named.get(name)
        if lo is None:
            continue
        if rows is None:
            y = y + (x @ lo.at) @ lo.bt
        else:  # y[rows] += (x[rows] A^T)(s B^T): one adapter's rows of a mixed batch
            y = y.index_add(0, rows, (x.index_select(0, rows) @ lo.at) @ lo.bt)
    return y


def rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm: w * (x / sqrt(mean(x^2) + eps)), the statistic in fp32."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def rmsnorm_fp32(x: torch.Tensor, w32: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma's and OLMo 2's: (x / sqrt(mean(x^2) + eps) * w32).to(dtype), all in fp32."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * w32).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def write_kv(kc: torch.Tensor, vc: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start, end: int,
             rows: torch.Tensor | None) -> None:
    """k, v [B, S, nkv, hd] into a block's cache kc, vc [B, nkv, T, hd]: slots start..end-1 of every row,
    or with ragged rows (`rows` = arange(B), S == 1, `start` [B]) slot start[r] of row r."""
    if rows is not None:  # kc[r, :, start[r]] = k[r] for every row r
        kc[rows, :, start] = k[:, 0]
        vc[rows, :, start] = v[:, 0]
    else:
        kc[:, :, start:end] = k.transpose(1, 2)
        vc[:, :, start:end] = v.transpose(1, 2)


def _masks(w: DecoderWeights, mask, start, s: int, end: int, device) -> dict:
    """{window: the boolean mask [B|1, 1, S, end] its layers use, or None (SDPA's is_causal / no mask)}."""
    ragged = isinstance(start, torch.Tensor)
    kv = torch.arange(end, device=device)
    q = start.unsqueeze(1) if ragged else (start + torch.arange(s, device=device)).unsqueeze(0)  # [B|1, S]
    diff = (q.unsqueeze(-1) - kv)[:, None]  # slot_q - slot_k  [B|1, 1, S, end]
    out = {}
    for win in {b.window for b in w.blocks}:
        if win is None:
            m = mask if mask is not None or w.attn_softcap is None else diff >= 0
        else:
            m = (diff >= 0) & (diff < win)
            m = m if mask is None else m & mask
        out[win] = m
    return out


def _attend(w: DecoderWeights, q, k, v, mask, causal: bool) -> torch.Tensor:
    """softmax(scale q K^T (soft-capped) + mask) V: q [B, nq, S, hd], k, v [B, nkv, T, hd]."""
    nq, nkv = q.shape[1], k.shape[1]
    if w.attn_softcap is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                              scale=w.attn_scale, enable_gqa=nq != nkv)
    k, v = k.repeat_interleave(nq // nkv, 1), v.repeat_interleave(nq // nkv, 1)
    scale = w.attn_scale if w.attn_scale is not None else q.shape[-1] ** -0.5
    s = (q @ k.transpose(2, 3)) * scale
    s = torch.tanh(s / w.attn_softcap) * w.attn_softcap
    if mask is not None:
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
    return F.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype) @ v


def forward(eng, tokens: torch.Tensor, pos: torch.Tensor, cache: list, start, mask, route) -> torch.Tensor:
    """`DecodeEngine._forward` for a non-Llama layer (the module docstring)."""
    w = eng.w
    nq, nkv, hd = w.n_heads, w.n_kv_heads, w.head_dim
    b, s = tokens.shape
    ragged = isinstance(start, torch.Tensor)
    rows = torch.arange(b, device=tokens.device) if ragged else None
    end = int(start.max()) + 1 if ragged else start + s
    rope = {}
    for key in w.ropes:
        cos_t, sin_t = eng._rope_table(int(pos.max()) + 1, key)
        rope[key] = cos_t[pos].unsqueeze(2), sin_t[pos].unsqueeze(2)  # [B, S, 1, hd]
    norm = rmsnorm_fp32 if w.norm_fp32 else rmsnorm
    eps = w.eps
    x = F.embedding(tokens, w.embed)
    if w.embed_scale is not None:
        x = x * w.embed_scale
    masks = _masks(w, mask, start, s, end, tokens.device)
    causal = mask is None and s > 1
    for blk, (kc, vc) in zip(w.blocks, cache):
        h = x if blk.attn_norm is None else norm(x, blk.attn_norm, eps)
        qkv = linear(h, blk.qkv, route)
        if blk.q_norm is not None:  # over all heads of q, and of k (olmo2)
            qk = torch.cat([norm(qkv[..., : nq * hd], blk.q_norm, eps),
                            norm(qkv[..., nq * hd:(nq + nkv) * hd], blk.k_norm, eps)], -1)
            qk = qk.view(b, s, nq + nkv, hd)
        else:
            qk = qkv[..., : (nq + nkv) * hd].view(b, s, nq + nkv, hd)
        if blk.qk_norm is not None:  # per head (qwen3, gemma3)
            qk = norm(qk, blk.qk_norm, eps)
        cos, sin = rope[blk.rope]
        qk = qk * cos + rotate_half(qk) * sin
        write_kv(kc, vc, qk[:, :, nq:], qkv[..., (nq + nkv) * hd:].view(b, s, nkv, hd), start, end, rows)
        a = _attend(w, qk[:, :, :nq].transpose(1, 2), kc[:, :, :end], vc[:, :, :end], masks[blk.window], causal)
        a = linear(a.transpose(1, 2).reshape(b, s, nq * hd), blk.o, route)
        x = x + (a if blk.attn_post_norm is None else norm(a, blk.attn_post_norm, eps))
        h = x if blk.mlp_norm is None else norm(x, blk.mlp_norm, eps)
        g, u = linear(h, blk.gate_up, route).chunk(2, dim=-1)
        y = linear(w.act(g) * u, blk.down, route)
        x = x + (y if blk.mlp_post_norm is None else norm(y, blk.mlp_post_norm, eps))
    return norm(x, w.norm, eps)
