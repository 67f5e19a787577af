"""Classification metrics against hand-computed values (and sklearn when it is installed)."""

import random

import pytest

from tunelab.eval.classification import classification_metrics, confusion_matrix, flat_metrics, plot_confusion


def test_docstring_example_by_hand():
    # truth [a, a, b], predicted [a, b, b] -> C = [[1, 1], [0, 1]]
    m = classification_metrics([0, 0, 1], [0, 1, 1], ["a", "b"])
    assert m["confusion"] == [[1, 1], [0, 1]]
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_three_classes_by_hand():
    # truth:     a a a b b c c c c
    # predicted: a a b b b a c c a
    y = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    p = [0, 0, 1, 1, 1, 0, 2, 2, 0]
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["confusion"] == [[2, 1, 0], [0, 2, 0], [2, 0, 2]]
    assert m["accuracy"] == pytest.approx(6 / 9)
    # a: P = 2/4, R = 2/3, F1 = 2*(1/2)(2/3)/(1/2+2/3) = 4/7
    assert m["per_class"]["a"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["a"]["f1"] == pytest.approx(4 / 7)
    # b: P = 2/3, R = 1, F1 = 0.8;  c: P = 1, R = 1/2, F1 = 2/3
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((4 / 7 + 0.8 + 2 / 3) / 3)


def test_zero_divisions_give_zero():
    # class b never occurs and is never predicted; class c is never predicted
    m = classification_metrics([0, 2], [0, 0], ["a", "b", "c"])
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"]["c"]["precision"] == 0.0 and m["per_class"]["c"]["recall"] == 0.0
    assert m["per_class"]["a"]["precision"] == 0.5 and m["per_class"]["a"]["recall"] == 1.0
    assert m["macro_f1"] == pytest.approx((2 / 3) / 3)
    flat = flat_metrics(m)
    assert set(flat) == {"accuracy", "macro_f1", "precision/a", "recall/a", "precision/b", "recall/b",
                         "precision/c", "recall/c"}


def test_confusion_matrix_rejects_length_mismatch():
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 2)


def test_parity_with_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    y = [rng.randrange(4) for _ in range(200)]
    p = [t if rng.random() < 0.6 else rng.randrange(4) for t in y]
    m = classification_metrics(y, p, ["w", "x", "y", "z"])
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, p, average="macro", zero_division=0))
    prec, rec, _, _ = sk.precision_recall_fscore_support(y, p, labels=[0, 1, 2, 3], zero_division=0)
    assert [m["per_class"][k]["precision"] for k in "wxyz"] == pytest.approx(list(prec))
    assert [m["per_class"][k]["recall"] for k in "wxyz"] == pytest.approx(list(rec))
    assert m["confusion"] == sk.confusion_matrix(y, p).tolist()


def test_confusion_png_is_written(tmp_path):
    out = tmp_path / "confusion.png"
    plot_confusion([[3, 1], [0, 4]], ["neg", "pos"], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp.png"))
