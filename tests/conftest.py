"""Shared fixtures: an isolated TUNELAB_HOME per session, a tiny random Llama (bare or with LoRA),
benchmark scripts as modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread for the tests and every process they start: on tensors as small as the tiny
# models' an OpenMP barrier costs more than the second core gives back, and on 2 shared cores two
# threads ran the tiny trainings up to 7x slower (slow tests on the real model are not affected:
# they run with -m slow, where this default applies too unless OMP_NUM_THREADS is set).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + BPE tokenizer saved as a local HF folder."""
    from tunelab.models.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def tiny_lora(tiny_model_dir):
    """tiny_lora(dropout=0.0, quant=False) -> the tiny Llama with a fresh LoRA (r=4, every linear
    layer; on an NF4 base with `quant`) whose B matrices are nudged off zero (seed 1, std 0.05), so
    the adapter changes outputs and A gets gradients."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import quantize_base
    from tunelab.config import MethodConfig

    def make(dropout: float = 0.0, quant: bool = False):
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        if quant:
            quantize_base(base)
        model = apply_lora(base, MethodConfig(name="qlora" if quant else "lora", r=4, dropout=dropout))
        torch.manual_seed(1)
        for k, p in model.named_parameters():
            if "lora_B" in k:
                torch.nn.init.normal_(p, std=0.05)
        return model

    return make


@pytest.fixture(scope="session")
def load_benchmark():
    """load_benchmark("sentiment") -> benchmarks/sentiment.py imported as a module (slow tests reuse them)."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
