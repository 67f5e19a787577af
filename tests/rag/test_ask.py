"""Prompt building, citations and generation (a fake generator; the real one when present)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tunelab.errors import TunelabError
from tunelab.rag import Answer, ask, build_messages
from tunelab.rag.retrieve import Hit


class FakeGenerator:
    """Records the messages and answers with a fixed text."""

    def __init__(self, text="Prune in late winter [1], not in summer [7]. See also [1]."):
        self.text = text
        self.calls = []

    def reply(self, messages, max_new_tokens=256, temperature=0.0):
        self.calls.append((messages, max_new_tokens, temperature))
        return self.text


def test_prompt_holds_numbered_passages_and_question():
    hits = [Hit(1, 0.9, 0.9, "Prune roses in late winter.", "guide.md", "Roses", "Gardening > Roses", 0, 27),
            Hit(2, 0.5, 0.5, "Water tomatoes.", "guide.md", "Tomatoes", "Gardening > Tomatoes", 30, 45)]
    msgs = build_messages("When to prune?", hits)
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    c = msgs[0]["content"]
    assert "[1] guide.md § Roses\nPrune roses in late winter.\n\n[2] guide.md § Tomatoes\nWater tomatoes." in c
    assert c.endswith("Question: When to prune?") and "[1]" in c.split("Context:")[0]
    assert "no passage" in build_messages("q", [])[0]["content"]
    custom = build_messages("q?", hits[:1], prompt="CTX {context} Q {question}")
    assert custom[0]["content"] == "CTX [1] guide.md § Roses\nPrune roses in late winter. Q q?"
    with pytest.raises(TunelabError, match="no \\{question\\} slot"):
        build_messages("q", hits, prompt="only {context}")


def test_ask_with_injected_generator(built_kb):
    _, kb = built_kb
    gen = FakeGenerator()
    ans = ask(None, "How do I prune my roses?", generator=gen, directory=kb, k=2, max_new_tokens=40)
    assert isinstance(ans, Answer) and ans.text == gen.text
    (messages, max_new, temp), = gen.calls
    assert (max_new, temp) == (40, 0.0)
    assert "[1] guide.md § Roses\nPrune roses in late winter" in messages[0]["content"]
    assert ans.cited == [1]  # [7] is not a retrieved passage
    out = ans.format()
    assert out.startswith(gen.text) and "\nSources:\n[1] guide.md § Roses (similarity 0." in out
    assert len(ans.sources()) == 2
    d = ans.to_dict()
    assert d["cited"] == [1] and d["sources"][0]["section"] == "Roses"


def test_run_template_context_slot_is_used(built_kb, tmp_path):
    _, kb = built_kb
    run = tmp_path / "run"
    run.mkdir()
    (run / "template.json").write_text(json.dumps({"extra": {"rag_prompt": "Use: {context}\nAsk: {question}"}}))
    gen = FakeGenerator("ok")
    ans = ask(None, "Where does lava come from?", run=run, generator=gen, directory=kb, k=1)
    assert ans.messages[0]["content"].startswith("Use: [1] page.html § Volcanoes\n")
    assert ans.messages[0]["content"].endswith("Ask: Where does lava come from?")
    with pytest.raises(TunelabError, match="either a run or a model"):
        ask(None, "q", run=run, model="x", generator=gen, directory=kb)


@pytest.mark.skipif(importlib.util.find_spec("tunelab.infer.generate") is None,
                    reason="tunelab.infer.generate not written yet")
def test_ask_with_real_generator(built_kb, tiny_model_dir):
    from tunelab.infer.generate import Generator

    _, kb = built_kb
    gen = Generator.from_model(str(tiny_model_dir))
    ans = ask(None, "How do I prune my roses?", generator=gen, directory=kb, k=2, max_new_tokens=4)
    assert isinstance(ans.text, str) and [h.rank for h in ans.hits] == [1, 2]
    assert ans.hits[0].section == "Roses"
