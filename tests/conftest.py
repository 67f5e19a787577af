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


def nudged_lora(base, name: str = "lora", r: int = 4, dropout: float = 0.0, seed: int = 1):
    """`base` with a fresh LoRA (every linear layer) whose B matrices are nudged off zero (std 0.05,
    seeded), so the adapter changes outputs and A gets gradients."""
    import torch

    from tunelab.adapters.lora import apply_lora
    from tunelab.config import MethodConfig

    model = apply_lora(base, MethodConfig(name=name, r=r, dropout=dropout))
    torch.manual_seed(seed)
    for k, p in model.named_parameters():
        if "lora_B" in k:
            torch.nn.init.normal_(p, std=0.05)
    return model


@pytest.fixture
def tiny_lora(tiny_model_dir):
    """tiny_lora(dropout=0.0, quant=False) -> the tiny Llama with a fresh LoRA (r=4, every linear
    layer; on an NF4 base with `quant`) whose B matrices are nudged off zero (seed 1, std 0.05), so
    the adapter changes outputs and A gets gradients."""
    from transformers import AutoModelForCausalLM

    from tunelab.adapters.qlora import quantize_base

    def make(dropout: float = 0.0, quant: bool = False):
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        if quant:
            quantize_base(base)
        return nudged_lora(base, "qlora" if quant else "lora", dropout=dropout)

    return make


TUNEBOT_TRAIN = "examples/data/tunebot/train.jsonl"
TUNEBOT_VAL = "examples/data/tunebot/validation.jsonl"


def _first_lines(path: str, n: int) -> str:
    return "".join(Path(path).read_text(encoding="utf-8").splitlines(keepends=True)[:n])


@pytest.fixture(scope="session")
def tiny_run(tiny_model_dir):
    """tiny_run(tmp, name, ...) -> the run folder of a short LoRA run of the tiny Llama on the first
    `n_train` / `n_val` TuneBot examples (r=4, alpha=16, lr 2e-2, batch 4, fp32, no evaluation passes).

    fp32, not auto: every comparison made on these runs is without autocast, and pinning it keeps the
    trained adapter the same on every CPU kind. The data goes to tmp/data, the run to tmp/<runs>/<name>.
    """
    from tunelab.config import from_dict
    from tunelab.train.recipes.sft import run_sft

    def make(tmp: Path, name: str, *, n_train: int = 16, n_val: int = 1, steps: int = 3, method: str = "lora",
             system: str | None = "You are TuneBot.", runs: str = "runs", eval_extra: dict | None = None) -> Path:
        data = tmp / "data"
        data.mkdir(parents=True, exist_ok=True)
        (data / "train.jsonl").write_text(_first_lines(TUNEBOT_TRAIN, n_train))
        (data / "val.jsonl").write_text(_first_lines(TUNEBOT_VAL, n_val))
        data_cfg = {"train": str(data / "train.jsonl"), "validation": str(data / "val.jsonl")}
        if system is not None:
            data_cfg["system"] = system
        cfg = from_dict({
            "model": {"name": str(tiny_model_dir)},
            "data": data_cfg,
            "method": {"name": method, "r": 4, "alpha": 16},
            "train": {"lr": 2e-2, "max_steps": steps, "batch_size": 4, "eval_every": "never", "precision": "fp32"},
            "output": {"dir": str(tmp / runs), "name": name},
            "eval": {"from_validation": 0, **(eval_extra or {})},
        })
        return run_sft(cfg, quiet=True).run_dir

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
