"""Any embedder by name: `<alias>-static` is the static table distilled from the encoder `<alias>`
(tunelab.rag.static_embed: far cheaper to index, less accurate; docs/rag.md), anything else a
transformers encoder (tunelab.rag.embed). Both are cached per process and share `encode` / `dim` / `name`.

A knowledge base's embedder (`kb_embedder`) is the one named in its manifest, unless `tunelab rag tune`
installed a fine-tuned copy: then `manifest["tuned_embedder"]["dir"]` names its folder inside the KB
folder (a new folder name per tune, so the per-process cache never serves an older one)."""

from __future__ import annotations

import functools
from pathlib import Path

from tunelab.errors import TunelabError
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


def kb_embedder(manifest: dict, directory: str | Path):
    """The embedder that made the vectors of the KB at `directory` (its tuned one when installed).

    Raises TunelabError when a `rag tune` was interrupted while re-embedding (`tune_pending` in the
    manifest: the stored vectors may come from either model) or the tuned folder is missing."""
    if manifest.get("tune_pending"):
        raise TunelabError("an interrupted `rag tune` left this knowledge base half re-embedded", where=str(directory),
                           hint="rerun `tunelab rag tune` with --overwrite (its questions are cached), "
                                "or re-index the documents")
    tuned = manifest.get("tuned_embedder")
    if not tuned:
        return load_embedder(manifest["embedder"])
    path = Path(directory) / tuned["dir"]
    if not (path / "config.json").is_file():
        raise TunelabError(f"the tuned embedder folder {path} is missing", where=str(directory),
                           hint="rerun `tunelab rag tune` with --overwrite, or re-index the documents")
    return Embedder.load(str(path.resolve()))
