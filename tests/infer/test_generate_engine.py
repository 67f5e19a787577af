"""The Generator decodes on tunelab's engine: the same greedy replies as transformers' generate,
streaming that joins to the reply, the Python chat API, and one-line errors."""

from __future__ import annotations

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.infer.generate import Generator

CONVS = [[{"role": "user", "content": t}] for t in ("hello there", "what is a tensor?", "a much longer question "
                                                     "about the learning rate and warmup")]


@pytest.fixture(scope="module")
def gens(tiny_model_dir):
    torch.manual_seed(0)
    ours = Generator.from_model(str(tiny_model_dir), template="chatml", system="Be brief.", dtype="fp32")
    with torch.no_grad():  # sharpen the random model so greedy paths have no near-ties
        for p in ours.model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    hf = Generator(ours.model, ours.tokenizer, ours.template, engine="hf")
    return ours, hf


def test_engine_is_used_and_replies_equal_transformers(gens):
    ours, hf = gens
    assert ours.engine_name == "tunelab" and hf.engine_name == "transformers"
    assert ours.reply_batch(CONVS, max_new_tokens=24) == hf.reply_batch(CONVS, max_new_tokens=24)


def test_stream_joins_to_the_reply(gens):
    ours, _ = gens
    pieces = list(ours.stream(CONVS[1], max_new_tokens=24))
    assert "".join(pieces).strip() == ours.reply(CONVS[1], max_new_tokens=24)


def test_chat_api(gens):
    ours, _ = gens
    assert ours.chat("hello there", max_new_tokens=16) == ours.reply(CONVS[0], max_new_tokens=16)
    it = ours.chat(CONVS[0], stream=True, max_new_tokens=16)
    assert not isinstance(it, str)
    assert "".join(it).strip() == ours.reply(CONVS[0], max_new_tokens=16)


def test_seeded_sampling_repeats(gens):
    ours, _ = gens
    a = ours.reply(CONVS[2], max_new_tokens=16, temperature=1.0, seed=3)
    assert a == ours.reply(CONVS[2], max_new_tokens=16, temperature=1.0, seed=3)


def test_prompt_longer_than_the_context_is_one_line(gens, tiny_model_dir, capsys):
    from tunelab.cli.main import run

    long = [{"role": "user", "content": "word " * 3000}]
    for gen in gens:  # the engine and transformers' generate
        with pytest.raises(TunelabError, match="context"):
            gen.reply(long, max_new_tokens=4)
    with pytest.raises(SystemExit) as e:
        run(["generate", str(tiny_model_dir), "-p", "word " * 3000])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "context" in err[0]


def test_unknown_engine_and_weights_on_hf_are_refused(tiny_model_dir, capsys):
    from tunelab.cli.main import run

    with pytest.raises(TunelabError, match="unknown decode engine"):
        Generator(None, None, None, engine="vllm")
    with pytest.raises(SystemExit) as e:
        run(["generate", str(tiny_model_dir), "-p", "hi", "--engine", "hf", "--weights", "int8"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights" in err[0]


@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_other_weights_decode_on_the_engine(gens, weights):
    ours, _ = gens
    gen = Generator(ours.model, ours.tokenizer, ours.template, weights=weights)
    assert gen.engine_name == "tunelab"
    assert gen.engine.w.dtype == (torch.bfloat16 if weights == "bf16" else torch.float32)
    assert (gen.engine.w.blocks[0].qkv.packed is not None) == (weights == "int8")
    assert isinstance(gen.reply(CONVS[0], max_new_tokens=8), str)
