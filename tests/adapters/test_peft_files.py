"""adapters/peft_files.py: one reader of a PEFT LoRA adapter's files, one set of refusals, for every consumer
(runs.load.attach_adapter, serve/adapters.py, export/lora_gguf.py; the streamed merge goes through attach)."""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch

from tunelab.errors import TunelabError

REFUSALS = [  # (name, edit of adapter_config.json, words the one-line message holds)
    ("prefix", {"peft_type": "PREFIX_TUNING"}, "not LoRA"),
    ("dora", {"use_dora": True}, "DoRA"),
    ("mts", {"modules_to_save": ["score"]}, "saves whole modules (modules_to_save score)"),
    ("bias", {"bias": "all"}, "trains biases"),
    ("lora_bias", {"lora_bias": True}, "trains biases"),
    ("fifo", {"fan_in_fan_out": True}, "fan_in_fan_out"),
    ("tokens", {"trainable_token_indices": [1, 2]}, "trainable_token_indices"),
]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model_dir):
    """(adapter folder, the peft model it was saved from): the tiny Llama's LoRA, r=4, alpha 32, B nudged."""
    from transformers import AutoModelForCausalLM

    from tunelab.adapters.lora import apply_lora
    from tunelab.config import MethodConfig

    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), MethodConfig(name="lora", r=4))
    torch.manual_seed(1)
    for k, p in model.named_parameters():
        if "lora_B" in k:
            torch.nn.init.normal_(p, std=0.05)
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(str(out))
    return out, model.eval()


def _variant(src, tmp_path, name, config=None, state=None):
    from safetensors.torch import load_file, save_file

    dst = tmp_path / name
    shutil.copytree(src, dst)
    if config:
        cfg = json.loads((dst / "adapter_config.json").read_text())
        cfg.update(config)
        (dst / "adapter_config.json").write_text(json.dumps(cfg))
    if state:
        sd = load_file(str(dst / "adapter_model.safetensors"))
        state(sd)
        save_file(sd, str(dst / "adapter_model.safetensors"))
    return dst


def _peft_layers(model):
    """{module name as the reader names it: the peft LoRA layer}."""
    return {name.removeprefix("base_model.model."): mod for name, mod in model.named_modules()
            if hasattr(mod, "lora_A") and "default" in mod.lora_A}


def test_reads_config_tensors_and_scaling_as_peft_has_them(adapter):
    from tunelab.adapters.peft_files import read_adapter

    path, model = adapter
    files = read_adapter(path)
    layers = _peft_layers(model)
    assert set(files.modules) == set(layers) and files.config["r"] == 4
    assert sorted(files.target_modules) == sorted(model.peft_config["default"].target_modules)
    for name, layer in layers.items():
        a, b = files.modules[name]
        assert torch.equal(a, layer.lora_A["default"].weight) and torch.equal(b, layer.lora_B["default"].weight)
        assert files.rank(name) == 4 and files.alpha(name) == 32.0
        assert files.scaling(name) == layer.scaling["default"] == 8.0


def test_rslora_and_alpha_pattern_scale_per_module(adapter, tmp_path):
    from tunelab.adapters.peft_files import read_adapter

    path, _ = adapter
    files = read_adapter(_variant(path, tmp_path, "rs", {"use_rslora": True, "alpha_pattern": {"q_proj": 8}}))
    q = next(n for n in files.modules if n.endswith("q_proj"))
    v = next(n for n in files.modules if n.endswith("v_proj"))
    assert files.scaling(q) == 8 / math.sqrt(4) and files.scaling(v) == 32 / math.sqrt(4)


@pytest.mark.parametrize("name,edit,words", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_each_refusal_is_one_line_naming_the_folder(adapter, tmp_path, name, edit, words):
    from tunelab.adapters.peft_files import read_adapter, read_adapter_config

    bad = _variant(adapter[0], tmp_path, name, edit)
    for read in (read_adapter_config, read_adapter):
        with pytest.raises(TunelabError, match=re.escape(words)) as e:
            read(bad)
        assert e.value.where == str(bad) and e.value.hint and "\n" not in str(e.value)


def test_tensor_refusals(adapter, tmp_path):
    from tunelab.adapters.peft_files import read_adapter

    path, _ = adapter

    def embed(sd):
        sd["base_model.model.model.embed_tokens.lora_embedding_A"] = torch.zeros(4, 8)

    def other(sd):
        sd["base_model.model.model.norm.weight"] = torch.zeros(8)

    def lonely(sd):
        del sd[next(k for k in sd if "lora_B" in k)]

    for name, edit, words in [("embed", embed, "embedding or lm_head"), ("other", other, "not a LoRA A/B matrix"),
                              ("lonely", lonely, "lora_A without lora_B")]:
        with pytest.raises(TunelabError, match=re.escape(words)):
            read_adapter(_variant(path, tmp_path, name, state=edit))
    pickled = _variant(path, tmp_path, "bin")
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(TunelabError, match="no adapter_model.safetensors"):
        read_adapter(pickled)
    broken = _variant(path, tmp_path, "broken")
    (broken / "adapter_config.json").write_text("{")
    with pytest.raises(TunelabError, match="unreadable adapter_config.json"):
        read_adapter(broken)
    (broken / "adapter_config.json").write_text("{}")
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(TunelabError, match="unreadable adapter_model.safetensors"):
        read_adapter(broken)


def test_a_consumers_hint_replaces_the_default_one(adapter, tmp_path):
    from tunelab.adapters.peft_files import HINT, read_adapter

    bad = _variant(adapter[0], tmp_path, "dora", {"use_dora": True})
    with pytest.raises(TunelabError) as e:
        read_adapter(bad)
    assert e.value.hint == HINT
    with pytest.raises(TunelabError) as e:
        read_adapter(bad, hint="export with --to gguf")
    assert e.value.hint == "export with --to gguf"


@pytest.mark.parametrize("name,edit,words", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_every_consumer_refuses_the_same(adapter, tmp_path, tiny_model_dir, name, edit, words):
    """attach (generate, chat, merge, the streamed merge) and serve refuse what the reader refuses."""
    from transformers import AutoModelForCausalLM

    from tunelab.runs.load import attach_adapter
    from tunelab.serve.adapters import check_adapter_config
    from tunelab.serve.errors import APIError

    bad = _variant(adapter[0], tmp_path, name, edit)
    with pytest.raises(TunelabError, match=re.escape(words)):
        attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), bad)
    with pytest.raises(APIError) as e:
        check_adapter_config("run", bad)
    assert e.value.status == 400 and words in e.value.message and str(bad) not in e.value.message


def test_attach_gives_the_saved_models_logits(adapter, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunelab.runs.load import attach_adapter

    path, model = adapter
    got = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), path).eval()
    ids = torch.arange(3, 19).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(got(ids).logits, model(ids).logits)


def test_serve_fuses_what_peft_computes(adapter, tiny_model_dir):
    """The engine's fused LoRA of a block's q/k/v: at @ bt = (s B A)^T of each projection, side by side."""
    from transformers import AutoModelForCausalLM

    from tunelab.infer.weights import read_weights
    from tunelab.serve.adapters import read_adapter

    path, model = adapter
    w = read_weights(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    loras = read_adapter("run", path, w)
    layers = _peft_layers(model)
    for i in range(len(w.blocks)):
        lo = loras[(i, "qkv")]
        want = torch.cat([(layers[f"model.layers.{i}.self_attn.{p}_proj"].lora_B["default"].weight
                           @ layers[f"model.layers.{i}.self_attn.{p}_proj"].lora_A["default"].weight * 8.0).T
                          for p in "qkv"], dim=1)
        torch.testing.assert_close(lo.at @ lo.bt, want, rtol=1e-5, atol=1e-6)
