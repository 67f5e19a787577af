"""Retrieval pieces: contextual chunks, the headings-removed transform, fitted fusion, the LLM reranker."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest

from tunelab.errors import TunelabError
from tunelab.rag.context import contextual_text
from tunelab.rag.fusion import GRID, fit_alpha, scores_at
from tunelab.rag.retrieve import Hit

PAGE = (
    "Kitchen Handbook\n================\n\n"
    "Bread\n-----\n\nKnead the dough for ten minutes until it springs back.\n\n"
    "Knives\n------\n\nHone the blade before each use and sharpen it twice a year.\n"
)


class RecordingEmbedder:
    """The real MiniLM tokenizer (the chunker needs its offsets) and hashed bag-of-words unit vectors;
    records every text it is asked to embed."""

    dim = 64

    def __init__(self):
        from transformers import AutoTokenizer

        from tunelab.models.registry import resolve

        self.tokenizer = AutoTokenizer.from_pretrained(str(resolve("minilm-l6", where="embedder").path))
        self.name = "minilm-l6"
        self.seen: list[str] = []

    def encode(self, texts, batch_size=32, max_tokens=256):
        self.seen.extend(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            out[i] /= max(np.linalg.norm(out[i]), 1e-9)
        return out


@pytest.fixture
def recording(monkeypatch):
    pytest.importorskip("lancedb", reason="the rag extra is not installed")
    from tunelab.rag.embed import Embedder

    emb = RecordingEmbedder()
    monkeypatch.setattr(Embedder, "load", staticmethod(lambda name="minilm-l6": emb))
    return emb


def test_contextual_text_is_embedded_and_bm25_indexed(tmp_path, recording):
    from tunelab.rag import index, query
    from tunelab.rag.store import KnowledgeBase

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kitchen.rst").write_text(PAGE)
    (docs / "pantry_notes.txt").write_text("Store flour in a cool dry cupboard.\n")
    index([docs], directory=tmp_path / "kb")
    want = {"Kitchen Handbook\nBread\nKnead the dough for ten minutes until it springs back.",
            "Kitchen Handbook\nKnives\nHone the blade before each use and sharpen it twice a year.",
            "pantry notes\nStore flour in a cool dry cupboard."}
    assert set(recording.seen) == want  # the embedder saw title + section path + text
    rows = KnowledgeBase.open(directory=tmp_path / "kb").table.to_arrow().to_pylist()
    assert {r["search_text"] for r in rows} == want
    assert {r["text"] for r in rows} == {t.split("\n")[-1] for t in want}
    # BM25 finds a chunk by a word that is only in its context ("Knives" is the heading, not the text)
    hits = query(None, "knives", k=1, directory=tmp_path / "kb", hybrid=True, alpha=0.0)
    assert hits[0].section == "Knives" and hits[0].bm25 == 1.0
    # the old behaviour is one option away; an unknown one is refused in one line
    recording.seen.clear()
    index([docs / "kitchen.rst"], directory=tmp_path / "kb2", context="none")
    assert recording.seen and all("\n" not in t for t in recording.seen)
    with pytest.raises(TunelabError, match="unknown context"):
        index([docs], directory=tmp_path / "kb3", context="summary")


def test_context_styles():
    kw = dict(title="Guide", source="docs/setup-guide.md", section_path="Guide > Keys > Rotation")
    assert contextual_text("T", context="path", **kw) == "Guide > Keys > Rotation\nT"
    assert contextual_text("T", context="title+path", **kw) == "Guide (setup guide)\nKeys > Rotation\nT"
    assert contextual_text("T", context="title+path", summary="About keys.", **kw) == \
        "Guide (setup guide)\nKeys > Rotation\nAbout keys.\nT"
    assert contextual_text("T", context="none", **kw) == "T"


def test_headings_removed_transform(tmp_path, load_benchmark):
    from tunelab.rag.ingest import read_document

    bench = load_benchmark("rag_paraphrase")
    page = ("=============\nKitchen FAQ\n=============\n\n.. contents::\n\n"
            "General\n=======\n\nHow do I knead dough?\n---------------------\n\nPress and fold for ten minutes.\n\n"
            "Why is my ``knife`` dull?\n-------------------------\n\nHone it.\nNot a heading\n-------------\n")
    new, pairs = bench.neutral_headings(page)
    assert pairs == [("General", "Section 1"), ("How do I knead dough?", "Section 2"),
                     ("Why is my ``knife`` dull?", "Section 3")]
    (tmp_path / "faq").mkdir()
    (tmp_path / "faq" / "kitchen.rst.txt").write_text(page)
    labels = bench.build_variant(tmp_path / "faq", tmp_path / "out")
    doc = read_document(tmp_path / "out" / "kitchen.rst.txt")
    assert [b.section_path for b in doc.blocks] == [
        ("Kitchen FAQ", "Section 1", "Section 2"), ("Kitchen FAQ", "Section 1", "Section 3")]
    assert [b.text for b in doc.blocks] == ["Press and fold for ten minutes.", "Hone it.\nNot a heading"]
    assert "knead" not in new.split("Press")[0].lower()  # no heading word left above the body
    qs = bench.relabel([{"question": "q", "source": "faq/kitchen.rst.txt", "section": "Why is my knife dull?"}], labels)
    assert qs[0]["section"] == "Section 3"
    with pytest.raises(SystemExit):
        bench.relabel([{"question": "q", "source": "faq/kitchen.rst.txt", "section": "Missing?"}], labels)


def _hit(cid: str, sim: float, bm25: float) -> Hit:
    return Hit(0, sim, sim, "", f"{cid}.txt", "", "", 0, 0, cid, bm25)


def test_fitted_fusion_never_below_vectors():
    qs = [{"question": f"q{i}", "source": f"gold{i}.txt"} for i in range(4)]
    # BM25 favours a wrong chunk on every question: any weight on it loses; the fit keeps vectors alone
    misleading = [[_hit(f"gold{i}", 0.62, 0.1), _hit("wrong", 0.60, 1.0), _hit("other", 0.3, 0.0)] for i in range(4)]
    alpha, table = fit_alpha(misleading, qs, k=1)
    assert alpha == 1.0 and table[alpha] == table[1.0] and table[0.5]["recall@1"] == 0.0
    assert table[1.0]["recall@1"] == 1.0
    # BM25 rescues questions the vectors miss: a lower alpha is chosen and beats vectors alone
    helpful = [[_hit("near", 0.60, 0.0), _hit(f"gold{i}", 0.55, 1.0)] for i in range(4)]
    alpha, table = fit_alpha(helpful, qs, k=1)
    assert alpha < 1.0 and table[alpha]["recall@1"] == 1.0 > table[1.0]["recall@1"]
    # random candidate lists: the fitted scores are never below vectors alone
    rng = random.Random(0)
    for _ in range(20):
        cands = [[_hit(f"gold{i}" if j == 0 else f"c{j}", rng.random(), rng.random()) for j in range(6)]
                 for i in range(4)]
        alpha, table = fit_alpha(cands, qs, k=3)
        assert (table[alpha]["recall@3"], table[alpha]["mrr"]) >= (table[1.0]["recall@3"], table[1.0]["mrr"])
    assert GRID[0] == 0.0 and GRID[-1] == 1.0
    assert scores_at([1, None, 2], 3) == {"recall@1": 0.3333, "recall@3": 0.6667, "mrr": 0.5}


def test_the_sentence_weight_is_fitted_with_alpha():
    from tunelab.rag.fusion import SENTENCE_GRID, fit_alpha_and_sentence_weight

    qs = [{"question": f"q{i}", "source": f"gold{i}.txt"} for i in range(3)]

    def hit(cid, sim, sentence, bm25=0.0):
        return Hit(0, sim, sim, "", f"{cid}.txt", "", "", 0, 0, cid, bm25, sentence)

    # the gold chunk's own cosine loses, one of its sentences wins: w = 0.5 ranks it first, w = 1 does not
    # (gold 0.5 * 0.50 + 0.5 * 0.80 = 0.65 > near 0.5 * 0.60 + 0.5 * 0.62 = 0.61; at w = 1, 0.50 < 0.60)
    cands = [[hit("near", 0.60, 0.62), hit(f"gold{i}", 0.50, 0.80)] for i in range(3)]
    alpha, w, tables = fit_alpha_and_sentence_weight(cands, qs, k=1)
    assert tables[1.0][1.0]["recall@1"] == 0.0 and tables[w][alpha]["recall@1"] == 1.0
    assert alpha == 1.0 and w == 0.5  # ties: vectors alone (alpha 1), then the w nearest the default
    assert set(tables) == set(SENTENCE_GRID)
    # hits without sentence cosines (a KB without sentences): every w is the chunk's cosine
    plain = [[hit("near", 0.60, None), hit(f"gold{i}", 0.50, None)] for i in range(3)]
    assert fit_alpha_and_sentence_weight(plain, qs, k=1)[2][0.0][1.0]["recall@1"] == 0.0


def test_fit_fusion_is_saved_and_used(tmp_path, recording):
    from tunelab.rag import index, query
    from tunelab.rag.fusion import fit_fusion

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "kitchen.rst").write_text(PAGE)
    index([docs], directory=tmp_path / "kb")
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "knives blade", "source": "kitchen.rst", "section": "Knives"}) + "\n")
    fit = fit_fusion(None, qa, directory=tmp_path / "kb", k=1)
    assert fit["fitted"]["recall@1"] >= fit["vectors"]["recall@1"] and fit["questions"] == 1
    manifest = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    assert manifest["fusion"]["alpha"] == fit["alpha"]
    hit = query(None, "knives blade", k=1, directory=tmp_path / "kb", hybrid=True)[0]
    assert hit.score == pytest.approx(fit["alpha"] * hit.similarity + (1 - fit["alpha"]) * hit.bm25, abs=1e-6)


def test_reranker_orders_by_its_score(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.rag.rerank import LLMReranker

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    texts = ["the cat sat on the mat", "a dog ran in the park today and then slept for a long time",
             "hello", "rain falls on the hills in spring", "one two three"]
    hits = [Hit(0, 1.0 - 0.1 * i, 1.0 - 0.1 * i, t, "s.txt", "", "", 0, 0, f"id{i}") for i, t in enumerate(texts)]
    rr = LLMReranker(model, tok, batch_size=2)
    scores = rr.log_p_yes("where is the cat?", texts)
    # batched and padded == one passage at a time, no padding
    with torch.inference_mode():
        for t, s in zip(texts, scores):
            enc = tok(rr.prompt("where is the cat?", t), return_tensors="pt", add_special_tokens=False)
            logp = torch.log_softmax(model(**enc).logits[0, -1].float(), dim=-1)
            assert s == pytest.approx(torch.logsumexp(logp[rr.yes_ids], 0).item(), abs=2e-2)
    out = rr("where is the cat?", [Hit(**h.to_dict()) for h in hits])
    assert [h.id for h in out] == [h.id for _, h in sorted(zip(scores, hits), key=lambda p: -p[0])]
    keep = LLMReranker(model, tok, mix=0.0)("where is the cat?", [Hit(**h.to_dict()) for h in hits])
    assert [h.id for h in keep] == [h.id for h in hits]  # mix 0: the retrieval order
    top2 = LLMReranker(model, tok, top=2)("where is the cat?", [Hit(**h.to_dict()) for h in hits])
    assert [h.id for h in top2][2:] == ["id2", "id3", "id4"]  # only the first `top` are judged
    with pytest.raises(TunelabError, match="mix"):
        LLMReranker(model, tok, mix=2.0)


def test_heldout_file_with_chunk_ids(tmp_path):
    from tunelab.rag.fusion import load_heldout

    f = tmp_path / "held.jsonl"
    f.write_text('{"question": "why?", "chunk_id": "ab12"}\n\n{"question": "how?", "chunk_id": "cd34"}\n')
    assert load_heldout(f) == [{"question": "why?", "chunk_id": "ab12"}, {"question": "how?", "chunk_id": "cd34"}]
    f.write_text('{"question": "why?", "source": "a.md"}\n')
    assert load_heldout(f)[0]["source"] == "a.md"
    f.write_text('{"question": "why?", "chunk_id": "ab12"}\n{"chunk_id": "cd34"}\n')
    with pytest.raises(TunelabError, match="question"):
        load_heldout(f)
    f.write_text('{"question": "why?"\n')
    with pytest.raises(TunelabError, match="invalid JSON"):
        load_heldout(f)
