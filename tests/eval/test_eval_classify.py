"""`tunelab eval` on a classify run: accuracy, macro-F1 and the confusion matrix equal what
`Classifier.predict` and eval/classification.py give; mixing it with a generative model is one line."""

from __future__ import annotations

import json

import pytest

from tunelab.cli.main import run as tunelab

WORDS = {"fox": ["quick", "brown", "fox", "jumps"], "dog": ["lazy", "dog", "loss", "python"]}


def cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        tunelab([*map(str, args)])
    return e.value.code


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    from tunelab.config import from_dict
    from tunelab.train.recipes.classify import run_classify

    tmp = tmp_path_factory.mktemp("evalcls")
    rows = [{"text": " ".join(WORDS[lab][i % 4:] + WORDS[lab][:i % 4]), "label": lab}
            for i in range(8) for lab in ("fox", "dog")]
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = from_dict({"task": "classify", "model": {"name": str(tiny_model_dir)},
                     "data": {"train": str(data), "validation": str(data), "max_length": 16},
                     "classify": {"labels": ["dog", "fox"]}, "method": {"name": "lora", "r": 4},
                     "train": {"lr": 1e-2, "epochs": 1, "batch_size": 8, "precision": "fp32"},
                     "output": {"dir": str(tmp / "runs"), "name": "c"}})
    run_classify(cfg, quiet=True)
    return tmp, tmp / "runs" / "c", data


def test_classify_run_metrics(trained):
    from tunelab.eval.classification import classification_metrics
    from tunelab.infer.classify import Classifier

    tmp, run, data = trained
    assert cli("eval", run, "--data", data, "--out", tmp / "out") == 0
    res = json.loads((tmp / "out" / "results.json").read_text())
    texts = [json.loads(x)["text"] for x in data.read_text().splitlines()]
    truth = [json.loads(x)["label"] for x in data.read_text().splitlines()]
    clf = Classifier.from_run(run)
    preds = [p["label"] for p in clf.predict(texts)]
    want = classification_metrics([clf.labels.index(t) for t in truth], [clf.labels.index(p) for p in preds],
                                  clf.labels)
    m = res["models"][0]
    assert m["metrics"]["accuracy"]["value"] == pytest.approx(want["accuracy"])
    assert m["metrics"]["macro_f1"]["value"] == pytest.approx(want["macro_f1"])
    assert m["confusion"] == want["confusion"]
    assert [ex["models"]["c"]["reply"] for ex in res["examples"]] == preds
    assert "Confusion matrix" in (tmp / "out" / "report.md").read_text()


def test_classify_run_with_a_generative_model_is_one_line(trained, tiny_model_dir, capsys):
    tmp, run, data = trained
    assert cli("eval", run, tiny_model_dir, "--data", data, "--out", tmp / "o2") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "classify runs compare only with classify runs" in err[0]
