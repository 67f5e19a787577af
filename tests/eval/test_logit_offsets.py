"""Per-class logit offsets: tuned on a constructed validation set they raise macro-F1 (the rare class,
never predicted from the raw logits, is found), and `Classifier.predict` applies them."""

import pytest
import torch

from tunelab.eval.classification import classification_metrics
from tunelab.eval.logit_offsets import tune_offsets

LABELS = ["neg", "rare", "pos"]
# raw logits: the rare class always loses to pos by 0.55, and pos examples have it 1.5 below pos
ROWS = {"neg": [2.0, 0.0, 0.0], "rare": [0.0, 1.45, 2.0], "pos": [0.0, 0.5, 2.0]}
Y = [0] * 20 + [1] * 5 + [2] * 35


def val_logits():
    return torch.tensor([ROWS[LABELS[y]] for y in Y])


def test_offsets_raise_macro_f1_and_find_the_rare_class():
    z = val_logits()
    raw = classification_metrics(Y, z.argmax(-1).tolist(), LABELS)
    assert raw["per_class"]["rare"]["f1"] == 0.0  # never predicted
    t = tune_offsets(z, Y, LABELS)
    assert t["macro_f1_before"] == pytest.approx(raw["macro_f1"])
    # b_rare must exceed 0.55 (2.0 - 1.45) and stay under 1.5 (2.0 - 0.5): the grid's first such value
    # nearest 0 is 0.6; class 0 is the reference (0), pos needs nothing
    assert t["offsets"] == [0.0, 0.6, 0.0]
    assert t["macro_f1_after"] == 1.0 > t["macro_f1_before"]
    tuned = classification_metrics(Y, (z + torch.tensor(t["offsets"])).argmax(-1).tolist(), LABELS)
    assert tuned["macro_f1"] == 1.0


def test_offsets_stay_zero_when_nothing_improves():
    z = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    assert tune_offsets(z, [0, 1, 2], LABELS)["offsets"] == [0.0, 0.0, 0.0]


class Tok:
    """A tokenizer of one token per text: the text's label index + 1 (0 is the pad)."""

    pad_token_id = 0
    truncation_side = "right"

    def __call__(self, texts, truncation=True, max_length=8):
        return {"input_ids": [[LABELS.index(t) + 1] for t in texts]}


class RowModel(torch.nn.Module):
    """logits = ROWS[the text's class] for each example (its first token)."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor([[0.0] * 3] + [ROWS[x] for x in LABELS]))
        self.config = type("Cfg", (), {"num_labels": 3})()

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": self.table[input_ids[:, 0]]})()


def test_predict_applies_the_offsets():
    from tunelab.infer.classify import Classifier

    raw = Classifier(RowModel(), Tok(), LABELS)
    tuned = Classifier(RowModel(), Tok(), LABELS, offsets=[0.0, 0.6, 0.0])
    assert [p["label"] for p in raw.predict(LABELS)] == ["neg", "pos", "pos"]
    out = tuned.predict(LABELS)
    assert [p["label"] for p in out] == ["neg", "rare", "pos"]
    want = torch.softmax(torch.tensor(ROWS["rare"]) + torch.tensor([0.0, 0.6, 0.0]), -1)
    assert [out[1]["probs"][x] for x in LABELS] == pytest.approx(want.tolist(), abs=1e-6)
    assert torch.equal(tuned.logits(["rare"]), torch.tensor([ROWS["rare"]]))  # logits() stays raw
