"""Query rewriting: reciprocal rank fusion order by hand, rephrasing parsing, HyDE's search vector, batching of
the model's calls, and both rewrites end to end on a KB with a scripted model."""

from __future__ import annotations

import numpy as np
import pytest

from tunelab.rag.retrieve import Hit
from tunelab.rag.rewrite import HyDE, MultiQuery, QueryRewriter, fuse_rrf


def hit(cid: str, rank: int, sim: float = 0.5) -> Hit:
    return Hit(rank, sim, sim, f"text {cid}", "doc.md", cid, cid, 0, 1, cid)


def ranking(*ids: str) -> list[Hit]:
    return [hit(c, r, 0.9 - 0.1 * r) for r, c in enumerate(ids, 1)]


def test_rrf_order_by_hand():
    # a: 1/61 + 1/63 = 0.032266; b: 1/62 + 1/61 = 0.032523; c: 1/63 + 1/62 = 0.031998; d: 1/61 = 0.016393
    fused = fuse_rrf([ranking("a", "b", "c"), ranking("b", "c", "a"), ranking("d")], k=3)
    assert [h.id for h in fused] == ["b", "a", "c"] and [h.rank for h in fused] == [1, 2, 3]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61, abs=1e-6)
    assert fused[0].similarity == pytest.approx(0.8)  # b's best cosine over the rankings (rank 1 in the second)
    # equal scores keep the order of first appearance: the question's own ranking comes first
    assert [h.id for h in fuse_rrf([ranking("x"), ranking("y")], k=2)] == ["x", "y"]


def test_multi_query_parses_rephrasings_and_fuses_one_search_each():
    written = "1. How can roses be trimmed?\n2) how do i prune roses?\nRephrasing 3: When to cut rose bushes?\n4. extra?"
    assert MultiQuery.parse(written, "How do I prune roses?") == [
        "How can roses be trimmed?", "When to cut rose bushes?", "extra?"]
    asked = []
    results = {"How do I prune roses?": ranking("a", "b"), "How can roses be trimmed?": ranking("c", "b"),
               "When to cut rose bushes?": ranking("b", "c"), "extra?": ranking("d")}

    def search(text, n, vector):
        asked.append((text, n, vector))
        return results[text]

    fused = MultiQuery().retrieve(search, None, "How do I prune roses?", written, k=2)
    assert [a[0] for a in asked] == list(results) and all(n == 10 and v is None for _, n, v in asked)
    assert [h.id for h in fused] == ["b", "c"]  # b: 1/62 + 1/62 + 1/61; c: 1/61 + 1/62; a: 1/61


def test_hyde_searches_with_the_normalised_sum_of_question_and_passage():
    seen = {}

    def embed(texts):
        assert texts == ["q?", "a passage"]
        return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)

    def search(text, n, vector):
        seen.update(text=text, n=n, vector=vector)
        return ranking("a")

    HyDE().retrieve(search, embed, "q?", "a passage", k=3)
    assert seen["text"] == "q?" and seen["n"] == 3
    np.testing.assert_allclose(seen["vector"], [2 ** -0.5, 2 ** -0.5, 0.0], rtol=1e-6)
    HyDE().retrieve(search, embed, "q?", "  ", k=3)  # nothing written: the question alone
    assert seen["vector"] is None


class ScriptedModel:
    def __init__(self, replies):
        self.replies, self.calls = replies, []

    def reply_batch(self, conversations, max_new_tokens=128, temperature=0.0, batch_size=16):
        self.calls.append(len(conversations))
        return [self.replies(c[-1]["content"]) for c in conversations]


def test_rewriters_end_to_end_on_a_kb(built_kb, capsys):
    _, kb = built_kb
    from tunelab.rag import evaluate, query

    model = ScriptedModel(lambda p: "Cutting back roses in winter\nPruning rose bushes" if "3 different" in p else
                          "Prune roses in late winter above an outward-facing bud.")
    multi = QueryRewriter("multi", model)
    multi.prepare(["When do I cut my flowers?", "How much air do tyres need?"])
    assert model.calls == [2]
    hits = multi.query(None, "When do I cut my flowers?", k=2, directory=kb)
    assert model.calls == [2] and hits[0].section == "Roses" and [h.rank for h in hits] == [1, 2]
    hyde = QueryRewriter("hyde", model)
    assert hyde.query(None, "When do I cut my flowers?", k=1, directory=kb)[0].section == "Roses"
    plain = query(None, "When do I cut my flowers?", k=1, directory=kb)[0]
    assert hyde.query(None, "When do I cut my flowers?", k=1, directory=kb)[0].similarity != plain.similarity
    res = evaluate(None, [{"question": "When do I cut my flowers?", "source": "guide.md", "section": "Roses"}],
                   k=1, directory=kb, rewriter=QueryRewriter("hyde", model))
    assert res["recall@1"] == 1.0 and res["rewrite"] == "hyde" and res["rewrite_ms_per_question"] >= 0

    from tunelab.cli.main import run

    with pytest.raises(SystemExit) as e:
        run(["rag", "query", "x", "q", "--dir", str(kb), "--rewrite", "both"])
    assert e.value.code == 2 and "unknown rewrite 'both'" in capsys.readouterr().err
