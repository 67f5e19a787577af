"""The static embedder: distillation table and SIF-weighted mean pooling (tiny random BERT)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tunelab.rag.embed import Embedder
from tunelab.rag.static_embed import StaticEmbedder, _first_word_id, distill


@pytest.fixture(scope="module")
def tiny_encoder():
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tunelab.models.registry import resolve

    tok = AutoTokenizer.from_pretrained(str(resolve("minilm-l6").path))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    return Embedder(BertModel(cfg), tok, "tiny-bert", max_tokens=64)


def test_distill_is_the_encoder_output_per_token(tiny_encoder):
    table = distill(tiny_encoder, batch_size=4096)
    assert table.shape == (len(tiny_encoder.tokenizer), 16)
    tok = tiny_encoder.tokenizer
    t = tok.convert_tokens_to_ids("roses")
    with torch.inference_mode():
        want = tiny_encoder.model(input_ids=torch.tensor([[tok.cls_token_id, t, tok.sep_token_id]])).last_hidden_state
    np.testing.assert_allclose(table[t], want.mean(1)[0].numpy(), atol=1e-5)


def test_encode_is_a_sif_weighted_mean_of_centred_token_vectors(tiny_encoder):
    tok = tiny_encoder.tokenizer
    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(tok), 8)).astype(np.float32)
    first = _first_word_id(tok)
    assert first == tok.convert_tokens_to_ids("the") == 1996
    emb = StaticEmbedder(table, tok, "x-static", first)
    assert emb.weights[first] < 0.05 < 0.9 < emb.weights[20000]  # "the" counts little, rare pieces fully
    assert emb.weights[tok.cls_token_id] == 0.0

    v = emb.encode(["prune roses", "prune roses", "", "the tax"])
    assert v.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(v[[0, 1, 3]], axis=1), 1.0, atol=1e-5)
    assert np.all(v[2] == 0)  # empty text -> zero vector, not NaN
    ids = tok("prune roses", add_special_tokens=False)["input_ids"]
    centred = table - table[first:].mean(0)
    want = sum(emb.weights[i] * centred[i] for i in ids)
    np.testing.assert_allclose(v[0], want / np.linalg.norm(want), atol=1e-5)
