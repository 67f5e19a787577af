"""Sentence vectors by mean pooling (sentence-transformers' recipe), one copy for rag's embedder, `rag tune`
and the text_similarity cosine grader."""

from __future__ import annotations


def mean_pool(model, enc):
    """Unit sentence vectors of a tokenized batch: e = normalize(sum_t m_t h_t / sum_t m_t), where h_t is the
    last hidden state of token t and m_t its attention mask; shape (batch, dim). Differentiable (training uses it)."""
    import torch

    hidden = model(**enc).last_hidden_state  # (batch, seq, dim)
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)
