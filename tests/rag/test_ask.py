"""Prompt building, citations and generation (a fake generator; the real one when present)."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from tunelab.errors import TunelabError
from tunelab.rag import Answer, ask, build_messages
from tunelab.rag.ask import check_citations
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
    assert isinstance(ans, Answer) and ans.raw == gen.text
    # [7] is not a retrieved passage: removed from the text shown, and flagged
    assert ans.text == "Prune in late winter [1], not in summer. See also [1]."
    (messages, max_new, temp), = gen.calls
    assert (max_new, temp) == (40, 0.0)
    assert "[1] guide.md § Roses\nPrune roses in late winter" in messages[0]["content"]
    assert ans.cited == [1] and ans.invalid_citations == [7] and ans.cited_by == "model"
    out = ans.format()
    assert out.startswith(ans.text) and "\nSources:\n[1] guide.md § Roses (similarity 0." in out
    assert "removed citations of passages that do not exist: [7]" in out
    assert len(ans.sources()) == 2
    d = ans.to_dict()
    assert d["cited"] == [1] and d["sources"][0]["section"] == "Roses"
    assert d["cited_by"] == "model" and d["invalid_citations"] == [7] and d["raw_answer"] == gen.text


def _hits(n):
    return [Hit(i, 0.9, 0.9, f"text {i}", f"doc{i}.md", f"Part {i}" if i != 2 else "", "", 0, 6)
            for i in range(1, n + 1)]


def test_passages_are_numbered_one_to_k_in_the_prompt():
    content = build_messages("q?", _hits(3))[0]["content"]
    assert [int(n) for n in re.findall(r"^\[(\d+)\] doc", content, re.M)] == [1, 2, 3]
    assert "Cite the passages you use with their numbers in square brackets" in content


def test_no_citation_adds_a_sources_line_naming_the_passages():
    ans = Answer("q", "Keys are rotated monthly.", _hits(3))
    assert ans.cited_by == "added" and ans.cited == [] and ans.raw == "Keys are rotated monthly."
    assert ans.text == ("Keys are rotated monthly.\n\n"
                        "Sources: [1] doc1.md § Part 1; [2] doc2.md; [3] doc3.md § Part 3")
    out = ans.format()  # the CLI shows the full list (with similarities) once, not the line twice
    assert out.startswith("Keys are rotated monthly.\n\nSources (the answer cites none")
    assert out.count("doc1.md") == 1 and "[2] doc2.md (similarity 0.90)" in out
    assert Answer("q", "It is [2].", _hits(3)).cited_by == "model"
    assert Answer("q", "", _hits(1)).text == "Sources: [1] doc1.md § Part 1"
    nothing = Answer("q", "I do not know.", [])
    assert nothing.cited_by == "none" and nothing.text == "I do not know."


def test_out_of_range_citations_are_removed_and_flagged():
    ans = Answer("q", "Rotate keys [9]. Use the CLI [1, 9][3]. Index a[7] stays.", _hits(3))
    assert ans.text == "Rotate keys. Use the CLI [1][3]. Index a[7] stays."
    assert ans.cited == [1, 3] and ans.invalid_citations == [9] and ans.cited_by == "model"
    only_bad = Answer("q", "Rotate keys [9].", _hits(3))  # nothing valid left: the sources are added
    assert only_bad.invalid_citations == [9] and only_bad.cited_by == "added"
    assert only_bad.text.startswith("Rotate keys.\n\nSources: [1] doc1.md § Part 1")
    assert check_citations("[4] x\ny [0]", 3) == ("x\ny", [], [4, 0])


def test_ask_adds_sources_when_the_model_cites_nothing(built_kb):
    _, kb = built_kb
    ans = ask(None, "How do I prune my roses?", generator=FakeGenerator("In late winter."), directory=kb, k=2)
    assert ans.cited_by == "added" and ans.text.startswith("In late winter.\n\nSources: [1] guide.md § Roses; [2] ")
    assert ans.to_dict()["cited_by"] == "added"


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
