"""`tunelab merge`: merged weights compute what base+adapter computed (LoRA and QLoRA), exports
load in plain transformers, and bad inputs fail with TunelabError."""

from __future__ import annotations

import json

import pytest
import torch

from tunelab.errors import TunelabError



@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_run):
    """A 3-step run per method on 16 train / 1 validation examples (the validation passes dominate the time)."""
    tmp = tmp_path_factory.mktemp("merge")
    return {m: tiny_run(tmp, m, method=m) for m in ("lora", "qlora")}


def _ids():
    g = torch.Generator().manual_seed(0)
    return torch.randint(5, 400, (2, 24), generator=g)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_merged_logits_match_base_plus_adapter(runs, method, tmp_path):
    from transformers import AutoModelForCausalLM

    from tunelab.export.merge import merge_run
    from tunelab.runs.load import load_run_model

    res = merge_run(runs[method], tmp_path / "merged", dtype="fp32")
    assert res.method == method and res.merged == 2 * 7  # 2 blocks x 7 projections
    assert res.dequantized == (14 if method == "qlora" else 0)
    # reference: the run as trained (qlora: the 4-bit base decoded in fp32 each forward + the adapter)
    ref_model, _, _ = load_run_model(runs[method], with_adapter=True, device="cpu")
    ref_model.float().eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in k for k in merged.state_dict())  # plain transformers weights
    ids = _ids()
    ref, got = _logits(ref_model, ids), _logits(merged, ids)
    assert (ref - got).abs().max().item() < 1e-3
    # and the adapter mattered: the base alone is measurably different
    base, _, _ = load_run_model(runs[method], with_adapter=False, device="cpu")
    assert (_logits(base.float().eval(), ids) - ref).abs().max().item() > 1e-2
    info = json.loads((tmp_path / "merged" / "tunelab_merge.json").read_text())
    assert info["method"] == method and info["dtype"] == "fp32"


def test_requantizing_the_merge_would_change_the_model(runs, tmp_path):
    """Why we dequantize first: NF4-quantizing the merged weights (what merging into 4-bit does)
    moves the logits far more than our merge does."""
    from transformers import AutoModelForCausalLM

    from tunelab.export.merge import merge_run
    from tunelab.quant.nn import quantize_model
    from tunelab.runs.load import load_run_model

    merge_run(runs["qlora"], tmp_path / "m")
    ref_model, _, _ = load_run_model(runs["qlora"], device="cpu")
    ids = _ids()
    ref = _logits(ref_model.float().eval(), ids)
    requant = quantize_model(AutoModelForCausalLM.from_pretrained(tmp_path / "m"), "nf4").eval()
    assert (_logits(requant, ids) - ref).abs().max().item() > 1e-2


def test_bf16_export_loads_with_bf16_weights_and_chat_template(runs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.export.merge import merge_run
    from tunelab.data.templates import Template

    merge_run(runs["lora"], tmp_path / "bf16", dtype="bf16")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    tok = AutoTokenizer.from_pretrained(tmp_path / "bf16")
    msgs = [{"role": "user", "content": "hello"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    template = Template.load(runs["lora"] / "template.json")
    assert text == template.prompt_text(msgs)  # the run's system prompt and format travel with the model
    assert "You are TuneBot." in text
    assert not list(tmp_path.glob(".bf16.tmp-*"))  # temp folder renamed away


def test_full_run_is_exported(runs, tmp_path, tiny_model_dir):
    """A full/freeze run keeps its whole model in model/: re-saved in the requested dtype."""
    import shutil

    import yaml
    from transformers import AutoModelForCausalLM

    from tunelab.export.merge import merge_run

    run = tmp_path / "full"
    run.mkdir()
    cfg = yaml.safe_load((runs["lora"] / "config.yaml").read_text())
    cfg["method"]["name"] = "full"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copy(runs["lora"] / "template.json", run / "template.json")
    shutil.copytree(tiny_model_dir, run / "model")  # stands in for the trained weights
    (run / "DONE").write_text("x")
    res = merge_run(run, tmp_path / "out", dtype="bf16")
    assert res.merged == res.dequantized == 0 and res.method == "full"
    ref = AutoModelForCausalLM.from_pretrained(run / "model").to(torch.bfloat16)
    got = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype="auto")
    for (k, a), (_, b) in zip(ref.state_dict().items(), got.state_dict().items()):
        assert b.dtype == torch.bfloat16 and torch.equal(a, b), k


def test_errors(runs, tmp_path):
    from tunelab.export.merge import merge_run

    with pytest.raises(TunelabError, match="not a tunelab run"):
        merge_run(tmp_path, tmp_path / "o1")
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "config.yaml").write_text((runs["lora"] / "config.yaml").read_text())
    with pytest.raises(TunelabError, match="incomplete"):
        merge_run(incomplete, tmp_path / "o2")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(TunelabError, match="not empty"):
        merge_run(runs["lora"], busy)
    assert (busy / "keep.txt").exists()
    with pytest.raises(TunelabError, match="unknown dtype"):
        merge_run(runs["lora"], tmp_path / "o3", dtype="int3")
    merge_run(runs["lora"], busy, overwrite=True)  # --overwrite replaces it
    assert (busy / "config.json").exists() and not (busy / "keep.txt").exists()


def test_cli_merge(runs, tmp_path):
    from typer.testing import CliRunner

    from tunelab.cli.main import _mount, app

    _mount()
    out = CliRunner().invoke(app, ["merge", str(runs["qlora"]), "--out", str(tmp_path / "cli"), "--dtype", "bf16"])
    assert out.exit_code == 0, out.output
    assert "14 NF4 layers dequantized, then 14 adapters merged" in out.output
    assert (tmp_path / "cli" / "model.safetensors").exists()
