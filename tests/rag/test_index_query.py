"""Indexing with the real minilm-l6 embedder, querying, and incremental re-indexing."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lancedb", reason="the rag extra is not installed")

from tunelab.errors import TunelabError
from tunelab.rag import index, query
from tunelab.rag.store import KnowledgeBase


def test_index_stores_every_format_with_metadata(built_kb):
    _, kb = built_kb
    store = KnowledgeBase.open(directory=kb)
    assert sorted(f["source"] for f in store.files.values()) == [
        "guide.md", "manual.rst", "notes.txt", "page.html", "report.pdf"]
    assert store.count() == sum(f["chunks"] for f in store.files.values()) == 10
    assert store.manifest["dim"] == 384 and store.manifest["chunk_size"] == 256


@pytest.mark.parametrize("question, source, section", [
    ("How do I prune my roses?", "guide.md", "Roses"),
    ("What tyre pressure should a road bike have?", "manual.rst", "How much air goes in the tyres?"),
    ("How did Acme's quarterly revenue change?", "report.pdf", "page 1"),
    ("Where does lava come from?", "page.html", "Volcanoes"),
    ("How often should I feed a sourdough starter?", "notes.txt", ""),
])
def test_query_finds_the_right_chunk_first(built_kb, question, source, section):
    _, kb = built_kb
    hits = query(None, question, k=3, directory=kb)
    assert len(hits) == 3 and [h.rank for h in hits] == [1, 2, 3]
    assert (hits[0].source, hits[0].section) == (source, section)
    assert hits[0].score == hits[0].similarity > 0.3
    assert hits[0].score >= hits[1].score >= hits[2].score
    text = (kb.parent / "docs" / source)
    if source != "report.pdf":
        assert hits[0].text.split()[0] in text.read_text()


def test_cutoff_hybrid_and_reranker(built_kb):
    _, kb = built_kb
    q = "Explosive eruptions and ash"
    assert query(None, q, k=5, cutoff=0.99, directory=kb) == []
    loose = query(None, q, k=5, cutoff=0.2, directory=kb)
    assert loose and all(h.similarity >= 0.2 for h in loose)
    hyb = query(None, q, k=3, hybrid=True, directory=kb)
    assert hyb[0].section == "Eruptions"
    assert hyb[0].score == pytest.approx(0.5 * hyb[0].similarity + 0.5)  # best BM25 match: 0.5 * 1

    seen = {}

    def last_first(question, hits):
        seen["n"] = len(hits)
        return list(reversed(hits))

    rer = query(None, q, k=2, reranker=last_first, directory=kb)
    assert seen["n"] == 8  # 4 x k candidates reach the reranker
    assert rer[0].section != "Eruptions" and [h.rank for h in rer] == [1, 2]


def test_incremental_reindex(tmp_path, docs):
    kb = tmp_path / "kb"
    first = index([docs], directory=kb)
    assert (first.added, first.changed, first.unchanged, first.removed) == (5, 0, 0, 0)
    again = index([docs], directory=kb)
    assert (again.unchanged, again.chunks_embedded, again.chunks_total) == (5, 0, first.chunks_total)

    (docs / "notes.txt").write_text("Kombucha is fermented sweet tea with a SCOBY culture.\n")
    (docs / "page.html").unlink()
    rep = index([docs], directory=kb)
    assert (rep.added, rep.changed, rep.unchanged, rep.removed) == (0, 1, 3, 1)
    assert rep.chunks_embedded == 1  # only the changed file was re-embedded
    assert rep.chunks_total == first.chunks_total - 2  # notes: 1 -> 1 chunk, page.html: 2 gone
    hits = query(None, "fermented tea", k=10, directory=kb)
    assert hits[0].source == "notes.txt" and "Kombucha" in hits[0].text
    assert all(h.source != "page.html" for h in hits)
    assert not any("Sourdough" in h.text for h in hits)
    files = json.loads((kb / "manifest.json").read_text())["files"]
    assert sorted(f["source"] for f in files.values()) == ["guide.md", "manual.rst", "notes.txt", "report.pdf"]


def test_changing_chunk_settings_rebuilds(tmp_path, docs):
    kb = tmp_path / "kb"
    index([docs / "guide.md"], directory=kb)
    rep = index([docs / "guide.md"], directory=kb, size=64, overlap=8)
    assert (rep.added, rep.unchanged, rep.chunks_total) == (1, 0, 3)


def test_bad_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path))
    with pytest.raises(TunelabError, match="unknown knowledge base 'nope'"):
        query("nope", "anything")
    with pytest.raises(TunelabError, match="no such file or folder") as e:
        index([tmp_path / "missing.md"], kb="x")
    assert "missing.md" in e.value.one_line()
    (tmp_path / "empty").mkdir()
    with pytest.raises(TunelabError, match="no supported documents"):
        index([tmp_path / "empty"], kb="x")
    (tmp_path / "a.txt").write_text("text")
    with pytest.raises(TunelabError, match="invalid drop pattern '\\('"):
        index([tmp_path / "a.txt"], kb="x", drop=["("])
    with pytest.raises(TunelabError, match="invalid knowledge base name"):
        index([tmp_path / "empty"], kb="../escape")
