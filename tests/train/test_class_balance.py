"""task classify, class balance: class weights (sklearn's "balanced"), the weighted loss by hand, the
balanced sampler, and the one-line errors of bad classify / metric_for_best values."""

import math

import pytest
import torch

from tunelab.config import from_dict
from tunelab.errors import TunelabError
from tunelab.train.class_balance import balanced_weights, class_counts, class_weights, oversample

LABELS = ["neg", "neu", "pos"]
Y = [2] * 64 + [0] * 27 + [1] * 9  # 100 examples: pos 64, neg 27, neu 9


def test_auto_weights_are_n_over_k_times_count():
    w = class_weights("auto", LABELS, Y)
    # n / (K * count): 100 / (3 * 27), 100 / (3 * 9), 100 / (3 * 64)
    assert w.tolist() == pytest.approx([100 / 81, 100 / 27, 100 / 192])
    assert sum(c * x for c, x in zip(class_counts(Y, 3), w.tolist())) == pytest.approx(100)  # mean weight 1


@pytest.mark.slow  # importing sklearn (scipy) takes seconds; the formula itself is checked above
def test_auto_weights_equal_sklearn_compute_class_weight():
    sk = pytest.importorskip("sklearn.utils.class_weight")
    import numpy as np

    ref = sk.compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=np.array(Y))
    assert class_weights("auto", LABELS, Y).tolist() == pytest.approx(ref.tolist(), rel=1e-6)


def test_absent_class_gets_zero_and_the_others_count_present_classes_only():
    assert balanced_weights([3, 0, 1]) == pytest.approx([4 / (2 * 3), 0.0, 4 / (2 * 1)])


def test_mapping_none_and_unknown_label():
    assert class_weights({"neu": 5.0}, LABELS, Y).tolist() == [1.0, 5.0, 1.0]
    assert class_weights("none", LABELS, Y) is None
    with pytest.raises(TunelabError) as e:
        class_weights({"neutral": 2.0}, LABELS, Y)
    assert "'neutral', which is not a label" in str(e.value) and "\n" not in str(e.value)


class FixedLogits(torch.nn.Module):
    """model(input_ids, attention_mask).logits = a fixed table row per example (input_ids[:, 0])."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table)

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": self.table[input_ids[:, 0]]})()


def test_weighted_loss_by_hand():
    from tunelab.train.recipes.classify import ClassifyObjective, LabeledIds

    table = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
    w = torch.tensor([0.5, 3.0, 1.0])
    obj = ClassifyObjective(pad_id=0, labels=LABELS, weights=w)
    batch = obj.collate([LabeledIds([0], 0), LabeledIds([1], 1)])
    total, n = obj.loss_sum(FixedLogits(table), batch)

    def ce(z, y):  # -log softmax(z)_y
        return -(z[y] - math.log(sum(math.exp(v) for v in z)))

    assert n == 2
    assert float(total) == pytest.approx(0.5 * ce(table[0], 0) + 3.0 * ce(table[1], 1), rel=1e-6)
    plain, _ = ClassifyObjective(0, LABELS).loss_sum(FixedLogits(table), batch)
    assert float(plain) == pytest.approx(ce(table[0], 0) + ce(table[1], 1), rel=1e-6)


def test_oversample_repeats_every_class_to_the_largest_count():
    ex = list(range(100))
    out = oversample(ex, Y, seed=3)
    labels = [Y[i] for i in out]
    assert len(out) == 3 * 64 and all(labels.count(c) == 64 for c in range(3))
    rare = [i for i in out if Y[i] == 1]  # 9 examples -> 7 full copies + 1 sampled
    assert sorted(set(rare)) == list(range(91, 100)) and sorted(rare.count(i) for i in set(rare))[-1] == 8
    assert out == oversample(ex, Y, seed=3)  # deterministic in the seed


BASE = {"task": "classify", "data": {"train": "x.jsonl"}}


@pytest.mark.parametrize("over, fragment", [
    ({"classify": {"class_weights": "balanced"}}, "classify.class_weights: Value error, 'balanced' is not auto"),
    ({"classify": {"class_weights": {"neu": 0}}}, "every weight must be a number > 0 (label 'neu')"),
    ({"classify": {"sampler": "smote"}}, "classify.sampler"),
    ({"train": {"metric_for_best": "f1"}}, "train.metric_for_best"),
    ({"task": "sft", "train": {"metric_for_best": "macro_f1"}}, "macro_f1 is not a validation metric of task sft"),
])
def test_bad_values_are_one_line_errors(over, fragment):
    with pytest.raises(TunelabError) as e:
        from_dict({**BASE, **over})
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_metric_for_best_defaults_by_task():
    assert from_dict(BASE).train.metric_for_best == "macro_f1"
    assert from_dict({**BASE, "task": "sft"}).train.metric_for_best == "loss"
    assert from_dict({**BASE, "train": {"metric_for_best": "accuracy"}}).train.metric_for_best == "accuracy"
