"""tunelab.models.synthetic (random-init Llama checkpoints written shard by shard) and models.shards."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.models import synthetic
from tunelab.models.shards import INDEX, SINGLE, ShardReader, ShardWriter

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 600, "tie_word_embeddings": False}


def test_synthetic_checkpoint_is_sharded_and_loads_with_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = synthetic.write_synthetic_llama(tmp_path / "m", SMALL, max_shard_bytes=40_000)
    index = json.loads((out / INDEX).read_text())
    shards = sorted({f for f in index["weight_map"].values()})
    assert len(shards) >= 3 and all((out / f).is_file() for f in shards)
    cfg = synthetic.llama_config(SMALL)
    assert set(index["weight_map"]) == {n for n, _ in synthetic.tensor_shapes(cfg)}
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert sum(p.numel() for p in model.parameters()) == synthetic.param_count(cfg)
    w = model.model.layers[1].mlp.down_proj.weight
    assert 0.015 < float(w.detach().std()) < 0.025 and torch.equal(model.model.norm.weight, torch.ones(64))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok("hello world")["input_ids"]
    # same seed, same tensors (not the same bytes: safetensors orders the header's metadata at random)
    from safetensors.torch import load_file

    again = synthetic.write_synthetic_llama(tmp_path / "m2", SMALL, max_shard_bytes=40_000)
    for f in shards:
        a, b = load_file(str(out / f)), load_file(str(again / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_short_disk_is_refused_in_one_line(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(TunelabError) as e:
        synthetic.write_synthetic_llama(tmp_path / "big", "7b")
    msg = e.value.one_line()
    assert "not enough disk space" in msg and "13.48 GB" in msg and "\n" not in msg
    assert not (tmp_path / "big").exists()


def test_presets():
    assert synthetic.param_count(synthetic.llama_config("7b")) == 6_738_415_616  # Llama-2-7B
    assert synthetic.param_count(synthetic.llama_config("1b")) == 1_100_048_384  # TinyLlama-1.1B
    with pytest.raises(TunelabError, match="unknown synthetic preset"):
        synthetic.llama_config("9b")


def test_shard_reader_views_equal_the_tensors_and_writer_single_file(tmp_path):
    from safetensors.torch import load_file

    tensors = {"a": torch.randn(3, 5).to(torch.bfloat16), "b": torch.arange(7, dtype=torch.int64),
               "c": torch.randn(1000)}
    w = ShardWriter(tmp_path / "one")
    for k, v in tensors.items():
        w.add(k, v)
    assert w.close() == [tmp_path / "one" / SINGLE] and not (tmp_path / "one" / INDEX).exists()
    assert all(torch.equal(load_file(str(tmp_path / "one" / SINGLE))[k], v) for k, v in tensors.items())
    w = ShardWriter(tmp_path / "many", max_shard_bytes=100)
    for k, v in tensors.items():
        w.add(k, v)
    assert len(w.close()) == 2  # a (30 bytes) + b (56) fit 100 bytes, c (4,000) goes alone
    with ShardReader(tmp_path / "many") as r:
        assert sorted(r.names()) == ["a", "b", "c"]
        for k, v in tensors.items():
            view = r.tensor(k)
            assert view.dtype == v.dtype and torch.equal(view, v) and r.shape(k) == tuple(v.shape)
            r.release(k)
            assert torch.equal(r.tensor(k), v)  # pages come back from the file after a release
    with pytest.raises(TunelabError, match="no model.safetensors"):
        ShardReader(tmp_path)
