"""`rag tune`: the MNRL loss by hand, batches without repeated chunks, the split, and tuning a tiny KB end to end
(held-out recall moves, the tuned embedder is installed and used by queries, --overwrite rules, cached questions)."""

from __future__ import annotations

import json
import math
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lancedb", reason="the rag extra is not installed")

from tunelab.errors import TunelabError
from tunelab.rag.contrastive import distinct_batches, mnrl_loss, warmup_linear
from tunelab.rag.tune import retrieval_scores, select_chunks, split_chunks
from tunelab.rag.tune_questions import parse_questions
from tunelab.synth.teachers import TeacherReply


def test_mnrl_loss_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # unnormalised on purpose: the loss uses cosines
    p = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)
    # s = 20 * [[cos(q0,p0), cos(q0,p1)], [cos(q1,p0), cos(q1,p1)]] = 20 * [[1, c], [0, c]]
    row0 = -math.log(math.exp(20) / (math.exp(20) + math.exp(20 * c)))
    row1 = -math.log(math.exp(20 * c) / (math.exp(0) + math.exp(20 * c)))
    assert float(mnrl_loss(q, p)) == pytest.approx((row0 + row1) / 2, rel=1e-5)
    assert float(mnrl_loss(q, p, scale=1.0)) == pytest.approx(
        (-math.log(math.e / (math.e + math.exp(c))) - math.log(math.exp(c) / (1 + math.exp(c)))) / 2, rel=1e-5)


def test_batches_never_repeat_a_chunk_and_cover_every_pair():
    pairs = [(f"q{i}", "p", f"c{i % 5}") for i in range(23)]  # 5 chunks, 4-5 questions each
    batches = distinct_batches(pairs, 4, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(23))
    assert all(len({pairs[i][2] for i in b}) == len(b) <= 4 for b in batches)
    assert [warmup_linear(s, 10, 2) for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]


def test_split_select_scores_and_question_parsing():
    ids = [f"chunk{i}" for i in range(50)]
    train, held = split_chunks(ids, 0.2)
    assert set(train) | set(held) == set(ids) and not set(train) & set(held) and 3 <= len(held) <= 20
    assert split_chunks(ids, 0.2) == (train, held)  # deterministic
    assert split_chunks(["a", "b"], 0.01)[1]  # one held out at least
    rows = [{"id": str(i), "source": "faq/a.rst" if i % 2 else "lib/b.rst"} for i in range(10)]
    assert {r["source"] for r in select_chunks(rows, ["faq/*"], 0)} == {"faq/a.rst"}
    assert len(select_chunks(rows, None, 3)) == 3
    import numpy as np
    chunks = np.eye(4, dtype=np.float32)
    qs = np.array([[1, 0, 0, 0], [0.6, 0.8, 0, 0], [0, 0.1, 0.2, 0.3]], dtype=np.float32)
    # gold rows 0, 0, 2: ranks 1, 2 (row 1 scores 0.8 > 0.6), 2 (row 3 scores 0.3 > 0.2)
    assert retrieval_scores(qs, chunks, [0, 0, 2], 1) == {"recall@1": 0.3333, "mrr": round((1 + 0.5 + 0.5) / 3, 4)}
    assert parse_questions('What if the user asks: "How do I prune a rose bush?"') == ["How do I prune a rose bush?"]
    assert parse_questions("1. Why is the sky blue?\n2. ok\n3. Why is the sea salty?", 3) == [
        "Why is the sky blue?", "Why is the sea salty?"]
    assert parse_questions("What a great question! Here's a possible answer:\n\nThe passage says so.") == []
    assert parse_questions("The user asks:\n\nWhat is Py_DECREF for?") == ["What is Py_DECREF for?"]
    assert parse_questions("What would you like to ask?\nHow is a float stored?") == ["How is a float stored?"]


DOC_WORDS = ["automobile", "river", "violin", "mountain", "physician", "infant", "purchase", "garment",
             "residence", "beverage", "attorney", "canine", "feline", "ocean", "forest", "student"]
QUESTION_WORDS = ["car", "stream", "fiddle", "peak", "doctor", "baby", "buy", "clothing",
                  "home", "drink", "lawyer", "dog", "cat", "sea", "woods", "pupil"]


class ScriptedTeacher:
    """Asks about a chunk with synonyms of its words, so only a tuned embedder can match them."""

    batched = False

    def __init__(self, questions: dict[str, str]):
        self.questions, self.calls = questions, 0

    def describe(self) -> str:
        return "scripted"

    def complete(self, messages):
        self.calls += 1
        prompt = messages[-1]["content"]
        return TeacherReply(next(q for text, q in self.questions.items() if text in prompt))


@pytest.fixture
def tiny_kb(tmp_path):
    """40 chunks, each naming 3 of 16 things; a random 1-layer BERT (hidden 32) as the KB's embedder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tunelab.models.registry import resolve
    from tunelab.rag import index

    tok = AutoTokenizer.from_pretrained(str(resolve("minilm-l6").path))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(tmp_path / "emb")
    tok.save_pretrained(tmp_path / "emb")
    rng, combos = random.Random(0), set()
    while len(combos) < 40:
        combos.add(tuple(sorted(rng.sample(range(16), 3))))
    questions, parts = {}, []
    for i, (a, b, c) in enumerate(sorted(combos)):
        text = f"Notes on {DOC_WORDS[a]} and {DOC_WORDS[b]} with {DOC_WORDS[c]}."
        parts.append(f"## Part {i}\n\n{text}\n\n")
        questions[text] = f"what about the {QUESTION_WORDS[a]} and {QUESTION_WORDS[b]} or {QUESTION_WORDS[c]}?"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "catalogue.md").write_text("# Catalogue\n\n" + "".join(parts))
    index([tmp_path / "docs"], directory=tmp_path / "kb", embedder=str(tmp_path / "emb"))
    return tmp_path / "kb", questions


def split_by_text(kb, monkeypatch):
    """Hold out by sha1 of the chunk's text instead of its id: ids hash the file's absolute path, so with
    tmp_path in it the split (and so which questions are learned) would change from run to run."""
    import importlib

    from tunelab.rag.store import KnowledgeBase
    from tunelab.rag.tune_install import read_rows

    rows, _ = read_rows(KnowledgeBase.open(None, kb))
    text = {r["id"]: r["text"] for r in rows}
    tune_module = importlib.import_module("tunelab.rag.tune")  # the package's `tune` is the function
    real = tune_module.split_chunks

    def split(ids, holdout):
        back = {text[i]: i for i in ids}
        train, held = real([text[i] for i in ids], holdout)
        return [back[t] for t in train], [back[t] for t in held]

    monkeypatch.setattr(tune_module, "split_chunks", split)


def test_tune_moves_heldout_recall_installs_and_respects_overwrite(tiny_kb, capsys, monkeypatch):
    from tunelab.cli.main import run
    from tunelab.rag import query
    from tunelab.rag.embedders import kb_embedder
    from tunelab.rag.tune import TuneOptions, tune

    kb, questions = tiny_kb
    split_by_text(kb, monkeypatch)
    teacher = ScriptedTeacher(questions)
    opts = TuneOptions(epochs=4, batch_size=8, lr=5e-3, holdout=0.25)
    rep = tune(directory=kb, teacher=teacher, options=opts)
    assert teacher.calls == 40 and rep.chunks_with_questions == 40 and 4 <= rep.heldout_chunks <= 18
    assert rep.train_pairs == 40 - rep.heldout_chunks == 40 - rep.heldout_questions
    assert rep.before["recall@3"] <= 0.34 and rep.after["recall@3"] >= rep.before["recall@3"] + 0.4
    assert rep.installed and rep.epoch_loss[-1] < rep.epoch_loss[0]
    from tunelab.rag.fusion import load_heldout
    held = load_heldout(rep.heldout_file)
    assert len(held) == rep.heldout_questions and all(h["question"] in questions.values() for h in held)
    manifest = json.loads((kb / "manifest.json").read_text())
    first = manifest["tuned_embedder"]["dir"]
    assert "tune_pending" not in manifest and (kb / first / "model.safetensors").exists()
    assert not [p for p in kb.iterdir() if p.name.endswith(".tmp")]
    assert kb_embedder(manifest, kb).name == str((kb / first).resolve())  # queries use the tuned model
    learned = [(t, q) for t, q in questions.items() if q not in {h["question"] for h in held}]
    hits = [t in [h.text for h in query(None, q, k=3, directory=kb)] for t, q in learned]
    assert sum(hits) >= 0.8 * len(learned)  # queries find what the tuned model learned
    text, asked = learned[hits.index(True)]

    # a second tune without --overwrite is refused in one line (exit 2), before any teacher loads
    with pytest.raises(SystemExit) as e:
        run(["rag", "tune", "x", "--dir", str(kb)])
    assert e.value.code == 2 and "already has a tuned embedder" in capsys.readouterr().err
    with pytest.raises(TunelabError, match="already has a tuned embedder"):
        tune(directory=kb, teacher=teacher, options=opts)

    # --overwrite: questions come from the cache (no teacher call), a new folder replaces the old one
    opts.overwrite, opts.keep_if_worse, opts.epochs = True, True, 1
    rep2 = tune(directory=kb, teacher=teacher, options=opts)
    second = json.loads((kb / "manifest.json").read_text())["tuned_embedder"]["dir"]
    assert teacher.calls == 40 and rep2.installed and second != first
    assert (kb / second).is_dir() and not (kb / first).exists()
    assert rep2.before == rep.after  # "before" is the KB as it was: the first tune's vectors

    # an install cut short after the manifest said "pending": queries refuse instead of mixing models
    manifest = json.loads((kb / "manifest.json").read_text())
    manifest["tune_pending"] = {"dir": second}
    (kb / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TunelabError, match="interrupted `rag tune`"):
        query(None, asked, directory=kb)
    rep3 = tune(directory=kb, teacher=teacher, options=opts)  # --overwrite completes it
    manifest = json.loads((kb / "manifest.json").read_text())
    assert rep3.before == {} and rep3.installed and "tune_pending" not in manifest
    assert sorted(p.name for p in kb.glob("tuned-embedder-*")) == [manifest["tuned_embedder"]["dir"]]
    assert query(None, asked, k=1, directory=kb)


def test_tune_reembeds_a_kbs_sentence_vectors_with_the_tuned_model(tiny_kb, tmp_path):
    import numpy as np

    from tunelab.rag import index
    from tunelab.rag.embedders import kb_embedder
    from tunelab.rag.sentences import SentenceIndex
    from tunelab.rag.tune import TuneOptions, tune

    kb, questions = tiny_kb
    index([tmp_path / "docs"], directory=kb, embedder=str(tmp_path / "emb"), sentences=True)
    before = SentenceIndex.load(kb, 32)
    rep = tune(directory=kb, teacher=ScriptedTeacher(questions), options=TuneOptions(epochs=1, lr=5e-3, batch_size=8, keep_if_worse=True))
    after = SentenceIndex.load(kb, 32)
    assert rep.installed and after.texts.tolist() == before.texts.tolist()
    manifest = json.loads((kb / "manifest.json").read_text())
    tuned = kb_embedder(manifest, kb)
    assert np.allclose(after.vectors, tuned.encode(after.texts.tolist()), atol=1e-4)
    assert not np.allclose(after.vectors, before.vectors, atol=1e-3)
