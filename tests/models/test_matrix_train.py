"""The architecture matrix, training side: per family, LoRA and QLoRA (NF4 base) runs that change the
adapter on every linear layer of the blocks, `tunelab merge` equal to peft's `merge_and_unload` of the
same adapter tensor by tensor, and the decode engine's greedy replies equal to transformers'
`generate` (or its clean fallback, whose engine_reason is the outcome). See test_matrix_expected.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_matrix_expected import CONVS, NAMES, cli, expect, matrix_runs, outcome_of  # noqa: F401 (fixture)

NEW_TOKENS = 16
MERGE_TOL = 1e-5  # fp32: the merged weights are W0 + (alpha/r) B A summed in fp32 on both sides


def _block_linears(model) -> set[str]:
    """Names of the nn.Linear layers inside the decoder blocks (what method.target_modules all-linear adapts)."""
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}


def _check_trained(run, method: str) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tunelab.models.registry import resolve
    from tunelab.runs.load import load_run

    rd, _ = load_run(run)
    assert rd.config.method.name == method
    if method == "qlora":
        assert rd.config.method.quant_type == "nf4", rd.config.method.quant_type
    losses = [json.loads(s)["loss"] for s in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in s and "eval" not in s]
    assert losses and all(math.isfinite(x) for x in losses), "no finite training loss"
    sd = load_file(str(rd.adapter_dir / "adapter_model.safetensors"))
    adapted = {k.split(".lora_")[0].removeprefix("base_model.model.") for k in sd}
    base = AutoModelForCausalLM.from_pretrained(resolve(rd.config.model.name).path)
    linears = _block_linears(base)
    assert adapted == linears, f"adapted {sorted(adapted - linears)[:3]}, missed {sorted(linears - adapted)[:3]}"
    zero_b = [k for k, v in sd.items() if "lora_B" in k and not v.abs().max() > 0]
    assert not zero_b, f"{len(zero_b)} B matrices still zero (the adapter did not train): {zero_b[0]}"
    _check_loss(run)


def _check_loss(run) -> None:
    """The training loss (losses.reply_loss_sum: the head on learned positions only, a shared opening
    run once, the MLPs skipping padding) is transformers' own loss of the trained model on a batch
    with all three: two rows sharing a 24-token opening, 6 and 11 learned tokens, right padding."""
    from tunelab.losses import reply_loss_sum
    from tunelab.runs.load import load_run_model

    model, _, _ = load_run_model(run, device="cpu")
    model.float().eval()
    g = torch.Generator().manual_seed(0)
    opening = torch.randint(5, 400, (24,), generator=g)
    rows = [torch.cat([opening, torch.randint(5, 400, (n,), generator=g)]) for n in (6, 11)]
    ids = torch.zeros(2, 35, dtype=torch.long)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)], labels[i, 24:len(r)] = r, 1, r[24:]
    with torch.no_grad():
        total, count = reply_loss_sum(model, ids, mask, labels)
        want = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    got = total.item() / count
    assert count == 6 + 11 and abs(got - want) < 1e-4, f"training loss {got:.5f} != transformers' {want:.5f}"


@pytest.mark.parametrize("family", NAMES)
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_train(family, method, matrix_runs):
    expect(family, method, outcome_of(lambda: _check_trained(matrix_runs(family, method), method)))


def _peft_reference(run):
    """peft's merge_and_unload of the run's adapter on its base in fp32 (qlora: the NF4 base decoded,
    as it was during training): {name: tensor}."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunelab.adapters.qlora import quantize_base
    from tunelab.export.merge import dequantize_linears
    from tunelab.models.registry import resolve
    from tunelab.runs.load import load_run

    rd, _ = load_run(run)
    base = AutoModelForCausalLM.from_pretrained(resolve(rd.config.model.name).path, dtype=torch.float32)
    if rd.config.method.name == "qlora":
        quantize_base(base, rd.config.method.quant_type, rd.config.method.double_quant)
        dequantize_linears(base, torch.float32)
    merged = PeftModel.from_pretrained(base, str(rd.adapter_dir)).merge_and_unload()
    return merged.state_dict()


def _check_merge(runs: list, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    for run in runs:
        out = tmp_path / run.name
        cli("merge", run, "--out", out)
        got = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
        ref = _peft_reference(run)
        assert set(got) == set(ref), f"{run.name}: tensors differ: {sorted(set(got) ^ set(ref))[:3]}"
        for k, v in ref.items():
            err = (got[k].float() - v.float()).abs().max().item()
            assert err <= MERGE_TOL, f"{run.name}: {k} differs from peft's merge by {err:.2e}"


@pytest.mark.parametrize("family", NAMES)
def test_merge_equals_peft(family, matrix_runs, tmp_path):
    runs = [matrix_runs(family, m) for m in ("lora", "qlora")]
    expect(family, "merge", outcome_of(lambda: _check_merge(runs, tmp_path)))


def _check_engine(run):
    """None when the engine decodes the run (3 prompts in one batch, 16 tokens each, no stop token so
    that an early EOS cannot make the comparison trivial) with the greedy tokens of transformers'
    `generate` (each prompt alone, no padding); the engine_reason when the Generator falls back to
    transformers (which must then reply)."""
    import copy

    from tunelab.infer.generate import Generator
    from tunelab.infer.sampling import Sampler

    ours = Generator.from_run(run, device="cpu")
    if ours.engine_name != "tunelab":
        assert ours.engine_reason, "fell back to transformers without an engine_reason"
        assert isinstance(ours.reply(CONVS[0], max_new_tokens=4), str)
        return f"falls back to generate: {ours.engine_reason}"
    prompts = [ours.prompt_ids(c)[0] for c in CONVS]
    got = ours.engine.generate([p.tolist() for p in prompts], NEW_TOKENS, frozenset(), Sampler(0.0, 1.0, None))
    config = copy.deepcopy(ours.model.generation_config)
    config.eos_token_id = None  # as many tokens as the engine: no stop
    want = []
    with torch.no_grad():
        for p in prompts:
            out = ours.model.generate(input_ids=p[None], attention_mask=torch.ones_like(p)[None], do_sample=False,
                                      max_new_tokens=NEW_TOKENS, generation_config=config,
                                      pad_token_id=ours.tokenizer.pad_token_id)
            want.append(out[0, len(p):].tolist())
    assert [len(w) for w in want] == [NEW_TOKENS] * len(CONVS)
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    assert first is None, f"engine tokens {got[first][:6]} != generate's {want[first][:6]} (prompt {first})"
    return None


@pytest.mark.parametrize("family", NAMES)
def test_decode_engine(family, matrix_runs):
    expect(family, "engine", outcome_of(lambda: _check_engine(matrix_runs(family, "lora"))))
