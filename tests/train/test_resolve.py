"""train/resolve.py: every auto settled once, before anything loads, to what training used before it existed."""

from __future__ import annotations

import pytest
import torch

from tunelab.config import from_dict
from tunelab.train.resolve import RESOLVED, resolve, settle_recorded

PLENTY = ("cpu", 64 * 2**30, 64 * 2**30)
TINY = ("cpu", 2**20, 2**20)  # 1 MiB free


def _cfg(model="x", method="lora", task="sft", **train):
    return from_dict({"task": task, "model": {"name": str(model), "device": "cpu"}, "data": {"train": "t.jsonl"},
                      "method": {"name": method}, "train": train})


def _memory(monkeypatch, free):
    monkeypatch.setattr("tunelab.memory.available.detect_memory", lambda dev: free)


def test_precision_is_the_autocast_training_picks():
    from tunelab.runtime.precision import autocast_dtype

    got = resolve(_cfg()).train.precision
    want = autocast_dtype("auto", torch.device("cpu"))
    assert got in ("fp32", "bf16") and autocast_dtype(got, torch.device("cpu")) == want
    assert resolve(_cfg(precision="bf16")).train.precision == "bf16"
    assert resolve(_cfg(precision="fp32")).train.precision == "fp32"


def test_fp16_is_a_precision_of_its_own():
    from tunelab.runtime.precision import autocast_dtype

    assert _cfg(precision="fp16").train.precision == "fp16"
    assert autocast_dtype("fp16", torch.device("cpu")) == torch.float16


def test_keep_freed_memory_auto_is_on_and_explicit_values_stay():
    assert resolve(_cfg()).train.keep_freed_memory is True
    assert resolve(_cfg(keep_freed_memory=False)).train.keep_freed_memory is False


def test_checkpointing_is_the_decision_made_on_the_loaded_model(tiny_model_dir, monkeypatch):
    """Before the model loads (its config.json) as after (the loaded model's config), at any memory."""
    from transformers import AutoModelForCausalLM

    from tunelab.train.activation_ckpt import wants_checkpointing

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for free in (PLENTY, TINY):
        _memory(monkeypatch, free)
        cfg = _cfg(tiny_model_dir)
        assert resolve(cfg).train.gradient_checkpointing is wants_checkpointing(cfg, model) is (free is TINY)


def test_checkpointing_by_method_task_and_setting(tiny_model_dir, monkeypatch):
    _memory(monkeypatch, TINY)
    assert resolve(_cfg(tiny_model_dir, "qlora")).train.gradient_checkpointing is True
    assert resolve(_cfg(tiny_model_dir, gradient_checkpointing=False)).train.gradient_checkpointing is False
    for task in ("dpo", "reward"):  # TRL tasks never estimated: auto was off for them
        assert resolve(_cfg(tiny_model_dir, task=task)).train.gradient_checkpointing is False
    assert resolve(_cfg("no/such-model")).train.gradient_checkpointing is False  # no estimate: off, as before


def test_the_methods_autos_and_nothing_else(tiny_model_dir):
    q = resolve(_cfg(tiny_model_dir, "qlora"))
    assert (q.method.quant_type, q.method.quant_backend) == ("nf4", "tunelab")  # a safetensors base on CPU
    lo = _cfg(tiny_model_dir)
    r = resolve(lo)
    assert r.model_dump(exclude={"train"}) == lo.model_dump(exclude={"train"})
    assert r.data.template == "auto" and r.model.dtype == "auto"  # settled by template.json / at load time


def test_input_untouched_and_idempotent(tiny_model_dir):
    cfg = _cfg(tiny_model_dir, "qlora")
    before = cfg.model_dump()
    once = resolve(cfg)
    assert cfg.model_dump() == before
    assert resolve(once).model_dump() == once.model_dump()
    assert "auto" not in [once.model_dump()[s][k] for s, k in RESOLVED]


def test_settle_recorded_fills_autos_of_a_run_recorded_before_resolve():
    now = resolve(_cfg())
    saved = _cfg().model_dump(mode="json")
    settled = settle_recorded(saved, now)
    assert settled["train"] == now.model_dump(mode="json")["train"] and saved["train"]["precision"] == "auto"
    explicit = {**saved, "train": {**saved["train"], "precision": "bf16"}}
    assert settle_recorded(explicit, now)["train"]["precision"] == "bf16"  # only autos are filled


def test_settle_recorded_gives_settings_added_later_their_default():
    from tunelab.train.recipes._common import comparable_config, config_changes

    now = resolve(_cfg(task="classify"))
    saved = now.model_dump(mode="json")
    del saved["train"]["metric_for_best"], saved["classify"]["class_weights"]  # a config.yaml from before them
    settled = settle_recorded(saved, now)
    assert settled["train"]["metric_for_best"] == "macro_f1" and settled["classify"]["class_weights"] == "auto"
    assert config_changes(comparable_config(settled), comparable_config(now.model_dump(mode="json"))) == []
    changed = now.model_copy(deep=True)
    changed.classify.class_weights = "none"  # a new setting set away from its default is a change
    assert config_changes(comparable_config(settle_recorded(saved, changed)),
                          comparable_config(changed.model_dump(mode="json"))) == ["classify.class_weights: 'auto' -> 'none'"]


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_a_trained_run_records_the_resolved_config_and_reads_it_back(tiny_run, tmp_path, method):
    import yaml

    from tunelab import runs

    path = tiny_run(tmp_path, f"resolved-{method}", method=method, steps=1)
    saved = yaml.safe_load((path / "config.yaml").read_text())
    assert [saved[s][k] for s, k in RESOLVED if s == "train"] == ["fp32", saved["train"]["gradient_checkpointing"], True]
    assert isinstance(saved["train"]["gradient_checkpointing"], bool)
    run = runs.open(path)
    assert run.config.train.precision == "fp32" and run.config.method.name == method
    if method == "qlora":
        assert (saved["method"]["quant_type"], saved["method"]["quant_backend"]) == ("nf4", "tunelab")
        assert run.config.train.gradient_checkpointing is True
    assert resolve(run.config).model_dump() == run.config.model_dump()  # nothing left to settle
