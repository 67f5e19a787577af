"""The streamed QLoRA merge (export.merge_stream) writes the same tensors as the whole-model merge."""

from __future__ import annotations

import json

import torch


def _tensors(folder):
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_streamed_qlora_merge_equals_the_whole_model_merge(tmp_path, tiny_run, monkeypatch):
    from transformers import AutoModelForCausalLM

    from tunelab.export import merge

    run = tiny_run(tmp_path, "q", method="qlora")
    calls = []
    real = merge._streamable_base
    monkeypatch.setattr(merge, "_streamable_base", lambda cfg: calls.append(1) or real(cfg))
    res = merge.merge_run(run, tmp_path / "streamed", dtype="bf16")
    assert calls and res.dequantized == 14 and res.merged == 14
    monkeypatch.setattr(merge, "_streamable_base", lambda cfg: None)  # the whole-model path
    whole = merge.merge_run(run, tmp_path / "whole", dtype="bf16")
    a, b = _tensors(tmp_path / "streamed"), _tensors(tmp_path / "whole")
    assert set(a) == set(b) and "lm_head.weight" not in a  # tied head saved once
    assert all(a[k].dtype == b[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in a)
    assert res.params == whole.params
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "streamed"))
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.dtype == torch.bfloat16
    info = json.loads((tmp_path / "streamed" / "tunelab_merge.json").read_text())
    assert info["dequantized_layers"] == 14 and info["merged_layers"] == 14


def test_streamed_merge_writes_shards_as_it_goes(tmp_path, tiny_run):
    from tunelab.export.merge_stream import stream_merge_qlora
    from tunelab.models.shards import INDEX
    from tunelab.runs.load import load_run

    run = tiny_run(tmp_path, "q2", method="qlora")
    rd, cfg = load_run(run)
    from tunelab.models.registry import resolve

    base = resolve(cfg["model"]["name"]).path
    _, params, deq, merged = stream_merge_qlora(base, rd.path / "adapter", tmp_path / "out", torch.float32,
                                                max_shard_bytes=50_000)
    index = json.loads((tmp_path / "out" / INDEX).read_text())
    assert len(set(index["weight_map"].values())) > 3 and deq == merged == 14
    assert sum(t.numel() for t in _tensors(tmp_path / "out").values()) == params
