"""task: classify on tiny random models: LoRA (decoder), freeze (encoder), full; head saved and reloaded exactly.

The LoRA run is trained and reloaded under both precision paths, `train.precision` fp32 and bf16
(bf16 autocast; the CPU runs it on AVX2 too, only slower), so the result does not depend on which
path `auto` picks on the machine. Tests about something else pin fp32.
"""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from tunelab.config import from_dict
from tunelab.errors import TunelabError

FOX = ["quick", "brown", "fox", "jumps", "video", "thanks", "great"]
DOG = ["lazy", "dog", "loss", "gradient", "python", "lists", "step"]


def write_toy(path, n, seed, dog_every: int = 2):
    """A trivially separable set: label 'fox' texts use only FOX words, 'dog' texts only DOG words;
    every `dog_every`-th record (i % dog_every == 1) is a dog: 2 balances the classes, 3 makes dogs a third."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            label = "dog" if i % dog_every == 1 else "fox"
            words = [rng.choice(FOX if label == "fox" else DOG) for _ in range(rng.randint(3, 7))]
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    return write_toy(d / "train.jsonl", 64, 1), write_toy(d / "val.jsonl", 32, 2)


def build_tiny_bert(out):
    """A tiny random BERT encoder (2 layers x hidden 32) with tunelab's tiny BPE tokenizer."""
    from transformers import BertConfig, BertModel

    from tunelab.models.tiny import build_tokenizer

    tok = build_tokenizer()
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


def cls_cfg(tmp_path, model, train_file, val_file, name="c", **over):
    d = {"task": "classify", "model": {"name": str(model)},
         "data": {"train": str(train_file), "validation": str(val_file), "max_length": 32},
         "method": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
         "train": {"lr": 1e-2, "epochs": 4, "batch_size": 16, "warmup_ratio": 0.0, "scheduler": "constant",
                   "precision": "fp32"},
         "output": {"dir": str(tmp_path / "runs"), "name": name}}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v}
    return from_dict(d)


# How far two evaluations of the same trained model may be apart, per precision path, in steps of the
# dtype at the largest logit (eps * max|logit|; eps = 2**-7 for bf16, 2**-23 for fp32). Evaluating the
# same text in another batch (other padding, other kernel blocking and accumulation order) can round
# the logits, and the hidden states feeding them, the other way. Under bf16 autocast those are bf16
# numbers: allow 4 bf16 steps (seen: 1 step, 0.0078 at |logit| ~ 2). In fp32: 8 fp32 steps (seen: 2).
# The mean cross-entropy moves by at most 2x the largest logit change (its gradient in the logits,
# softmax - one_hot, has L1 norm <= 2). A wrong head is far outside: the untrained one scores >= 0.2 worse.
LOGIT_ULPS = {"fp32": 8, "bf16": 4}
EPS = {"fp32": torch.finfo(torch.float32).eps, "bf16": torch.finfo(torch.bfloat16).eps}


def logit_tol(precision: str, logits: torch.Tensor) -> float:
    return LOGIT_ULPS[precision] * EPS[precision] * float(logits.abs().max())


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def lora_run(request, tmp_path_factory, tiny_model_dir, toy):
    from tunelab.train.recipes.classify import run_classify

    cfg = cls_cfg(tmp_path_factory.mktemp("cls"), tiny_model_dir, *toy, train={"precision": request.param})
    return cfg, run_classify(cfg, quiet=True)


def test_lora_learns_a_separable_set(lora_run):
    _, out = lora_run
    assert out.labels == ["dog", "fox"]  # sorted label names
    assert out.after["val_loss"] < out.before["val_loss"] - 0.2
    assert out.after["accuracy"] >= 0.9 > out.before["accuracy"] + 0.2
    assert out.result.steps == 16  # ceil(64 / 16) = 4 steps x 4 epochs
    rows = [json.loads(x) for x in (out.run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "accuracy" in r]
    assert evals[0]["event"] == "before" and len(evals) == 5  # before + one per epoch
    assert {"macro_f1", "precision/dog", "recall/fox", "val_loss"} <= set(evals[-1])


def test_run_directory_and_report(lora_run):
    _, out = lora_run
    names = {p.name for p in out.run_dir.iterdir()}
    assert {"config.yaml", "labels.json", "tokenizer", "adapter", "metrics.jsonl", "report.md", "confusion.png",
            "DONE"} <= names
    assert json.loads((out.run_dir / "labels.json").read_text())["labels"] == ["dog", "fox"]
    report = (out.run_dir / "report.md").read_text()
    assert "| accuracy | " in report and "before (untrained head)" in report and "confusion.png" in report
    assert f"| accuracy | {out.before['accuracy']:.4f} | {out.after['accuracy']:.4f} |" in report


def test_adapter_holds_the_head_and_reloads_exactly(lora_run, toy):
    from tunelab.infer.classify import Classifier

    cfg, out = lora_run
    precision = cfg.train.precision
    adapter = out.run_dir / "adapter"
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert "base_model.model.score.weight" in weights  # the trained head, saved whole
    assert any("lora_A" in k for k in weights)
    assert "score" in json.loads((adapter / "adapter_config.json").read_text())["modules_to_save"]
    torch.manual_seed(1234)  # a different fresh head underneath: the adapter's must replace it
    clf = Classifier.from_run(out.run_dir)
    assert clf.amp == (torch.bfloat16 if precision == "bf16" else None)  # the run's precision path, not the machine's
    val = [json.loads(x) for x in open(toy[1])]
    logits = clf.logits([r["text"] for r in val], batch_size=7)  # other batches than the recipe's evaluation
    y = torch.tensor([clf.labels.index(r["label"]) for r in val])
    # the same validation loss and accuracy as the trained model measured in the recipe (tolerances: LOGIT_ULPS)
    tol = logit_tol(precision, logits)
    assert float(torch.nn.functional.cross_entropy(logits, y)) == pytest.approx(out.after["val_loss"], abs=2 * tol)
    margin = (logits[:, 0] - logits[:, 1]).abs()
    undecided = int((margin <= 2 * tol).sum())  # examples whose argmax such a difference could flip
    assert abs(float((logits.argmax(-1) == y).float().mean()) - out.after["accuracy"]) <= undecided / len(val)
    # and plain peft gives the same logits (both without autocast: fp32)
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(str(lora_run[0].model.name), num_labels=2)
    base.config.pad_token_id = clf.tokenizer.pad_token_id
    plain = PeftModel.from_pretrained(base, str(adapter)).eval()
    ids = clf.tokenizer(["quick brown fox"], return_tensors="pt")
    with torch.no_grad():
        a, b = plain(**ids).logits, clf.model(**ids).logits
        assert torch.allclose(a, b, rtol=0, atol=logit_tol("fp32", a))


def test_freeze_trains_head_pooler_and_last_layer(tmp_path, tiny_bert_dir, toy):
    from tunelab.infer.classify import Classifier, load_sequence_classifier
    from tunelab.train.recipes.classify import adapt, run_classify

    cfg = cls_cfg(tmp_path, tiny_bert_dir, *toy, method={"name": "freeze", "freeze_layers": 1})
    model, _, head = load_sequence_classifier(str(tiny_bert_dir), ["dog", "fox"])
    assert head == ["classifier"]
    adapt(model, cfg, head)
    trained = {n.split(".weight")[0].split(".bias")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("bert.encoder.layer.1.", "bert.pooler.", "classifier")) for n in trained)
    assert any(n.startswith("bert.encoder.layer.1.") for n in trained) and "classifier" in trained

    out = run_classify(cfg, quiet=True)
    assert (out.run_dir / "model").is_dir() and not (out.run_dir / "adapter").exists()
    assert out.after["val_loss"] < out.before["val_loss"]
    clf = Classifier.from_run(out.run_dir)
    base = load_sequence_classifier(str(tiny_bert_dir), ["dog", "fox"])[0]
    emb = "bert.embeddings.word_embeddings.weight"
    sd, sb = clf.model.state_dict(), base.state_dict()
    assert torch.equal(sd[emb], sb[emb])  # frozen
    assert not torch.equal(sd["bert.encoder.layer.1.output.dense.weight"], sb["bert.encoder.layer.1.output.dense.weight"])
    assert torch.equal(sd["bert.encoder.layer.0.output.dense.weight"], sb["bert.encoder.layer.0.output.dense.weight"])


def test_full_method_trains_every_weight(tmp_path, tiny_model_dir, toy):
    from tunelab.infer.classify import Classifier, load_sequence_classifier
    from tunelab.train.recipes.classify import run_classify

    cfg = cls_cfg(tmp_path, tiny_model_dir, *toy, method={"name": "full"}, train={"lr": 1e-3, "epochs": 2})
    out = run_classify(cfg, quiet=True)
    assert out.after["val_loss"] < out.before["val_loss"]
    clf = Classifier.from_run(out.run_dir)
    base = load_sequence_classifier(str(tiny_model_dir), ["dog", "fox"])[0].state_dict()
    tuned = clf.model.state_dict()
    assert not torch.equal(tuned["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    assert not torch.equal(tuned["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])
    assert clf.model.config.id2label == {0: "dog", 1: "fox"}


def test_bad_labels_and_methods_are_refused_before_anything_is_written(tmp_path, tiny_model_dir, toy):
    from tunelab.train.recipes.classify import run_classify

    cfg = cls_cfg(tmp_path, tiny_model_dir, *toy, classify={"labels": ["fox", "cat"]})
    with pytest.raises(TunelabError, match=r"train.jsonl:\d+: field 'label': 'dog' is not in classify.labels"):
        run_classify(cfg, quiet=True)
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"text": "lazy dog", "label": "cat"}) + "\n")
    with pytest.raises(TunelabError, match="'cat' never occurs in the training data"):
        run_classify(cls_cfg(tmp_path, tiny_model_dir, toy[0], odd), quiet=True)
    odd.write_text(json.dumps({"text": "lazy dog", "label": [1]}) + "\n")
    with pytest.raises(TunelabError, match="must be a string, integer or boolean"):
        run_classify(cls_cfg(tmp_path, tiny_model_dir, toy[0], odd), quiet=True)
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"text": "lazy dog", "label": "dog"}) + "\n")
    with pytest.raises(TunelabError, match="at least 2 labels"):
        run_classify(cls_cfg(tmp_path, tiny_model_dir, one, one), quiet=True)
    with pytest.raises(TunelabError, match="not available for task classify"):
        run_classify(cls_cfg(tmp_path, tiny_model_dir, *toy, method={"name": "qlora"}), quiet=True)
    assert not (tmp_path / "runs").exists()


def test_pad_token_added_when_the_tokenizer_has_none(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.infer.classify import PAD_TOKEN, ensure_pad

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token, tok.eos_token = None, None
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    rows = model.get_input_embeddings().weight.shape[0]
    old = model.get_input_embeddings().weight[:rows].detach().clone()
    ensure_pad(model, tok)
    w = model.get_input_embeddings().weight
    assert tok.pad_token == PAD_TOKEN and tok.pad_token_id == rows == model.config.pad_token_id
    assert w.shape[0] == rows + 1
    assert torch.allclose(w[rows], old.mean(0)) and torch.equal(w[:rows], old)


def test_pad_is_eos_for_a_decoder_without_pad(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunelab.infer.classify import ensure_pad

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = None
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    ensure_pad(model, tok)
    assert tok.pad_token_id == tok.eos_token_id == model.config.pad_token_id
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
