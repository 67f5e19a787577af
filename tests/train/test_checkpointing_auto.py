"""train.gradient_checkpointing: auto -> on for qlora, on for others only when the estimate does not fit."""

from tunelab.config import from_dict
from tunelab.train import activation_ckpt as checkpointing


def _cfg(method="lora", gc="auto", batch=8):
    return from_dict({"model": {"name": "x"}, "data": {"train": "t.jsonl"}, "method": {"name": method},
                      "train": {"gradient_checkpointing": gc, "batch_size": batch}})


def test_explicit_setting_wins():
    assert checkpointing.wants_checkpointing(_cfg(gc=True)) is True
    assert checkpointing.wants_checkpointing(_cfg("qlora", gc=False)) is False


def test_auto_is_on_for_qlora_and_off_for_lora_without_a_model():
    assert checkpointing.wants_checkpointing(_cfg("qlora")) is True
    assert checkpointing.wants_checkpointing(_cfg("lora")) is False


def test_auto_follows_the_memory_estimate(tiny_model_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    monkeypatch.setattr("tunelab.memory.available.detect_memory", lambda dev: ("cpu", 64 * 2**30, 64 * 2**30))
    assert checkpointing.wants_checkpointing(_cfg("lora"), model) is False
    monkeypatch.setattr("tunelab.memory.available.detect_memory", lambda dev: ("cpu", 2**20, 2**20))  # 1 MiB free
    assert checkpointing.wants_checkpointing(_cfg("lora"), model) is True


def test_default_lr_depends_on_the_method():
    assert _cfg("lora").train.lr == 4e-4 and _cfg("qlora").train.lr == 4e-4
    assert _cfg("full").train.lr == 2e-4
    explicit = from_dict({"model": {"name": "x"}, "data": {"train": "t.jsonl"}, "train": {"lr": 1e-3}})
    assert explicit.train.lr == 1e-3
