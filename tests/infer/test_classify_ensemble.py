"""infer/classify_ensemble.py: the ensemble's logits are log of the members' mean probability, and
`predict` applies the ensemble's own offsets to them."""

import math

import pytest
import torch

from tunelab.infer.classify_ensemble import EnsembleClassifier, mean_probability_logits


class FixedLogits:
    def __init__(self, z):
        self.z = torch.tensor(z, dtype=torch.float32)

    def logits(self, texts, batch_size=32):
        return self.z[: len(texts)]


def test_mean_probability_logits_values():
    a, b = torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    z = mean_probability_logits([a, b])
    assert z.shape == (2, 2)
    # row 0: the members mirror each other -> 0.5 / 0.5
    assert z[0].tolist() == pytest.approx([math.log(0.5)] * 2, abs=1e-6)
    # row 1: (softmax([0, 0]) + softmax([1, -1])) / 2
    p1 = 1 / (1 + math.exp(-2))
    assert z[1].exp().tolist() == pytest.approx([(0.5 + p1) / 2, (0.5 + 1 - p1) / 2], abs=1e-6)
    # one member: its own log-softmax
    assert torch.allclose(mean_probability_logits([a]), torch.log_softmax(a, -1), atol=1e-6)


def test_probabilities_are_averaged_not_logits():
    # a sure member (logits +-20) and two that lean the other way: mean logits would follow the sure one,
    # mean probabilities follow the majority
    sure, lean = [[20.0, -20.0]], [[-1.0, 1.0]]
    z = mean_probability_logits([torch.tensor(sure), torch.tensor(lean), torch.tensor(lean)])
    assert int(z.argmax()) == 1
    assert int((torch.tensor(sure) + 2 * torch.tensor(lean)).argmax()) == 0


def test_predict_uses_the_ensemble_offsets():
    members = [FixedLogits([[1.0, 0.0, 0.0]]), FixedLogits([[0.5, 0.0, 0.2]])]
    plain = EnsembleClassifier(members, ["a", "b", "c"])
    (p,) = plain.predict(["x"])
    assert p["label"] == "a" and sum(p["probs"].values()) == pytest.approx(1.0, abs=1e-6)
    want = torch.softmax(mean_probability_logits([m.z for m in members])[0], -1)
    assert [p["probs"][k] for k in "abc"] == pytest.approx(want.tolist(), abs=1e-6)
    shifted = EnsembleClassifier(members, ["a", "b", "c"], offsets=[0.0, 5.0, 0.0])
    assert shifted.predict(["x"])[0]["label"] == "b"
    assert torch.equal(shifted.logits(["x"]), plain.logits(["x"]))  # logits stay raw
