"""QLoRA must learn on CPU even after the base ran in eval mode without grad (the bitsandbytes trap)."""

import json

import pytest
import torch

from tunelab.config import from_dict


def qlora_cfg(tmp_path, model_dir, backend):
    return from_dict({
        "model": {"name": str(model_dir)},
        "data": {"train": "examples/data/tunebot/train.jsonl", "validation": "examples/data/tunebot/validation.jsonl"},
        "method": {"name": "qlora", "r": 8, "quant_backend": backend},
        "train": {"lr": 5e-3, "epochs": 2, "batch_size": 8, "precision": "bf16"},
        "output": {"dir": str(tmp_path / "runs"), "name": backend},
        # validation loss + sampling BEFORE training: an eval-mode, no-grad forward of the 4-bit base
        "eval": {"from_validation": 2, "max_new_tokens": 4},
    })


def _check_learned(out):
    from safetensors.torch import load_file

    rows = [json.loads(x) for x in (out.run_dir / "metrics.jsonl").read_text().splitlines()]
    gnorms = [r["grad_norm"] for r in rows if "grad_norm" in r]
    assert min(gnorms) > 0, "LoRA got no gradient"
    assert out.val_after < out.val_before - 0.05
    sd = load_file(str(out.run_dir / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in sd.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)  # B starts at zero: it moved


def test_tunelab_nf4_backend_learns_after_eval(tmp_path, tiny_model_dir):
    from tunelab.quant.nn import QuantLinear
    from tunelab.train.recipes.sft import run_sft

    out = run_sft(qlora_cfg(tmp_path, tiny_model_dir, "tunelab"), quiet=True)
    _check_learned(out)
    # the saved run reloads onto a 4-bit base with the adapter
    from tunelab.infer.generate import Generator

    gen = Generator.from_run(out.run_dir)
    assert any(isinstance(m, QuantLinear) for m in gen.model.modules())


def test_bitsandbytes_cpu_backend_learns_after_eval(tmp_path, tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    from tunelab.train.recipes.sft import run_sft

    out = run_sft(qlora_cfg(tmp_path, tiny_model_dir, "bitsandbytes"), quiet=True)
    _check_learned(out)


def test_bnb_repacking_is_undone(tiny_model_dir):
    """bitsandbytes' CPU inference repacking (done on AVX-512-BF16 CPUs by an eval-mode no-grad forward)
    is reversed by restore_bnb_training_layout: same bytes back, and LoRA gets its gradient."""
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.functional import _convert_weight_packed_for_cpu
    from bitsandbytes.nn import Linear4bit
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.adapters.qlora import bnb_quantization_config, restore_bnb_training_layout

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, device_map={"": "cpu"},
                                                 quantization_config=bnb_quantization_config("nf4", True, torch.bfloat16))
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    original = [m.weight.data.clone() for m in layers]
    for m in layers:  # what Linear4bit.forward does on such CPUs in eval mode without grad
        m.weight.data, m.weight.quant_state = _convert_weight_packed_for_cpu(m.weight.data, m.weight.quant_state)
    assert all(m.weight.quant_state.packing_format_for_cpu for m in layers)
    assert restore_bnb_training_layout(model) == len(layers)
    assert all(torch.equal(m.weight.data.view(torch.uint8).reshape(-1), o.view(torch.uint8).reshape(-1))
               for m, o in zip(layers, original))
    assert restore_bnb_training_layout(model) == 0
    model.train()
    ids = torch.tensor([[5, 6, 7, 8]])
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]  # B gets the first gradient (A waits for B != 0)
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_quantized_model_releases_the_checkpoint_file(tiny_model_dir, tmp_path):
    """After quantize_base nothing points into the memory-mapped safetensors file, so its pages
    (the fp32 weights quantization read) leave the process."""
    import gc
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from tunelab.adapters.qlora import quantize_base

    import shutil

    own = tmp_path / "own-copy"  # a file no other test's model maps
    shutil.copytree(tiny_model_dir, own)
    weights = str(own / "model.safetensors")

    def mapped() -> bool:
        return any(weights in line for line in Path("/proc/self/maps").read_text().splitlines())

    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc (Linux)")
    model = AutoModelForCausalLM.from_pretrained(own, dtype=torch.float32)
    gc.collect()
    if not mapped():
        pytest.skip("this transformers version does not memory-map checkpoints")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "proj" not in n}
    quantize_base(model)
    gc.collect()
    assert not mapped()
    for n, p in model.named_parameters():  # the unquantized weights are unchanged copies
        if n in before:
            assert torch.equal(p, before[n]), n
