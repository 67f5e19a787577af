"""Real-model checks on the embedded SmolLM2-135M (slow: run with `pytest -m slow tests/quant`)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from tunelab.errors import TunelabError
    from tunelab.models.load import load_causal_lm

    try:
        model, tok, _ = load_causal_lm("smollm2-135m-instruct", dtype="fp32", device="cpu")
    except TunelabError as e:
        pytest.skip(f"embedded model unavailable: {e}")
    return model, tok


def test_real_weight_bytes_equal_bitsandbytes(smollm2):
    F = pytest.importorskip("bitsandbytes.functional")
    from tunelab.quant import codecs

    w = smollm2[0].model.layers[3].mlp.down_proj.weight.detach()
    for fmt in ("nf4", "fp4"):
        ref, state = F.quantize_4bit(w, blocksize=64, quant_type=fmt)
        ours = codecs.quantize_4bit(w, fmt, 64)
        assert torch.equal(ours.packed, ref.reshape(-1)) and torch.equal(ours.absmax, state.absmax)


def test_real_model_nf4_beats_fp4_beats_int4_on_weight_sqnr(smollm2):
    from tunelab.quant import codecs

    w = smollm2[0].model.layers[10].self_attn.q_proj.weight.detach()
    sqnr = {}
    for fmt in ("nf4", "fp4", "int4"):
        err = codecs.dequantize_4bit(codecs.quantize_4bit(w, fmt, 64)) - w
        sqnr[fmt] = 10 * torch.log10(w.pow(2).sum() / err.pow(2).sum()).item()
    assert sqnr["nf4"] > sqnr["int4"] > 15 and sqnr["nf4"] > sqnr["fp4"] > 15


def test_real_model_ptq_round_trip(smollm2, tmp_path):
    import copy

    import tunelab.quant
    from tunelab.quant import ptq

    model = copy.deepcopy(smollm2[0])
    ptq.quantize(model, "nf4", double_quant=True, rest_dtype=torch.bfloat16)
    manifest = ptq.save(model, tmp_path, smollm2[1])
    assert manifest["bits_per_quantized_param"] == pytest.approx(4.127, abs=0.001)
    back = tunelab.quant.load(tmp_path)
    ids = smollm2[1]("def add(a, b):\n    return", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, back(ids).logits)
