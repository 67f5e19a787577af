"""PTQ checkpoints (bit-exact reload) and the `tunelab quantize` command."""

from __future__ import annotations

import json

import pytest
import torch

import tunelab.quant
from tunelab.cli.main import run
from tunelab.errors import TunelabError
from tunelab.quant import ptq
from tunelab.quant.nn import QuantLinear


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("fmt,dq", [("nf4", True), ("fp4", False), ("int4", False), ("int8", False), ("ternary", False)])
def test_save_load_bit_exact(tiny_model_dir, tmp_path, fmt, dq):
    model, tok = _model(tiny_model_dir)
    ptq.quantize(model, fmt, double_quant=dq, rest_dtype=torch.bfloat16)
    manifest = ptq.save(model, tmp_path, tok, source="tiny")
    assert manifest["formats"] == [fmt] and len(manifest["layers"]) == 14
    assert (tmp_path / "model.safetensors").stat().st_size == manifest["bytes_on_disk"]
    back = tunelab.quant.load(tmp_path)
    a, b = model.state_dict(), back.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert sum(isinstance(m, QuantLinear) for m in back.modules()) == 14
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, back(ids).logits)


def test_packed_checkpoint_is_smaller(tiny_model_dir, tmp_path):
    model, tok = _model(tiny_model_dir)
    ptq.quantize(model, "nf4", rest_dtype=torch.bfloat16)
    m = ptq.save(model, tmp_path, tok)
    assert m["bits_per_quantized_param"] == pytest.approx(4.5, abs=0.01)
    assert m["quantized_weight_bytes"] == pytest.approx(m["quantized_params"] * 4.5 / 8, rel=0.01)


def test_bad_inputs_raise_tunelab_error(tiny_model_dir, tmp_path):
    model, _ = _model(tiny_model_dir)
    with pytest.raises(TunelabError, match="unknown format"):
        ptq.quantize(model, "int3")
    with pytest.raises(TunelabError, match="int8"):
        ptq.quantize(model, "nf4", calibrate="mse")
    with pytest.raises(TunelabError, match="not a tunelab quantized checkpoint"):
        ptq.load(tmp_path)


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run(argv)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_quantize_default_and_run_command(tiny_model_dir, tmp_path, capsys):
    code, out, _ = _cli(["quantize", str(tiny_model_dir), "--format", "nf4", "--double-quant", "--out", str(tmp_path / "a")], capsys)
    assert code == 0 and "MB on disk" in out and "nf4 + double quant" in out
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["double_quant"] is True
    code, out, _ = _cli(["quantize", "run", str(tiny_model_dir), "-f", "int8", "--calibrate", "percentile",
                         "--out", str(tmp_path / "b"), "--json"], capsys)
    assert code == 0 and json.loads(out)["format"] == "int8"
    model = tunelab.quant.load(tmp_path / "b")
    assert model.model.layers[0].mlp.down_proj.fmt == "int8"


@pytest.mark.parametrize("argv,needle", [
    (["--format", "nf5"], "--format: unknown format 'nf5'"),
    (["--format", "ternary", "--double-quant"], "--double-quant"),
    (["--format", "nf4", "--calibrate", "mse"], "--calibrate"),
    (["--format", "nf4", "--skip", "layers", "--skip", "lm_head"], "no Linear layer left"),
])
def test_cli_errors_are_one_line_exit_2(tiny_model_dir, tmp_path, capsys, argv, needle):
    code, _, err = _cli(["quantize", str(tiny_model_dir), *argv, "--out", str(tmp_path / "x")], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err


def test_cli_inspect_writes_report(tiny_model_dir, tmp_path, capsys):
    text = tmp_path / "held_out.txt"
    text.write_text("Python lists, dicts and sets are built-in types. " * 60)
    code, out, _ = _cli(["quantize", "inspect", str(tiny_model_dir), "--eval", str(text), "--formats",
                         "bf16,nf4,nf4+dq,int4,ternary", "--seq-len", "32", "--max-tokens", "128",
                         "--out", str(tmp_path / "rep")], capsys)
    assert code == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| nf4+dq |" in md and "| ternary |" in md
    rows = {r["format"]: r for r in json.loads((tmp_path / "rep" / "report.json").read_text())}
    assert rows["bf16"]["delta_vs_bf16"] == 0.0
    assert rows["nf4"]["bits_per_param"] - rows["nf4+dq"]["bits_per_param"] > 0.3
    assert rows["ternary"]["sqnr_db"] < rows["int4"]["sqnr_db"] < rows["bf16"]["sqnr_db"]
    assert (tmp_path / "rep" / "report.png").stat().st_size > 1000
    code, _, err = _cli(["quantize", "inspect", str(tiny_model_dir), "--eval", str(text), "--formats", "nf4+xx"], capsys)
    assert code == 2 and "unknown format" in err


def test_report_sizes_and_errors(tiny_model_dir):
    from tunelab.data.tokenize import TokenizedExample
    from tunelab.eval import quantization

    model, _ = _model(tiny_model_dir)
    total = sum(p.numel() for p in model.parameters())  # tied lm_head counted once
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and n != "lm_head")
    windows = [TokenizedExample(r.tolist(), r.tolist()) for r in torch.randint(0, model.config.vocab_size, (2, 16))]
    bf16 = quantization.evaluate_format(model, "bf16", windows)
    fp32 = quantization.evaluate_format(model, "fp32", windows)
    nf4 = quantization.evaluate_format(model, "nf4", windows)
    assert fp32.size_mb == pytest.approx(total * 4 / 1e6)
    assert bf16.size_mb == pytest.approx(total * 2 / 1e6)
    assert nf4.size_mb == pytest.approx(((total - linear) * 2 + linear * 4.5 / 8) / 1e6)
    assert fp32.weight_mse == 0.0 and bf16.weight_mse < nf4.weight_mse
    assert nf4.sqnr_db == pytest.approx(10 * torch.log10(torch.tensor(1 / nf4.weight_mse * sum(
        (m.weight.double() ** 2).sum().item() for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n != "lm_head") / linear)).item(), rel=1e-4)
    assert isinstance(model.model.layers[0].mlp.up_proj, torch.nn.Linear)  # the base is not modified
