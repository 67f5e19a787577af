"""`tunelab quantize` streams a local safetensors checkpoint (ptq.stream_quantize): the same tensors as
quantizing the whole model loaded in fp32."""

from __future__ import annotations

import pytest
import torch

from tunelab.cli.main import run
from tunelab.quant import ptq
from tunelab.quant.nn import QuantLinear


@pytest.mark.parametrize("fmt,dq,calibrate", [("nf4", True, None), ("int4", False, None), ("int8", False, "mse"),
                                              ("ternary", False, None)])
def test_stream_quantize_equals_quantize_of_a_whole_load(tiny_model_dir, fmt, dq, calibrate):
    from transformers import AutoModelForCausalLM

    whole = ptq.quantize(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32), fmt, dq,
                         calibrate=calibrate, rest_dtype=torch.bfloat16)
    streamed = ptq.stream_quantize(tiny_model_dir, fmt, dq, calibrate=calibrate, rest_dtype=torch.bfloat16)
    a, b = whole.state_dict(), streamed.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert sum(isinstance(m, QuantLinear) for m in streamed.modules()) == 14


def test_quantize_cli_streams_and_reloads(tiny_model_dir, tmp_path, monkeypatch):
    import tunelab.quant

    called = []
    original = ptq.stream_quantize
    monkeypatch.setattr(ptq, "stream_quantize", lambda *a, **k: called.append(a) or original(*a, **k))
    with pytest.raises(SystemExit) as e:
        run(["quantize", str(tiny_model_dir), "--format", "nf4", "--double-quant", "--out", str(tmp_path / "q")])
    assert e.value.code == 0
    assert called, "a local safetensors folder is quantized streamed"
    back = tunelab.quant.load(tmp_path / "q")
    assert sum(isinstance(m, QuantLinear) for m in back.modules()) == 14


def test_stream_quantize_refuses_skipping_everything(tiny_model_dir):
    from tunelab.errors import TunelabError

    with pytest.raises(TunelabError, match="no Linear layer left"):
        ptq.stream_quantize(tiny_model_dir, "nf4", skip=("self_attn", "mlp", "lm_head"))
