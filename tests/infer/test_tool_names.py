"""infer/tool_names.py: once a call is open, its function name can only spell one of the tools, in
every tool syntax; nothing else is constrained; greedy and sampled draws keep to the allowed tokens,
the sampled ones with the model's own odds among them."""

from __future__ import annotations

import collections

import pytest
import torch

from tunelab.data.tool_syntax import SYNTAXES
from tunelab.infer.sampling import Sampler
from tunelab.infer.tool_names import ToolNameConstraint, token_texts

NAMES = ["get_weather", "get_time", "open_ticket"]
# a toy vocabulary: each id's text
TEXTS = ["get_", "weather", "time", "coat", '"', '", "', "open_ticket", "x", "get_weather\"", "<|end|>", "get_wea"]


def _opened(syntax: str, texts=TEXTS) -> ToolNameConstraint:
    syn = SYNTAXES[syntax]
    c = ToolNameConstraint.for_syntax(NAMES, syn, texts)
    opening = syn.format_calls([{"name": "MARK", "arguments": {}}])
    c.push("Sure. " + opening[:opening.index("MARK")])
    return c


@pytest.mark.parametrize("syntax", list(SYNTAXES))
def test_a_name_is_spelled_from_the_tools_only(syntax):
    c = _opened(syntax)
    assert c.active
    allowed = [t for t in TEXTS if c._after(c.state, t) is not None]
    assert allowed == ["get_", "open_ticket", "get_weather\"", "get_wea"]  # prefixes, or whole and closed
    c.push("get_")
    assert [t for t in TEXTS if c._after(c.state, t) is not None] == ["weather", "time"]
    c.push("time")
    assert c.allows(TEXTS.index('"')) and c.allows(TEXTS.index('", "')) and not c.allows(TEXTS.index("x"))
    c.push('", "')
    assert not c.active and c.allows(TEXTS.index("coat"))  # the arguments are the model's


def test_nothing_is_constrained_before_a_call_or_in_the_arguments():
    syn = SYNTAXES["hermes"]
    c = ToolNameConstraint.for_syntax(NAMES, syn, TEXTS)
    c.push('I would write {"name": "')  # no <tool_call> yet: plain content
    assert not c.active and c.allows(TEXTS.index("coat"))
    c.push('x"} <tool_call>\n{"name": "get_time", "arguments": {"name": "')  # a "name" argument: depth 2
    assert not c.active and c.allows(TEXTS.index("coat"))
    c.push('Bob"}}\n</tool_call>\n<tool_call>\n{"name": "')  # a second call: constrained again
    assert c.active and not c.allows(TEXTS.index("coat"))


def test_greedy_takes_the_best_allowed_token_and_keeps_an_allowed_choice():
    c = _opened("hermes")
    logits = torch.zeros(len(TEXTS))
    logits[TEXTS.index("coat")], logits[TEXTS.index("get_wea")], logits[TEXTS.index("get_")] = 9.0, 5.0, 4.0
    assert c.pick(logits, Sampler(), TEXTS.index("coat")) == TEXTS.index("get_wea")
    assert c.pick(logits, Sampler(), TEXTS.index("get_")) == TEXTS.index("get_")


def test_sampling_draws_the_model_odds_restricted_to_the_allowed_tokens():
    c = _opened("hermes")
    logits = torch.full((len(TEXTS),), -30.0)
    p = {"coat": 0.5, "get_": 0.3, "open_ticket": 0.2}  # coat is refused: get_ 0.6, open_ticket 0.4
    for t, q in p.items():
        logits[TEXTS.index(t)] = torch.tensor(q).log()
    sampler = Sampler(1.0, seed=0)
    got = collections.Counter()
    for _ in range(2000):
        choice = int(sampler.pick(logits.unsqueeze(0))[0])
        got[TEXTS[c.pick(logits, sampler, choice)]] += 1
    assert set(got) == {"get_", "open_ticket"}
    assert abs(got["get_"] / 2000 - 0.6) < 0.04  # binomial sd sqrt(0.24 / 2000) = 0.011


def test_the_real_tokenizer_decodes_one_text_per_id(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = token_texts(tok)
    assert len(texts) == len(tok)
    ids = tok("get_weather", add_special_tokens=False)["input_ids"]
    assert "".join(texts[i] for i in ids) == "get_weather"


def test_the_batcher_decodes_a_tool_name_on_a_random_model(tiny_model_dir):
    """A random tiny Llama, its reply opened inside a call's name: greedy and sampled rows both
    write one of the tools' names and close it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.infer.decode import DecodeEngine
    from tunelab.serve.batcher import Batcher, GenRequest

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    engine = DecodeEngine.from_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval())
    texts = token_texts(tok)
    syn = SYNTAXES["hermes"]
    opening = '<tool_call>\n{"name": "'
    prompt = tok("Weather? " + opening, add_special_tokens=False)["input_ids"]
    rows = []
    batcher = Batcher(engine, start=False)
    for sampler in (Sampler(), Sampler(1.0, seed=1), Sampler(1.0, seed=2)):
        c = ToolNameConstraint.for_syntax(NAMES, syn, texts)
        c.push(opening)
        events: list = []
        rows.append(events)
        batcher.submit(GenRequest(prompt, 24, frozenset(), sampler, events.append, constraint=c))
    batcher.drain()
    for events in rows:
        text = "".join(texts[v] for k, v in events if k == "token")
        assert any(text.startswith(n + '"') for n in NAMES), text
    free = engine.generate([prompt], 12)[0]  # unconstrained, the random model writes no tool name
    assert not any("".join(texts[t] for t in free).startswith(n + '"') for n in NAMES)


def test_the_engine_and_the_generator_spell_a_tool_name_per_row(tiny_model_dir):
    """The in-process path (`tunelab eval` on a tools file): DecodeEngine.generate with one constraint per
    row, and a Generator whose `tool_names` are set, as eval/tool_calls.generate_replies sets them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.data.templates import build_template
    from tunelab.infer.decode import DecodeEngine
    from tunelab.infer.generate import Generator

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    engine = DecodeEngine.from_model(model)
    texts = token_texts(tok)
    syn = SYNTAXES["hermes"]
    opening = '<tool_call>\n{"name": "'
    prompts = [tok(q + opening, add_special_tokens=False)["input_ids"] for q in ("Weather? ", "A ticket, please: ")]
    rows = []
    for sampler in (Sampler(), Sampler(1.0, seed=4)):
        cons = [ToolNameConstraint.for_syntax(NAMES, syn, texts) for _ in prompts]
        for c in cons:
            c.push(opening)
        rows += engine.generate(prompts, 24, sampler=sampler, constraints=cons)  # a name may come a letter a token
    for new in rows:
        text = "".join(texts[t] for t in new)
        assert any(text.startswith(n + '"') for n in NAMES), text
    gen = Generator(model, tok, build_template("chatml", tok))
    gen.tool_names = NAMES
    cons = gen._name_constraints(2)
    assert len(cons) == 2 and cons[0].start == "<tool_call>" and cons[0] is not cons[1]
    gen.tool_names = None
    assert gen._name_constraints(2) is None
