"""The default embedder of text_similarity cosine: all-MiniLM-L6-v2 (`minilm-l6`, offline from its wheel),
token states of the last layer averaged over the attention mask, then L2-normalised - sentence-transformers'
recipe (ops/mean_pool.py, as rag/embed.py). The server injects rag's cached Embedder instead (one copy of the
model in the process); this one serves training, which sits below rag/ in the layer order
(tests/train/test_graders.py checks both give the same vectors).
"""

from __future__ import annotations

import functools

import numpy as np

from tunelab.errors import TunelabError
from tunelab.ops.mean_pool import mean_pool


@functools.lru_cache(maxsize=1)
def _model(name: str):
    from transformers import AutoModel, AutoTokenizer

    from tunelab.models.registry import resolve

    src = resolve(name, where="text_similarity cosine")
    try:
        return AutoTokenizer.from_pretrained(str(src.path)), AutoModel.from_pretrained(str(src.path)).eval()
    except OSError as e:
        raise TunelabError(f"cannot load the embedder {name!r} ({e})", where="text_similarity cosine") from None


def encode(texts: list[str], name: str = "minilm-l6", max_tokens: int = 256) -> np.ndarray:
    """Unit vectors (len(texts), dim), float32: mean of the last hidden states over real tokens, / its norm."""
    import torch

    tok, model = _model(name)
    with torch.inference_mode():
        enc = tok(list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        return mean_pool(model, enc).float().numpy()
