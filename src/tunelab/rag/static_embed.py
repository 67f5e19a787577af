"""Static token embeddings distilled from a sentence encoder: `<alias>-static` (e.g. `minilm-l6-static`).

The fast embedder for big corpora on small CPUs. A transformer encoder costs ~24 MFLOP per
token (all-MiniLM-L6-v2); a static embedder costs a table lookup per token, so embedding is bound
by tokenization (the Python docs with each: docs/rag.md).

Distillation (model2vec's recipe, simplified; done once, cached in
`$TUNELAB_HOME/models/<alias>-static/vectors.npy`; one encoder forward of 3 tokens per vocabulary
token, e.g. 30,522 x 3 tokens for MiniLM: its duration is in docs/rag.md, "Timings behind the code"):
    vector[t] = mean-pooled output of the encoder on `[CLS] t [SEP]`, for every vocabulary token t
    minus the mean vector of all word pieces (the shared direction: without it any two texts
    score a cosine of ~0.5)
Encoding a text: weighted mean of its tokens' vectors, then L2 normalisation, with SIF weights
    w(t) = a / (a + p(t)),  a = 1e-3,  p(t) = 1 / (rank(t) * ln V)   (Zipf's law)
where rank(t) is the token's position among the vocabulary's word pieces (WordPiece
vocabularies list them roughly by frequency), so "the" weighs 0.01 and rare words ~1.

Quality is below the transformer's (no context, no word order); `rag eval` tells by how much,
and hybrid search (BM25 + vectors) recovers much of the gap. See docs/rag.md for measurements.
"""

from __future__ import annotations

import json
import math

import numpy as np

SUFFIX = "-static"
SIF_A = 1e-3


class StaticEmbedder:
    """Same interface as `tunelab.rag.embed.Embedder`: `encode(texts) -> (n, dim)` unit vectors."""

    def __init__(self, vectors: np.ndarray, tokenizer, name: str, first_word_id: int):
        self.tokenizer = tokenizer
        self.name = name
        self.dim = int(vectors.shape[1])
        self.max_tokens = 100_000
        vocab = vectors.shape[0]
        rank = np.maximum(1, np.arange(vocab) - first_word_id + 1).astype(np.float64)
        p = 1.0 / (rank * math.log(vocab))
        self.weights = (SIF_A / (SIF_A + p)).astype(np.float32)
        for tid in tokenizer.all_special_ids:
            if tid is not None and tid < vocab:
                self.weights[tid] = 0.0
        # remove the direction every token shares (the mean over word pieces), as PCA would
        words = vectors[first_word_id:] if first_word_id < vocab else vectors
        self.vectors = (vectors - words.mean(0, keepdims=True)).astype(np.float32)

    @classmethod
    def load(cls, name: str) -> "StaticEmbedder":
        """Distil (first time) or load the static table for `name` = `<encoder>-static`."""
        from tunelab.models.registry import model_cache_dir
        from tunelab.rag.embed import Embedder

        base = name[: -len(SUFFIX)]
        enc = Embedder.load(base)
        d = model_cache_dir(name)
        vec_file, meta_file = d / "vectors.npy", d / "meta.json"
        if vec_file.exists() and meta_file.exists():
            vectors = np.load(vec_file)
            meta = json.loads(meta_file.read_text())
        else:
            vectors = distill(enc)
            meta = {"base": base, "first_word_id": _first_word_id(enc.tokenizer)}
            d.mkdir(parents=True, exist_ok=True)
            np.save(d / "vectors.tmp.npy", vectors)
            (d / "vectors.tmp.npy").replace(vec_file)
            meta_file.write_text(json.dumps(meta))
        return cls(vectors, enc.tokenizer, name, int(meta["first_word_id"]))

    def encode(self, texts: list[str], batch_size: int = 256, max_tokens: int = 100_000) -> np.ndarray:
        """Unit vectors, shape (len(texts), dim); SIF-weighted mean of token vectors."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        table = torch.from_numpy(self.vectors)
        weights = torch.from_numpy(self.weights)
        for b in range(0, len(texts), batch_size):
            ids = self.tokenizer(texts[b:b + batch_size], add_special_tokens=False, truncation=True,
                                 max_length=max_tokens, verbose=False)["input_ids"]
            flat = torch.tensor([t for seq in ids for t in seq] or [0], dtype=torch.long)
            offsets = torch.tensor([0] + list(np.cumsum([len(s) for s in ids])[:-1]), dtype=torch.long)
            w = weights[flat] if any(ids) else torch.zeros(1)
            summed = torch.nn.functional.embedding_bag(flat, table, offsets, mode="sum", per_sample_weights=w)
            out[b:b + len(ids)] = torch.nn.functional.normalize(summed, p=2, dim=1).numpy()
        return out


def distill(enc, batch_size: int = 512) -> np.ndarray:
    """Encoder output (mean over [CLS] t [SEP]) for every vocabulary token t: (V, dim) float32."""
    import torch

    tok = enc.tokenizer
    vocab = len(tok)
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    out = np.zeros((vocab, enc.dim), dtype=np.float32)
    with torch.inference_mode():
        for b in range(0, vocab, batch_size):
            ids = torch.arange(b, min(b + batch_size, vocab))
            x = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1)
            hidden = enc.model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state
            out[b:b + len(ids)] = hidden.mean(1).numpy()
    return out


def _first_word_id(tokenizer) -> int:
    """Id of the vocabulary's first multi-letter word piece (BERT uncased: 'the' = 1996)."""
    for word in ("the", "Ġthe", "▁the"):
        tid = tokenizer.convert_tokens_to_ids(word)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            return tid
    return 0
