"""recall@k / MRR, gold matching and qa.jsonl validation."""

from __future__ import annotations

import json

import pytest

from tunelab.errors import TunelabError
from tunelab.rag import evaluate, load_questions
from tunelab.rag.evaluate import is_gold
from tunelab.rag.retrieve import Hit


def hit(source, section, path=None):
    return Hit(1, 0.5, 0.5, "t", source, section, path or section, 0, 1)


def test_gold_matching_rules():
    h = hit("faq/programming.rst.txt", "Why  is X?", "Programming FAQ > Core > Why is X?")
    assert is_gold(h, "faq/programming.rst.txt", None)
    assert is_gold(h, "programming.rst.txt", "why is x?")  # suffix path, case/whitespace ignored
    assert is_gold(h, "faq/programming.rst.txt", "Core")  # any heading of the path
    assert not is_gold(h, "gramming.rst.txt", None)  # suffix must start at a path separator
    assert not is_gold(h, "faq/programming.rst.txt", "Why is Y?")
    assert not is_gold(h, "faq/library.rst.txt", None)


def test_evaluate_scores_known_ranks(built_kb, tmp_path):
    _, kb = built_kb
    qa = tmp_path / "qa.jsonl"
    rows = [
        {"question": "How do I prune my roses?", "source": "guide.md", "section": "Roses"},
        {"question": "What tyre pressure for a road bike?", "gold": "manual.rst#How much air goes in the tyres?"},
        {"question": "How do I prune my roses?", "source": "notes.txt"},  # gold is not the best hit
    ]
    qa.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    res = evaluate(None, qa, k=1, directory=kb)
    ranks = [p["rank"] for p in res["per_question"]]
    assert ranks[:2] == [1, 1] and ranks[2] is not None and ranks[2] > 1
    assert res["questions"] == 3 and res["k"] == 1 and res["recall@1"] == round(2 / 3, 4)
    assert res["mrr"] == round((1 + 1 + 1 / ranks[2]) / 3, 4)
    assert res["mrr_depth"] == 10


@pytest.mark.parametrize("line, message", [
    ('{"question": "q", "source": "a.md"', "invalid JSON"),
    ('["q", "a.md"]', "expected a JSON object"),
    ('{"source": "a.md"}', "missing or empty 'question'"),
    ('{"question": "q"}', "missing or empty 'source'"),
    ('{"question": "q", "source": "a.md", "section": 3}', "'section' must be a string"),
])
def test_bad_line_is_reported_as_file_and_line(tmp_path, line, message):
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "fine", "source": "a.md"}\n' + line + "\n")
    with pytest.raises(TunelabError, match=message) as e:
        load_questions(qa)
    assert e.value.where == f"{qa}:2"


def test_missing_or_empty_questions_file(tmp_path):
    with pytest.raises(TunelabError, match="cannot read questions"):
        load_questions(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TunelabError, match="no questions"):
        load_questions(tmp_path / "empty.jsonl")
