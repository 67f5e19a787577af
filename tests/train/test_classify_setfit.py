"""task classify with `classify.setfit`: pair generation, the cosine pair loss by hand, the logistic head's
optimum (with class weights), a tiny end-to-end run that saves and predicts like any classify run, and the
one-line errors of a bad setfit config."""

import json
import math

import pytest
import torch

from tunelab.config import from_dict
from tunelab.errors import TunelabError
from tunelab.train.class_balance import oversample
from tunelab.train.setfit import cosine_pair_loss, fit_logistic_head, make_pairs

Y = [0] * 6 + [1] * 3 + [2]  # class 2 has one example: it anchors no positive pair


# ---- pairs ---------------------------------------------------------------------------------------------------
def test_pairs_count_and_labels():
    pairs = make_pairs(Y, pairs_per_example=3, seed=0)
    pos = [p for p in pairs if p[2] == 1.0]
    neg = [p for p in pairs if p[2] == 0.0]
    assert len(neg) == 3 * 10  # every anchor, every round
    assert len(pos) == 3 * 9  # the lone class-2 example has no positive
    assert len(pairs) == 2 * 10 * 3 - 3
    assert all(Y[i] == Y[j] and i != j for i, j, _ in pos)
    assert all(Y[i] != Y[j] for i, j, _ in neg)
    # each round anchors every example once: 3 negatives anchored at each index
    assert sorted(i for i, _, _ in neg) == sorted(list(range(10)) * 3)


def test_pairs_are_seeded():
    assert make_pairs(Y, 4, seed=7) == make_pairs(Y, 4, seed=7)
    assert make_pairs(Y, 4, seed=7) != make_pairs(Y, 4, seed=8)


def test_positive_draws_cover_the_class_without_the_anchor():
    pairs = make_pairs([0] * 4 + [1] * 4, pairs_per_example=200, seed=1)
    mates = {j for i, j, t in pairs if t == 1.0 and i == 0}
    assert mates == {1, 2, 3}


def test_balanced_anchors_give_every_class_as_many_negative_pairs():
    anchors = oversample(list(range(len(Y))), Y, seed=0)  # 6 per class
    pairs = make_pairs(Y, 2, seed=0, anchors=anchors)
    per_class = [sum(1 for i, _, t in pairs if t == 0.0 and Y[i] == c) for c in range(3)]
    assert per_class == [12, 12, 12]


# ---- loss ----------------------------------------------------------------------------------------------------
def test_cosine_pair_loss_by_hand():
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    v = torch.tensor([[1.0, 1.0], [0.0, 2.0], [-1.0, 0.0]])
    y = torch.tensor([1.0, 0.0, 0.0])
    # cos = 1/sqrt(2), 0, -1 -> ((0.70711 - 1)^2 + 0 + 1) / 3 = (0.085786 + 1) / 3 = 0.361929
    assert float(cosine_pair_loss(u, v, y)) == pytest.approx(((1 / math.sqrt(2) - 1) ** 2 + 1) / 3, rel=1e-6)


# ---- head ----------------------------------------------------------------------------------------------------
def _blobs(seed=0):
    g = torch.Generator().manual_seed(seed)
    y = [0] * 30 + [1] * 12 + [2] * 4
    centers = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.6, 0.6, 0.3, 0.0]])
    x = centers[y] + 0.35 * torch.randn(len(y), 4, generator=g)
    return torch.nn.functional.normalize(x, dim=-1), y


def _objective(w, b, x, y, s, c):
    ce = torch.nn.functional.cross_entropy(x @ w.T + b, torch.tensor(y), reduction="none")
    return (s[torch.tensor(y)] * ce).sum() + (w * w).sum() / (2 * c)


@pytest.mark.parametrize("weights", [None, torch.tensor([46 / 90, 46 / 36, 46 / 12])])
def test_logistic_head_is_the_optimum_of_the_weighted_objective(weights):
    x, y = _blobs()
    head = fit_logistic_head(x, y, 3, weights, c=2.0)
    w = head.weight.detach().double().requires_grad_(True)
    b = head.bias.detach().double().requires_grad_(True)
    s = torch.ones(3, dtype=torch.float64) if weights is None else weights.double()
    _objective(w, b, x.double(), y, s, 2.0).backward()
    assert float(w.grad.abs().max()) < 1e-4 and float(b.grad.abs().max()) < 1e-4  # stationary: the optimum
    # and a worse point nearby has a higher objective
    assert _objective(w + 0.05, b, x.double(), y, s, 2.0) > _objective(w, b, x.double(), y, s, 2.0)


def test_class_weights_move_predictions_to_the_rare_class():
    x, y = _blobs(1)
    plain = fit_logistic_head(x, y, 3, None).forward(x).argmax(-1)
    weighted = fit_logistic_head(x, y, 3, torch.tensor([46 / 90, 46 / 36, 46 / 12])).forward(x).argmax(-1)
    assert int((weighted == 2).sum()) > int((plain == 2).sum())


@pytest.mark.slow  # importing sklearn (scipy) takes seconds; the optimum itself is checked above
def test_logistic_head_matches_sklearn():
    lm = pytest.importorskip("sklearn.linear_model")
    x, y = _blobs(2)
    ref = lm.LogisticRegression(C=0.5, class_weight={0: 0.5, 1: 1.3, 2: 3.8}, tol=1e-10, max_iter=5000)
    ref.fit(x.double().numpy(), y)
    head = fit_logistic_head(x, y, 3, torch.tensor([0.5, 1.3, 3.8]), c=0.5)
    ours = torch.softmax(head(x), -1).detach().numpy()
    assert ours == pytest.approx(ref.predict_proba(x.double().numpy()), abs=2e-4)


# ---- a tiny run ----------------------------------------------------------------------------------------------
def write_toy(path, n, seed):
    """The tiny classify tests' toy set, one record in three a dog (the classes unbalanced)."""
    from tests.train.test_classify_tiny import write_toy as toy

    return toy(path, n, seed, dog_every=3)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A tiny random BERT encoder (2 layers x hidden 32) with tunelab's tiny BPE tokenizer."""
    from transformers import BertConfig, BertModel

    from tunelab.models.tiny import build_tokenizer

    out = tmp_path_factory.mktemp("models") / "tiny-bert"
    tok = build_tokenizer()
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128,
                         pad_token_id=tok.pad_token_id)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def setfit_cfg(tmp_path, model, train_file, val_file, **classify):
    return from_dict({
        "task": "classify", "model": {"name": str(model)},
        "data": {"train": str(train_file), "validation": str(val_file), "max_length": 16},
        "method": {"name": "full"},
        "classify": {"setfit": {"pairs_per_example": 2}, "offsets": True, **classify},
        "train": {"lr": 5e-4, "batch_size": 8, "precision": "fp32", "logging_steps": 1},
        "output": {"dir": str(tmp_path / "runs"), "name": "s"}})


def test_tiny_setfit_run_saves_and_predicts(tmp_path, tiny_bert_dir, capsys):
    from safetensors.torch import load_file

    from tunelab.cli.predict import predict_cmd
    from tunelab.infer.classify import Classifier
    from tunelab.train.recipes.classify import run_classify

    train, val = write_toy(tmp_path / "t.jsonl", 36, 1), write_toy(tmp_path / "v.jsonl", 12, 2)
    cfg = setfit_cfg(tmp_path, tiny_bert_dir, train, val)
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size) == (1, 5e-4, 8)  # epochs: SetFit's default 1
    out = run_classify(cfg, quiet=True)
    run = out.run_dir
    for name in ("DONE", "config.yaml", "labels.json", "tokenizer", "embedder/config.json", "pooled_head.safetensors",
                 "offsets.json", "report.md"):
        assert (run / name).exists(), name
    assert not (run / "model").exists() and not (run / "adapter").exists()
    # 36 anchors (24 fox, 12 dog) x 2 rounds x (1 positive + 1 negative) = 144 pairs -> ceil(144 / 8) = 18 steps
    assert out.result.steps == 18
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in rows) == 18 and rows[0]["event"] == "before" and "val_loss" in rows[-1]
    # stage one changed the encoder
    tuned = load_file(str(run / "embedder" / "model.safetensors"))
    base = load_file(str(tiny_bert_dir / "model.safetensors"))
    key = next(k for k in tuned if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert not torch.equal(tuned[key], base[next(k for k in base if k.endswith(key.split("bert.")[-1]))])
    assert out.after["accuracy"] >= 0.9  # the toy set is separable by its words
    # predict reads the run like any classify run: the same validation logits as the recipe measured
    clf = Classifier.from_run(run, offsets=False)
    val_texts = [json.loads(x)["text"] for x in val.read_text().splitlines()]
    y_val = [json.loads(x)["label"] for x in val.read_text().splitlines()]
    z = clf.logits(val_texts)
    loss = float(torch.nn.functional.cross_entropy(z, torch.tensor([out.labels.index(x) for x in y_val])))
    assert loss == pytest.approx(out.after["val_loss"], abs=1e-4)
    assert [p["label"] for p in clf.predict(val_texts)] == [out.labels[i] for i in z.argmax(-1).tolist()]
    capsys.readouterr()
    predict_cmd(run=run, text=["quick brown fox jumps"], file=None, out=None, field="text", batch_size=4, offsets=True)
    assert capsys.readouterr().out.split()[0] == "fox"


def test_bad_setfit_configs_are_one_line_errors(tmp_path, tiny_bert_dir):
    base = {"task": "classify", "model": {"name": "x"}, "data": {"train": "t.jsonl"}}
    with pytest.raises(TunelabError) as e:  # lora is the default method
        from_dict({**base, "classify": {"setfit": True}})
    assert "method 'lora' does not apply" in str(e.value) and "method.name: full" in str(e.value)
    for bad, fragment in (({"pairs_per_example": 0}, "greater than or equal to 1"), ("yes", "not true, false"),
                          ({"pairs": 3}, "unknown key"), ({"head_c": -1}, "greater than 0")):
        with pytest.raises(TunelabError) as e:
            from_dict({**base, "method": {"name": "full"}, "classify": {"setfit": bad}})
        assert fragment in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(TunelabError) as e:
        from_dict({**base, "task": "sft", "method": {"name": "full"}, "classify": {"setfit": True}})
    assert "option of task classify" in str(e.value)
    cfg = from_dict({**base, "method": {"name": "full"}, "classify": {"setfit": False}})
    assert cfg.classify.setfit is None and cfg.train.lr == 2e-4  # off: the full method's defaults
