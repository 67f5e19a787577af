"""The method registry (methods/): one object per `method.name`, each settling its own autos without touching
its input, its facts agreeing with what the rest of tunelab did by name before, and its memory terms giving
the estimator the exact numbers it gave before the methods existed (estimates_before.json, written by the
estimator of the commit before methods/)."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
import torch

from tunelab.config import MethodConfig, from_dict
from tunelab.errors import TunelabError
from tunelab.methods import METHODS, Merge, Method, Saved, Served, method_names, method_of

HERE = Path(__file__).parent


def _cfg(model: str, **method):
    return from_dict({"model": {"name": str(model), "device": "cpu"}, "data": {"train": "x.jsonl"},
                      "method": method})


def test_every_configurable_method_has_one_registered_object():
    names = set(typing.get_args(MethodConfig.model_fields["name"].annotation))
    assert names == set(method_names()) == set(METHODS)
    for name in names:
        m = method_of(name)
        assert isinstance(m, Method) and m.name == name
        assert method_of(_cfg("x", name=name)) is m and method_of({"method": {"name": name}}) is m
        assert method_of({"name": name}) is m and method_of(_cfg("x", name=name).method) is m and method_of(m) is m


def test_an_unknown_method_is_one_clear_error():
    with pytest.raises(TunelabError, match="unknown method 'dora'"):
        method_of("dora")


def test_the_facts_are_what_the_name_comparisons_said():
    """What recipes, runs, merge, the card and the reports used to decide by name."""
    adapters = {n for n in METHODS if method_of(n).adapters}
    assert adapters == {"lora", "qlora"}
    assert {n for n in METHODS if method_of(n).quantized_base} == {"qlora"}
    assert {n: method_of(n).saves for n in METHODS} == {
        "lora": Saved.ADAPTER, "qlora": Saved.ADAPTER, "full": Saved.MODEL, "freeze": Saved.MODEL,
        "qat": Saved.QUANTIZED, "bitnet": Saved.QUANTIZED}
    assert {n: method_of(n).merge for n in METHODS} == {
        "lora": Merge.ADAPTER, "qlora": Merge.DEQUANTIZED_ADAPTER, "full": Merge.WHOLE, "freeze": Merge.WHOLE,
        "qat": Merge.NONE, "bitnet": Merge.NONE}
    assert {n for n in METHODS if method_of(n).checkpointing_by_default} == {"qlora"}
    assert {n: method_of(n).memory.label for n in METHODS} == {
        "lora": "lora", "qlora": "qlora", "full": "full", "freeze": "full", "qat": "full", "bitnet": "full"}
    assert {n for n in METHODS if "lora-gguf" in method_of(n).exports} == adapters
    assert {n for n in METHODS if method_of(n).serves_as is Served.ADAPTER} == adapters
    assert method_of("qlora").label == "QLoRA" and method_of("lora").label == "LoRA"
    m = MethodConfig(freeze_layers=3)
    assert method_of("lora").detail(m) == " (r=16, alpha=32, targets=all-linear)"
    assert method_of("freeze").detail(m) == " (last 3 layers + head)" and method_of("full").detail(m) == ""


# ---- resolve: qlora's autos, settled without touching the input --------------------------------------------------
def test_resolve_settles_qlora_autos_without_changing_its_input(tiny_model_dir):
    cfg = _cfg(tiny_model_dir, name="qlora")
    before = cfg.model_dump()
    out = method_of(cfg).resolve(cfg)
    assert cfg.model_dump() == before  # the input is left as it was
    assert (out.method.quant_type, out.method.quant_backend) == ("nf4", "tunelab")  # a folder on CPU
    assert out is not cfg and out.method is not cfg.method and out.train is not cfg.train
    assert method_of(out).resolve(out) is out  # nothing auto left: the same object back
    explicit = _cfg(tiny_model_dir, name="qlora", quant_type="fp4", quant_backend="tunelab")
    assert method_of(explicit).resolve(explicit) is explicit


def test_resolve_picks_a_gguf_s_own_blocks(tiny_model_dir, tmp_path):
    from tunelab.export.gguf import write_gguf

    blocks, f16 = tmp_path / "tiny-q4_0.gguf", tmp_path / "tiny-f16.gguf"
    write_gguf(tiny_model_dir, blocks, "q4_0")
    write_gguf(tiny_model_dir, f16, "f16")
    cfg = _cfg(blocks, name="qlora")
    out = method_of(cfg).resolve(cfg)
    assert (out.method.quant_type, out.method.quant_backend) == ("gguf", "tunelab")
    assert (cfg.method.quant_type, cfg.method.quant_backend) == ("auto", "auto")
    assert method_of("qlora").resolve(_cfg(f16, name="qlora")).method.quant_type == "nf4"  # F16 Linears: no blocks
    bnb = method_of("qlora").resolve(_cfg(blocks, name="qlora", quant_backend="bitsandbytes"))
    assert (bnb.method.quant_type, bnb.method.quant_backend) == ("nf4", "bitsandbytes")


def test_the_other_methods_have_nothing_to_resolve():
    for name in METHODS:
        if name != "qlora":
            cfg = _cfg("x", name=name)
            assert method_of(cfg).resolve(cfg) is cfg


# ---- adapting and saving ------------------------------------------------------------------------------------------
def test_each_method_adapts_the_tiny_model_as_before(tiny_model_dir):
    from tunelab.models.load import load_causal_lm
    from tunelab.quant.nn import BitLinear, FakeQuantLinear

    def load():
        return load_causal_lm(str(tiny_model_dir), dtype="fp32", device="cpu")[0]

    lora = method_of("lora").adapt(load(), MethodConfig(r=4, layers="all"))
    assert any("lora_A" in n for n, p in lora.named_parameters() if p.requires_grad)
    assert not any(p.requires_grad for n, p in lora.named_parameters() if "lora_" not in n)
    frozen = method_of("freeze").adapt(load(), MethodConfig(freeze_layers=1))
    trains = {n.split(".")[2] for n, p in frozen.named_parameters() if p.requires_grad and ".layers." in n}
    assert trains == {str(frozen.config.num_hidden_layers - 1)}
    assert any(isinstance(m, FakeQuantLinear) for m in method_of("qat").adapt(load(), MethodConfig()).modules())
    assert any(isinstance(m, BitLinear) for m in method_of("bitnet").adapt(load(), MethodConfig()).modules())
    full = load()
    assert method_of("full").adapt(full, MethodConfig()) is full and all(p.requires_grad for p in full.parameters())


def test_save_weights_puts_each_method_where_it_loads_back(tmp_path, tiny_model_dir):
    from tunelab.models.load import load_causal_lm
    from tunelab.runs.rundir import RunDir

    model, tok, _ = load_causal_lm(str(tiny_model_dir), dtype="fp32", device="cpu")
    qat = method_of("qat").adapt(model, MethodConfig(qat_format="int8"))
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.save_weights(qat, "qat", tok, source="tiny")
    assert (rd.quantized_dir / "manifest.json").is_file() and not rd.model_dir.exists()


def test_the_qlora_inference_base_is_its_4bit_base(tiny_model_dir):
    from tunelab.models.load import load_causal_lm
    from tunelab.quant.nn import QuantLinear

    model = load_causal_lm(str(tiny_model_dir), dtype="fp32", device="cpu")[0]
    model = method_of("qlora").inference_base(model, MethodConfig(name="qlora", quant_type="nf4"))
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 14
    plain = load_causal_lm(str(tiny_model_dir), dtype="fp32", device="cpu")[0]
    assert method_of("lora").inference_base(plain, MethodConfig()) is plain


# ---- memory terms -------------------------------------------------------------------------------------------------
def test_memory_terms_give_the_estimates_of_before():
    """Every row (name, bytes, how) of full / lora / qlora on one shape under six settings, as the estimator
    computed them when it compared method names."""
    from tunelab.memory.estimator import estimate

    before = json.loads((HERE / "estimates_before.json").read_text(encoding="utf-8"))
    assert len(before["estimates"]) == 18
    for e in before["estimates"]:
        now = estimate(before["shape"], e["method"], batch=2, seq=64, detect=False, **e["settings"])
        assert now.total == e["total"], (e["method"], e["settings"])
        assert [list(r) for r in now.rows] == e["rows"], (e["method"], e["settings"])
        assert (now.bytes_per_param_text, now.block_text) == (e["bytes_per_param_text"], e["block_text"])


def test_the_estimator_keeps_its_methods_and_estimates_the_others_as_full():
    from tunelab.memory.estimator import METHODS as ESTIMATED
    from tunelab.memory.estimator import estimate

    assert ESTIMATED == ("full", "lora", "qlora")
    with pytest.raises(TunelabError, match="unknown method 'freeze'"):
        estimate({"hidden_size": 64}, "freeze", detect=False)
    assert method_of("qlora").memory.base_bits == pytest.approx(4.127, abs=1e-3)


def test_base_before_step_only_for_bitsandbytes():
    from tunelab.methods import Base

    assert Base(None, None, None, "tunelab", torch.device("cpu")).before_step is None
    assert Base(None, None, None, "bitsandbytes", torch.device("cpu")).before_step is not None
