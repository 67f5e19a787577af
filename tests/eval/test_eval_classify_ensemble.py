"""eval/classify_ensemble.py and `tunelab ensemble`: two tiny classify runs (two train seeds) averaged into
one folder that `predict`, `tunelab.load` and `tunelab eval` read like a run; every bad input is one line."""

import json
import subprocess
import sys

import pytest
import torch

from tunelab.config import from_dict
from tunelab.errors import TunelabError

WORDS = {"fox": ["quick", "brown", "fox", "jumps"], "dog": ["lazy", "dog", "loss", "python"],
         "cat": ["video", "thanks", "great", "step"]}
TUNELAB = [sys.executable, "-m", "tunelab"]


def rows(counts):
    return [{"text": " ".join(WORDS[lab][i % 4:] + WORDS[lab][:i % 4]), "label": lab}
            for lab, n in counts.items() for i in range(n)]


def train(tmp, tiny_model_dir, seed, labels=None, name=None):
    from tunelab.train.recipes.classify import run_classify

    data = tmp / "t.jsonl"
    if not data.exists():
        data.write_text("".join(json.dumps(r) + "\n" for r in rows({"fox": 8, "dog": 4, "cat": 2})))
    cfg = from_dict({"task": "classify", "model": {"name": str(tiny_model_dir)},
                     # relative paths, read from config_dir (as a config file's are): the ensemble must resolve
                     # data.validation the same way, from any working folder
                     "data": {"train": "t.jsonl", "validation": "t.jsonl", "max_length": 16}, "config_dir": str(tmp),
                     "method": {"name": "lora", "r": 4}, "classify": {"labels": labels} if labels else {},
                     "train": {"lr": 1e-2, "epochs": 1, "batch_size": 8, "precision": "fp32", "seed": seed},
                     "output": {"dir": str(tmp / "runs"), "name": name or f"s{seed}"}})
    return run_classify(cfg, quiet=True).run_dir


@pytest.fixture(scope="module")
def members(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("ensemble")
    return tmp, [train(tmp, tiny_model_dir, s) for s in (1, 2)]


def one_line_error(r, fragment):
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr


def test_build_writes_a_run_like_folder_whose_figures_are_the_members_mean_probability(members, monkeypatch,
                                                                                        tmp_path):
    from tunelab.eval.classification import classification_metrics
    from tunelab.eval.classify_ensemble import build_ensemble
    from tunelab.infer.classify import Classifier
    from tunelab.infer.classify_ensemble import EnsembleClassifier, load_classifier

    tmp, runs = members
    monkeypatch.chdir(tmp_path)  # no t.jsonl here: the validation file is found through the run's config_dir
    out = tmp / "runs" / "ens"
    rep = build_ensemble(runs, out)
    assert rep["validation"] == str(tmp / "t.jsonl")
    assert {p.name for p in out.iterdir()} == {"config.yaml", "labels.json", "ensemble.json", "offsets.json",
                                               "report.md", "DONE"}
    assert not list(out.parent.glob(".ens.*"))  # no temporary folder left
    spec = json.loads((out / "ensemble.json").read_text())
    assert spec["members"] == [str(r.resolve()) for r in runs] and spec["labels"] == ["cat", "dog", "fox"]
    # the report's figures, recomputed from the members' raw logits
    data = [json.loads(x) for x in (tmp / "t.jsonl").read_text().splitlines()]
    texts, y = [d["text"] for d in data], [["cat", "dog", "fox"].index(d["label"]) for d in data]
    zs = [Classifier.from_run(r, offsets=False).logits(texts) for r in runs]
    mean = torch.stack([torch.softmax(z, -1) for z in zs]).mean(0).log()
    want = classification_metrics(y, mean.argmax(-1).tolist(), ["cat", "dog", "fox"])["macro_f1"]
    assert rep["n_examples"] == 14 and rep["ensemble"]["raw"]["macro_f1"] == pytest.approx(want, abs=1e-4)
    for r, z in zip(runs, zs):
        own = classification_metrics(y, z.argmax(-1).tolist(), ["cat", "dog", "fox"])["macro_f1"]
        assert rep["members"][str(r.resolve())]["macro_f1"] == pytest.approx(own, abs=1e-4)
    tuned = json.loads((out / "offsets.json").read_text())
    assert tuned["macro_f1_after"] >= tuned["macro_f1_before"] == pytest.approx(want)
    assert rep["ensemble"]["offsets"]["macro_f1"] == pytest.approx(tuned["macro_f1_after"], abs=1e-4)
    assert "ensemble + offsets" in (out / "report.md").read_text()
    # read back: the same logits, the saved offsets applied by predict
    clf = load_classifier(out)
    assert isinstance(clf, EnsembleClassifier) and clf.offsets.tolist() == pytest.approx(tuned["offsets"])
    assert torch.allclose(clf.logits(texts), mean, atol=1e-5)
    assert load_classifier(out, offsets=False).offsets is None


def test_predict_load_and_eval_read_the_ensemble(members):
    import tunelab
    from tunelab.eval.classify_compare import evaluate_classify
    from tunelab.eval.classify_ensemble import build_ensemble

    tmp, runs = members
    out = tmp / "runs" / "ens-read"
    build_ensemble(runs, out, offsets=False)
    assert not (out / "offsets.json").exists()
    r = subprocess.run([*TUNELAB, "predict", str(out), "--text", "quick brown fox"], capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr
    label, probs, _ = r.stdout.strip().split("\t")
    assert label in ("cat", "dog", "fox") and len(probs.split()) == 3
    assert tunelab.load(out).predict(["quick brown fox"])[0]["label"] == label
    res = evaluate_classify([out], tmp / "t.jsonl")
    assert res["n_examples"] == 14 and res["models"][0]["label"] == "ens-read"


def test_cli_builds_and_refuses_to_overwrite_without_the_flag(members):
    tmp, runs = members
    out = tmp / "runs" / "ens-cli"
    r = subprocess.run([*TUNELAB, "ensemble", *map(str, runs), "--out", str(out)], capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr
    assert "validation macro-F1" in r.stdout and f"ensemble of 2 runs written to {out}" in r.stdout
    before = (out / "ensemble.json").read_text()
    (out / "mine.txt").write_text("kept")
    r = subprocess.run([*TUNELAB, "ensemble", *map(str, runs), "--out", str(out)], capture_output=True, text=True,
                       timeout=180)
    one_line_error(r, "already exists")
    assert (out / "mine.txt").read_text() == "kept" and (out / "ensemble.json").read_text() == before
    r = subprocess.run([*TUNELAB, "ensemble", *map(str, runs[::-1]), "--out", str(out), "--overwrite"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert not (out / "mine.txt").exists() and json.loads((out / "ensemble.json").read_text())["members"][0] == \
        str(runs[1].resolve())
    one_line_error(subprocess.run([*TUNELAB, "ensemble", str(runs[0]), "--out", str(tmp / "one")],
                                  capture_output=True, text=True, timeout=180), "at least 2 runs")
    assert not (tmp / "one").exists()


def test_bad_members_are_one_line_errors(members, tiny_model_dir):
    from tunelab.eval.classify_ensemble import build_ensemble
    from tunelab.infer.classify_ensemble import load_classifier

    tmp, runs = members
    other = train(tmp, tiny_model_dir, 3, labels=["fox", "dog", "cat"], name="reordered")
    with pytest.raises(TunelabError, match="has labels"):
        build_ensemble([runs[0], other], tmp / "x")
    with pytest.raises(TunelabError, match="twice"):
        build_ensemble([runs[0], runs[0]], tmp / "x")
    with pytest.raises(TunelabError, match="one of the ensemble's runs"):
        build_ensemble(runs, runs[1])
    with pytest.raises(TunelabError, match="no such run directory"):
        build_ensemble([runs[0], tmp / "nope"], tmp / "x")
    bad = tmp / "bad.jsonl"
    bad.write_text(json.dumps({"text": "quick fox", "label": "fox"}) + "\n" + json.dumps({"text": "a", "label": "emu"}) + "\n")
    with pytest.raises(TunelabError, match="'emu' is not in classify.labels") as e:
        build_ensemble(runs, tmp / "x", data=bad)
    assert e.value.where == f"{bad}:2"
    assert not (tmp / "x").exists()
    ens = tmp / "runs" / "ens-moved"
    build_ensemble(runs, ens)
    with pytest.raises(TunelabError, match="is an ensemble"):
        build_ensemble([ens, runs[0]], tmp / "x")
    spec = json.loads((ens / "ensemble.json").read_text())
    spec["members"][1] = str(tmp / "gone")
    (ens / "ensemble.json").write_text(json.dumps(spec))
    with pytest.raises(TunelabError, match="not found") as e:
        load_classifier(ens)
    assert e.value.where.endswith("ensemble.json:members[1]")
