"""Any embedder by name: `<alias>-static` is the static table distilled from the encoder `<alias>`
(tunelab.rag.static_embed: far cheaper to index, less accurate; docs/rag.md), anything else a
transformers encoder (tunelab.rag.embed). Both are cached per process and share `encode` / `dim` / `name`."""

from __future__ import annotations

import functools

from tunelab.rag.embed import Embedder
from tunelab.rag.static_embed import SUFFIX, StaticEmbedder


@functools.lru_cache(maxsize=4)
def _load_static(name: str) -> StaticEmbedder:
    return StaticEmbedder.load(name)


def load_embedder(name: str = "minilm-l6"):
    """The embedder called `name`; raises TunelabError when it is unavailable."""
    if name.endswith(SUFFIX):
        return _load_static(name)
    return Embedder.load(name)
