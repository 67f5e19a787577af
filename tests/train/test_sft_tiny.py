"""End to end on a tiny random Llama: trains, loss drops, run dir complete, adapter is plain PEFT."""

import json

import pytest
import torch

from tunelab.config import from_dict
from tunelab.errors import TunelabError

TRAIN = "examples/data/tunebot/train.jsonl"
VAL = "examples/data/tunebot/validation.jsonl"


def tiny_cfg(tmp_path, model_dir, **over):
    d = {
        "model": {"name": str(model_dir)},
        "data": {"train": TRAIN, "validation": VAL, "system": "You are TuneBot."},
        "method": {"name": "lora", "r": 8},
        "train": {"lr": 5e-3, "epochs": 2, "batch_size": 8},
        "output": {"dir": str(tmp_path / "runs"), "name": "t"},
        "eval": {"from_validation": 2, "max_new_tokens": 4},
    }
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v}
    return from_dict(d)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    from tunelab.train.recipes.sft import run_sft

    tmp = tmp_path_factory.mktemp("sft")
    cfg = tiny_cfg(tmp, tiny_model_dir)
    return cfg, run_sft(cfg, quiet=True)


def test_lora_trains_and_validation_loss_drops(lora_run):
    cfg, out = lora_run
    assert out.val_after < out.val_before - 0.1
    losses = [r["loss"] for r in map(json.loads, (out.run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == out.result.steps == 22  # ceil(84/8)=11 steps x 2 epochs
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert out.trainable.startswith("trainable: ")


def test_run_directory_is_complete(lora_run):
    _, out = lora_run
    names = {p.name for p in out.run_dir.iterdir()}
    assert {"config.yaml", "template.json", "adapter", "metrics.jsonl", "report.md", "loss.png", "DONE"} <= names
    assert {p.name for p in (out.run_dir / "adapter").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    report = (out.run_dir / "report.md").read_text()
    assert "Validation loss" in report and "| base |" in report and "loss.png" in report


def test_finished_run_is_not_overwritten(lora_run):
    from tunelab.train.recipes.sft import run_sft

    cfg, _ = lora_run
    with pytest.raises(TunelabError, match="already finished"):
        run_sft(cfg, quiet=True)


def test_plain_peft_loads_adapter_with_same_logits(lora_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunelab.infer.generate import Generator

    _, out = lora_run
    gen = Generator.from_run(out.run_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = PeftModel.from_pretrained(base, str(out.run_dir / "adapter")).eval()
    ids = gen.prompt_ids([{"role": "user", "content": "Great video, thanks!"}])
    with torch.no_grad():
        a = gen.model(input_ids=ids).logits
        b = plain(input_ids=ids).logits
        c = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)  # the adapter changes the model


def test_generate_uses_saved_template(lora_run):
    from tunelab.infer.generate import Generator

    _, out = lora_run
    gen = Generator.from_run(out.run_dir)
    assert gen.template.system == "You are TuneBot."
    text = gen.reply([{"role": "user", "content": "hello"}], max_new_tokens=5)
    assert isinstance(text, str)
    pieces = list(gen.stream([{"role": "user", "content": "hello"}], max_new_tokens=5))
    assert "".join(pieces).strip() == text


def test_full_and_freeze_methods_save_whole_model(tmp_path, tiny_model_dir):
    from tunelab.train.recipes.sft import run_sft

    for method in ("full", "freeze"):
        cfg = tiny_cfg(tmp_path, tiny_model_dir, method={"name": method, "freeze_layers": 1},
                       train={"epochs": 1, "lr": 1e-3}, output={"name": method}, eval={"from_validation": 0})
        out = run_sft(cfg, quiet=True)
        assert (out.run_dir / "model" / "config.json").exists() and (out.run_dir / "DONE").exists()
        assert out.val_after < out.val_before


def test_selective_head_loss_equals_full_logits_loss(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunelab.losses import reply_loss_sum, token_nll_sum

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.randint(5, 400, (3, 17))
    mask = torch.ones_like(ids)
    mask[0, 12:] = 0
    labels = ids.clone()
    labels[:, :6] = -100
    labels[0, 12:] = -100
    a, na = reply_loss_sum(model, ids, mask, labels)
    b, nb = token_nll_sum(model(input_ids=ids, attention_mask=mask).logits, labels)
    assert na == nb == 2 * 11 + 6  # rows 1-2: positions 6..16; row 0: 6..11
    assert torch.allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize("method, fmt", [("qat", "int4"), ("bitnet", "int8")])
def test_qat_and_bitnet_train_and_export_packed_model(tmp_path, tiny_model_dir, method, fmt):
    from tunelab.infer.generate import Generator
    from tunelab.quant.nn import QuantLinear
    from tunelab.train.recipes.sft import run_sft

    cfg = tiny_cfg(tmp_path, tiny_model_dir, method={"name": method, "qat_format": fmt},
                   train={"epochs": 1, "lr": 2e-3, "precision": "fp32"}, output={"name": method},
                   eval={"from_validation": 0})  # fp32: reply_nll below runs without autocast
    out = run_sft(cfg, quiet=True)
    assert out.val_after < out.val_before
    assert (out.run_dir / "quantized" / "manifest.json").exists() and (out.run_dir / "DONE").exists()
    gen = Generator.from_run(out.run_dir)
    layers = [m for m in gen.model.modules() if isinstance(m, QuantLinear)]
    assert layers and {m.fmt for m in layers} == {"int4" if method == "qat" else "ternary"}
    # the exported model scores validation exactly as the trained (fake-quantized) one did
    from tunelab.data.dataset import load_splits
    from tunelab.data.tokenize import tokenize_all
    from tunelab.losses import reply_nll

    _, val = load_splits(cfg)
    val_tok, _ = tokenize_all(val, gen.template, gen.tokenizer, cfg.data.max_length)
    assert abs(reply_nll(gen.model, val_tok, gen.tokenizer.pad_token_id) - out.val_after) < 1e-3


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lora_learns_in_both_precisions(tmp_path, tiny_model_dir, precision):
    """`precision: auto` is fp32 on AVX2 CPUs and bf16 autocast on AVX-512-BF16 ones: both paths run here."""
    from tunelab.train.recipes.sft import run_sft

    cfg = tiny_cfg(tmp_path, tiny_model_dir, train={"precision": precision}, output={"name": precision},
                   eval={"from_validation": 0})
    out = run_sft(cfg, quiet=True)
    assert out.val_after < out.val_before - 0.1
    assert (out.run_dir / "DONE").exists()
