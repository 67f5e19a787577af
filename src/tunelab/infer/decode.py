"""The decode engine: a Llama-family forward written for generation, with a static KV cache.

One step for a batch of B rows at cache slot t (every row writes its new token's K, V at slot t):

    x   = embed[token]                                              [B, 1, H]
    per block:
        h      = rmsnorm(x) * w_attn                                 rmsnorm(x) = x / sqrt(mean(x^2) + eps)
        q,k,v  = h @ Wqkv                                            one product for the three (infer/weights.py)
        q,k    = q cos(p) + rotate_half(q) sin(p)                    p = the row's own position (left padding)
        K[:, :, t], V[:, :, t] = k, v
        x      = x + softmax(q K[:t+1]^T / sqrt(hd) + mask) V[:t+1] @ Wo     grouped heads read their shared K, V
        h      = rmsnorm(x) * w_mlp
        x      = x + (silu(h Wg) * (h Wu)) @ Wd                      Wg, Wu one product
    logits = rmsnorm(x) * w_norm @ Whead

This is transformers' Llama arithmetic, op for op, in the same dtype: in fp32 the greedy tokens
are transformers' greedy tokens (tests/infer/test_decode.py checks 64 of them). What it leaves
out is what `generate` does around the model on every token: building a dynamic cache, masks
and position ids, logits processors and stopping criteria (docs/inference.md has the profile).

Families whose layer is not Llama's (post norms, q/k norms, sliding windows, soft-capping: infer/arch.py)
run infer/layers.py's forward on the same cache and masks; `_forward` hands them over on its first line.
Gemma's final soft-capping, c tanh(logits / c), is `_head`'s.

The prompt is one forward over all its tokens (prefill, causal mask); the cache holds
prompt + max_new_tokens slots. Rows of a batch are left-padded: padded slots are masked out and
positions count from each row's first real token, so a row decodes as it would alone.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from tunelab.infer import layers
from tunelab.infer.layers import linear as _linear
from tunelab.infer.layers import rmsnorm as _rmsnorm
from tunelab.infer.layers import rotate_half as _rotate_half
from tunelab.infer.layers import Route
from tunelab.infer.sampling import Sampler
from tunelab.infer.weights import DecoderWeights, Unsupported, read_weights

__all__ = ["DecodeEngine", "Route", "Unsupported"]


class DecodeEngine:
    """Generation on `DecoderWeights`: `generate(prompts)` for batches, `stream(prompt)` token by token.

    `DecodeEngine.from_model(model)` raises `Unsupported` for a model it does not compute exactly
    (infer/weights.py says which); the Generator then uses transformers' `generate`.
    """

    def __init__(self, weights: DecoderWeights, max_context: int):
        self.w = weights
        self.max_context = max_context
        self.device = weights.embed.device
        self._tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_model(cls, model, dtype: torch.dtype = torch.float32, merge: bool = True,
                   weights: str = "dense", dense_batches: bool = False) -> "DecodeEngine":
        cfg = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
        return cls(read_weights(model, dtype=dtype, merge=merge, weights=weights, dense_batches=dense_batches),
                   int(cfg.max_position_embeddings))

    # ---- the model -----------------------------------------------------------------------------------------
    def _rope_table(self, n: int, key: str = "default") -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [n, hd] for positions 0..n-1, from the model's own rotary embedding (`key`: which
        of the weights' ropes, gemma3 has one per layer type)."""
        table = self._tables.get(key)
        if table is None or table[0].shape[0] < n:
            n = max(n, 256)
            x = torch.zeros(1, 1, self.w.hidden, dtype=self.w.dtype, device=self.device)
            cos, sin = self.w.ropes[key](x, torch.arange(n, device=self.device).unsqueeze(0))
            table = self._tables[key] = cos[0].to(self.w.dtype), sin[0].to(self.w.dtype)
        return table

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The next-token logits of final hidden states (soft-capped, c tanh(logits / c), when the model is)."""
        logits = _linear(hidden, self.w.head)
        cap = self.w.final_softcap
        return logits if cap is None else torch.tanh(logits / cap) * cap

    def _forward(self, tokens: torch.Tensor, pos: torch.Tensor, cache: list, start: int | torch.Tensor,
                 mask: torch.Tensor | None, route: Route | None = None) -> torch.Tensor:
        """Hidden states [B, S, H] of `tokens` [B, S] at positions `pos` [B, S], their K, V written to
        cache slots start..start+S-1; `mask` [B, 1, S, start+S] (True = attend) or None (causal, no padding).

        `start` may be a tensor [B] of per-row slots (S == 1, ragged rows: row r writes slot start[r]
        and attends over slots 0..max(start) under `mask` [B, 1, 1, max(start) + 1]).
        `route` selects the named adapters of each row (`_linear`). A model whose layer is not Llama's
        (`weights.plain` False) runs infer/layers.py's forward instead."""
        w = self.w
        if not w.plain:
            return layers.forward(self, tokens, pos, cache, start, mask, route)
        nq, nkv, hd = w.n_heads, w.n_kv_heads, w.head_dim
        b, s = tokens.shape
        ragged = isinstance(start, torch.Tensor)
        rows = torch.arange(b, device=tokens.device) if ragged else None
        end = int(start.max()) + 1 if ragged else start + s
        cos_t, sin_t = self._rope_table(int(pos.max()) + 1)
        cos, sin = cos_t[pos].unsqueeze(2), sin_t[pos].unsqueeze(2)  # [B, S, 1, hd]
        x = F.embedding(tokens, w.embed)
        causal = mask is None and s > 1
        for blk, (kc, vc) in zip(w.blocks, cache):
            h = _rmsnorm(x, blk.attn_norm, w.eps)
            qkv = _linear(h, blk.qkv, route)
            qk = qkv[..., : (nq + nkv) * hd].view(b, s, nq + nkv, hd)
            qk = qk * cos + _rotate_half(qk) * sin  # one rotation for q and k heads together
            layers.write_kv(kc, vc, qk[:, :, nq:], qkv[..., (nq + nkv) * hd:].view(b, s, nkv, hd), start, end, rows)
            a = F.scaled_dot_product_attention(qk[:, :, :nq].transpose(1, 2), kc[:, :, :end], vc[:, :, :end],
                                               attn_mask=mask, is_causal=causal, enable_gqa=nq != nkv)
            x = x + _linear(a.transpose(1, 2).reshape(b, s, nq * hd), blk.o, route)
            h = _rmsnorm(x, blk.mlp_norm, w.eps)
            g, u = _linear(h, blk.gate_up, route).chunk(2, dim=-1)
            x = x + _linear(F.silu(g) * u, blk.down, route)
        return _rmsnorm(x, w.norm, w.eps)

    def _new_cache(self, b: int, n: int) -> list:
        shape = (b, self.w.n_kv_heads, n, self.w.head_dim)
        kw = dict(dtype=self.w.dtype, device=self.device)
        # zeros, not empty: a masked slot still multiplies its V by a probability of 0, and 0 x NaN garbage = NaN
        return [(torch.zeros(shape, **kw), torch.zeros(shape, **kw))
                for _ in self.w.blocks]

    @torch.inference_mode()
    def logits(self, ids: list[int]) -> torch.Tensor:
        """The next-token logits [S, V] at every position of one sequence (teacher-forced)."""
        tokens = torch.tensor([ids], device=self.device)
        cache = self._new_cache(1, len(ids))
        hidden = self._forward(tokens, torch.arange(len(ids), device=self.device).unsqueeze(0), cache, 0, None)
        return self._head(hidden[0])

    def new_cache(self, b: int, n: int) -> list:
        """An empty K, V cache for b rows of n slots: [(K, V) per block], each [b, n_kv_heads, n, head_dim]."""
        return self._new_cache(b, n)

    # ---- ragged rows (the server's continuous batching: serve/batcher.py) -----------------------------------
    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], cache: list, route: Route | None = None) -> torch.Tensor:
        """Write each prompt's K, V to slots 0..len-1 of its row of `cache` (a view of k rows of a
        batch cache) and return the next-token logits [k, V] after each prompt's last token.

        Prompts are right-padded to the longest: under the causal mask a real token never sees
        the pads after it, and a pad's slots are masked (step_ragged: slot <= len) until the row's
        own tokens overwrite them."""
        n = max(len(p) for p in prompts)
        tokens = torch.tensor([list(p) + [0] * (n - len(p)) for p in prompts], device=self.device)
        pos = torch.arange(n, device=self.device).unsqueeze(0).expand(len(prompts), n)
        hidden = self._forward(tokens, pos, cache, 0, None, route)
        last = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        return self._head(hidden[torch.arange(len(prompts), device=self.device), last])

    @torch.inference_mode()
    def step_ragged(self, tokens: torch.Tensor, slots: torch.Tensor, cache: list,
                    route: Route | None = None) -> torch.Tensor:
        """One new token per row, rows of different lengths: row r holds its sequence in slots
        0..slots[r]-1, so `tokens[r]` sits at position = slot = slots[r] and attends to slots
        0..slots[r] (mask [B, 1, 1, max(slots) + 1]). Returns the next-token logits [B, V]."""
        end = int(slots.max()) + 1
        mask = (torch.arange(end, device=self.device).unsqueeze(0) <= slots.unsqueeze(1))[:, None, None]
        hidden = self._forward(tokens.unsqueeze(1), slots.unsqueeze(1), cache, slots, mask, route)[:, -1]
        return self._head(hidden)

    # ---- generation ----------------------------------------------------------------------------------------
    def check_prompt(self, n: int, max_new_tokens: int) -> int:
        """The number of new tokens that fit after an n-token prompt; ValueError if none does."""
        if n < 1:
            raise ValueError("empty prompt")
        if n >= self.max_context:
            raise ValueError(f"the prompt is {n} tokens, the model's context is {self.max_context}")
        return min(max_new_tokens, self.max_context - n)

    @torch.inference_mode()
    def steps(self, prompts: list[list[int]], max_new_tokens: int, stop_ids: set[int] | frozenset = frozenset(),
              sampler: Sampler | None = None, constraints: list | None = None) -> Iterator[list[int | None]]:
        """Yield, per decoding step, the new token of every row (None once a row has stopped: it drew a
        stop id, which is yielded, or ran out of tokens). Rows are left-padded to a common length.
        `constraints[r]` (infer/tool_names.ToolNameConstraint, or None) limits what row r may draw."""
        sampler = sampler or Sampler()
        b, n = len(prompts), max(len(p) for p in prompts)
        new = min(self.check_prompt(len(p), max_new_tokens) for p in prompts)
        if new <= 0:
            return
        pad = [n - len(p) for p in prompts]
        dev = self.device
        tokens = torch.tensor([[0] * k + list(p) for k, p in zip(pad, prompts)], dtype=torch.long, device=dev)
        pad_t = torch.tensor(pad, device=dev).unsqueeze(1)
        slots = torch.arange(n + new, device=dev)
        pos = (torch.arange(n, device=dev).unsqueeze(0) - pad_t).clamp(min=0)  # [B, n]
        valid = slots.unsqueeze(0) >= pad_t  # [B, n + new]: a row's padded slots are never attended
        cache = self._new_cache(b, n + new)
        mask = None
        if any(pad):  # causal and not padding: [B, 1, n, n]
            mask = (torch.tril(torch.ones(n, n, dtype=torch.bool, device=dev)).unsqueeze(0) & valid[:, None, :n])[:, None]
        hidden = self._forward(tokens, pos, cache, 0, mask)[:, -1]
        alive = [True] * b
        for t in range(new):
            logits = self._head(hidden)
            nxt = sampler.pick(logits)  # [B]
            if constraints:
                nxt = _constrained(nxt, logits, sampler, constraints)
            out: list[int | None] = []
            for r, tok in enumerate(nxt.tolist()):
                out.append(tok if alive[r] else None)
                if alive[r] and tok in stop_ids:
                    alive[r] = False
            yield out
            if not any(alive) or t == new - 1:
                return
            step_pos = (n + t - pad_t)  # [B, 1]
            step_mask = valid[:, None, None, : n + t + 1] if any(pad) else None
            hidden = self._forward(nxt.unsqueeze(1), step_pos, cache, n + t, step_mask)[:, -1]

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop_ids=frozenset(),
                 sampler: Sampler | None = None, constraints: list | None = None) -> list[list[int]]:
        """The new tokens of every row (a stop id included when drawn)."""
        out: list[list[int]] = [[] for _ in prompts]
        for step in self.steps(prompts, max_new_tokens, stop_ids, sampler, constraints):
            for r, tok in enumerate(step):
                if tok is not None:
                    out[r].append(tok)
        return out

    def stream(self, prompt: list[int], max_new_tokens: int, stop_ids=frozenset(),
               sampler: Sampler | None = None) -> Iterator[int]:
        """The new tokens of one prompt as they are decoded."""
        for step in self.steps([prompt], max_new_tokens, stop_ids, sampler):
            if step[0] is not None:
                yield step[0]


def _constrained(nxt: torch.Tensor, logits: torch.Tensor, sampler: Sampler, constraints: list) -> torch.Tensor:
    """Each row's draw passed through its constraint (ToolNameConstraint.draw)."""
    picked = [t if c is None else c.draw(logits[r], sampler, t)
              for r, (t, c) in enumerate(zip(nxt.tolist(), constraints))]
    return torch.tensor(picked, dtype=nxt.dtype, device=nxt.device)
