"""Continuous batching on the decode engine: rows of different lengths and different adapters, joining
and leaving between steps, decode exactly as each would alone (greedy, fp32); text assembly."""

from __future__ import annotations

import pytest
import torch

from tunelab.infer.decode import DecodeEngine
from tunelab.infer.sampling import Sampler
from tunelab.infer.weights import Lora
from tunelab.serve.batcher import Batcher, GenRequest


@pytest.fixture(scope="module")
def engines(tiny_model_dir):
    """(engine with adapters "a" and "b" named on it, {None|"a"|"b": reference engine with only that one})."""
    from transformers import AutoModelForCausalLM

    from tests.conftest import nudged_lora

    model = nudged_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    model.eval()
    served = DecodeEngine.from_model(model, merge=False)  # one base; its adapter moved to the named slots
    refs = {None: DecodeEngine.from_model(model, merge=False), "a": DecodeEngine.from_model(model, merge=False),
            "b": DecodeEngine.from_model(model, merge=False)}
    for blk_s, blk_0, blk_a, blk_b in zip(served.w.blocks, refs[None].w.blocks, refs["a"].w.blocks,
                                          refs["b"].w.blocks):
        for slot in ("qkv", "o", "gate_up", "down"):
            lo = getattr(blk_s, slot).loras.pop()
            other = Lora(lo.at, -2 * lo.bt)  # a second, different adapter
            getattr(blk_s, slot).named.update(a=lo, b=other)
            getattr(blk_0, slot).loras.clear()
            getattr(blk_a, slot).loras[:] = [lo]
            getattr(blk_b, slot).loras[:] = [other]
    return served, refs


def _collect(events: list):
    return lambda ev: events.append(ev)


def test_mixed_adapters_in_one_batch_equal_each_alone(engines):
    served, refs = engines
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 400, (n,), generator=g).tolist() for n in (3, 11, 7, 1, 16, 5)]
    adapters = [None, "a", "b", "a", None, "b"]
    budgets = [12, 20, 6, 15, 9, 18]
    batcher = Batcher(served, max_batch=4, start=False)  # 6 requests, 4 rows: two join as others leave
    events = [[] for _ in prompts]
    for p, a, n, ev in zip(prompts, adapters, budgets, events):
        batcher.submit(GenRequest(p, n, frozenset(), Sampler(), _collect(ev), a))
    batcher.drain()
    assert batcher.max_rows_seen == 4
    assert len({tuple(refs[a].generate([prompts[1]], 20)[0]) for a in refs}) == 3  # the adapters matter
    for p, a, n, ev in zip(prompts, adapters, budgets, events):
        want = refs[a].generate([p], n)[0]
        assert [v for k, v in ev if k == "token"] == want, a
        assert ev[-1] == ("end", "length")


def test_stop_ids_cancel_and_seeded_sampling(engines):
    served, refs = engines
    prompt = [5, 6, 7, 8]
    first = refs[None].generate([prompt], 8)[0]
    stop = frozenset({first[3]})
    ev_stop, ev_cancel, ev_s1, ev_s2 = [], [], [], []
    batcher = Batcher(served, start=False)
    batcher.submit(GenRequest(prompt, 8, stop, Sampler(), _collect(ev_stop)))
    cancelled = GenRequest(prompt, 8, frozenset(), Sampler(), _collect(ev_cancel))
    cancelled.cancel()
    batcher.submit(cancelled)
    batcher.submit(GenRequest(prompt, 10, frozenset(), Sampler(0.9, 0.9, seed=3), _collect(ev_s1), "a"))
    batcher.submit(GenRequest([9, 9] + prompt, 10, frozenset(), Sampler(0.9, 0.9, seed=3), _collect(ev_s2)))
    batcher.drain()
    toks = [v for k, v in ev_stop if k == "token"]
    assert toks == first[: first.index(first[3]) + 1] and ev_stop[-1] == ("end", "stop")
    assert ev_cancel == [("end", "cancelled")]
    again = []
    b2 = Batcher(served, start=False)  # the same seed in the same batch: the same tokens
    b2.submit(GenRequest(prompt, 8, stop, Sampler(), _collect([])))
    b2.submit(GenRequest(prompt, 10, frozenset(), Sampler(0.9, 0.9, seed=3), _collect(again), "a"))
    b2.submit(GenRequest([9, 9] + prompt, 10, frozenset(), Sampler(0.9, 0.9, seed=3), _collect([])))
    b2.drain()
    assert ev_s1 == again and len(ev_s1) == 11 and ev_s1 != ev_s2


def test_text_assembler_holds_back_stop_strings(tiny_model_dir):
    from transformers import AutoTokenizer

    from tunelab.serve.textstream import TextAssembler

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok("The quick brown fox jumps over the lazy dog", add_special_tokens=False)["input_ids"]
    asm = TextAssembler(tok, ["lazy"], frozenset())
    pieces = [asm.push(i) for i in ids]
    assert "".join(pieces) == "The quick brown fox jumps over the " and asm.stopped
    whole = TextAssembler(tok, [], frozenset({tok.eos_token_id}))
    text = "".join(whole.push(i) for i in ids + [tok.eos_token_id, ids[0]])
    assert text == tok.decode(ids) and whole.stopped and whole.n_tokens == len(ids) + 1
