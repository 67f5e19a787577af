"""rag/sentences.py: splitting, the best sentence per chunk by hand, and a KB indexed with sentence vectors
(one per sentence of each chunk, kept in step with changed and removed files, scores mixed as documented,
a rebuild when the option changes, none forced on a KB from before it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("lancedb", reason="the rag extra is not installed")

from tunelab.rag.sentences import FILE, SENTENCE_WEIGHT, SentenceIndex, mixed_score, split_sentences


def test_split_sentences():
    text = ("Feed the starter every day. Is the starter alive? Look at it: bubbles mean yes!\n\n"
            "A new paragraph without a stop\nwraps a line. Ok.")
    assert split_sentences(text) == ["Feed the starter every day.", "Is the starter alive?",
                                     "bubbles mean yes!", "A new paragraph without a stop\nwraps a line."]
    # "Look at it:" (11 characters) and "Ok." are under 16: dropped
    assert split_sentences("Tiny. Bits.") == ["Tiny. Bits."]  # no piece of 16 characters: the chunk itself
    assert split_sentences("See v1.2 for details about it.") == ["See v1.2 for details about it."]


def test_best_sentence_per_chunk_by_hand(tmp_path):
    idx = SentenceIndex.empty(2).plus(np.array([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]]), ["s0", "s1", "s2"],
                                      ["a", "a", "b"], ["p1", "p1", "p2"])
    assert np.allclose(np.linalg.norm(idx.vectors, axis=1), 1)  # stored as unit vectors
    c = 1 / np.sqrt(2)
    # q = (0, 1): chunk a's sentences score 0 and 1, chunk b's c
    assert idx.best_per_chunk(np.array([0.0, 1.0])) == pytest.approx({"a": 1.0, "b": c})
    assert mixed_score(0.2, 1.0, 0.5) == pytest.approx(0.6) and mixed_score(0.2, None, 0.5) == pytest.approx(0.2)
    idx.save(tmp_path)
    back = SentenceIndex.load(tmp_path, 2)
    assert back.texts.tolist() == ["s0", "s1", "s2"] and np.array_equal(back.vectors, idx.vectors)
    assert back.without_paths(["p1"]).chunk_ids.tolist() == ["b"]
    assert len(SentenceIndex.load(tmp_path / "none", 2)) == 0


def test_a_kb_with_sentences_keeps_them_in_step_and_mixes_scores(tmp_path, docs):
    from tunelab.rag import index, query
    from tunelab.rag.embed import Embedder
    from tunelab.rag.store import KnowledgeBase
    from tunelab.rag.tune_install import read_rows

    kb = tmp_path / "kb"
    first = index([docs], directory=kb, sentences=True)
    rows, _ = read_rows(KnowledgeBase.open(directory=kb))
    sent = SentenceIndex.load(kb, 384)
    assert first.sentences == len(sent) == sum(len(split_sentences(r["text"])) for r in rows)
    assert set(sent.chunk_ids.tolist()) == {r["id"] for r in rows}
    emb = Embedder.load("minilm-l6")
    assert np.allclose(sent.vectors[:3], emb.encode(sent.texts[:3].tolist()), atol=1e-4)  # each sentence alone

    q = "How often should I water tomatoes?"
    hits = query(None, q, k=3, directory=kb)
    qv = emb.encode([q])[0]
    best = sent.best_per_chunk(qv)
    for h in hits:  # score = w * chunk cosine + (1 - w) * its best sentence's cosine
        assert h.score == pytest.approx(SENTENCE_WEIGHT * h.similarity + (1 - SENTENCE_WEIGHT) * best[h.id], abs=1e-5)
    assert hits[0].section == "Tomatoes"
    assert query(None, q, k=3, directory=kb, sentence_weight=1.0)[0].score == pytest.approx(
        max(h.similarity for h in query(None, q, k=3, directory=kb, sentence_weight=1.0)))

    from tunelab.rag.fusion import SENTENCE_GRID, fit_fusion

    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": q, "source": "guide.md", "section": "Tomatoes"}) + "\n")
    alone = fit_fusion(None, qa, directory=kb, k=1)  # alpha at the KB's w; w itself only when asked
    assert "sentence_weight" not in alone and "sentence_weight" not in json.loads((kb / "manifest.json").read_text())
    fit = fit_fusion(None, qa, directory=kb, k=1, sentence_weight=True)
    w = json.loads((kb / "manifest.json").read_text())["sentence_weight"]
    assert w == fit["sentence_weight"] in SENTENCE_GRID and fit["fitted"]["recall@1"] == 1.0
    h = query(None, q, k=1, directory=kb)[0]  # the fitted weight is the KB's from now on
    assert h.score == pytest.approx(w * h.similarity + (1 - w) * h.sentence, abs=1e-5)

    (docs / "notes.txt").write_text("Kombucha is fermented sweet tea with a SCOBY culture.\n")
    (docs / "page.html").unlink()
    rep = index([docs], directory=kb, sentences=True)
    assert (rep.changed, rep.removed) == (1, 1)
    sent = SentenceIndex.load(kb, 384)
    assert not any("Sourdough" in t for t in sent.texts) and any("Kombucha" in t for t in sent.texts)
    assert not any(p.endswith("page.html") for p in sent.paths)
    rows, _ = read_rows(KnowledgeBase.open(directory=kb))
    assert len(sent) == sum(len(split_sentences(r["text"])) for r in rows)

    off = index([docs], directory=kb)  # the option changed: a rebuild, and the sentence file goes
    assert off.unchanged == 0 and off.sentences is None and not (kb / FILE).exists()
    manifest = json.loads((kb / "manifest.json").read_text())
    manifest.pop("sentences")  # a KB written before the option existed
    (kb / "manifest.json").write_text(json.dumps(manifest))
    assert index([docs], directory=kb).unchanged == 4  # not rebuilt
