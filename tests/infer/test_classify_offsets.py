"""A classify run saves its tuned logit offsets (offsets.json) and `Classifier.from_run` / `tunelab
predict` apply them; `--no-offsets` leaves them out; a file that does not match the labels is a one-line error."""

import json

import pytest

from tunelab.config import from_dict
from tunelab.errors import TunelabError

WORDS = {"fox": ["quick", "brown", "fox", "jumps"], "dog": ["lazy", "dog", "loss", "python"],
         "cat": ["video", "thanks", "great", "step"]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    from tunelab.train.recipes.classify import run_classify

    tmp = tmp_path_factory.mktemp("offsets")
    counts = {"fox": 10, "dog": 4, "cat": 2}  # imbalanced
    rows = [{"text": " ".join(WORDS[lab][i % 4:] + WORDS[lab][:i % 4]), "label": lab}
            for lab, n in counts.items() for i in range(n)]
    (tmp / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = from_dict({"task": "classify", "model": {"name": str(tiny_model_dir)},
                     "data": {"train": str(tmp / "t.jsonl"), "validation": str(tmp / "t.jsonl"), "max_length": 16},
                     "method": {"name": "lora", "r": 4}, "classify": {"sampler": "balanced", "offsets": True},
                     "train": {"lr": 1e-2, "epochs": 1, "batch_size": 8, "precision": "fp32"},
                     "output": {"dir": str(tmp / "runs"), "name": "o"}})
    out = run_classify(cfg, quiet=True)
    assert out.result.steps == 4  # balanced sampler: 3 classes x 10 = 30 examples -> ceil(30 / 8)
    return out


def test_the_run_saves_offsets_tuned_on_validation(run_dir):
    saved = json.loads((run_dir.run_dir / "offsets.json").read_text())
    assert saved["labels"] == ["cat", "dog", "fox"] and len(saved["offsets"]) == 3 and saved["offsets"][0] == 0.0
    assert saved["macro_f1_after"] >= saved["macro_f1_before"] == pytest.approx(run_dir.after["macro_f1"])
    assert saved["offsets"] == run_dir.offsets["offsets"]


def test_from_run_and_the_cli_apply_the_offsets_and_no_offsets_leaves_them_out(run_dir):
    from typer.testing import CliRunner

    from tunelab.cli.main import _mount, app
    from tunelab.infer.classify import Classifier

    rd = run_dir.run_dir
    (rd / "offsets.json").write_text(json.dumps({"labels": ["cat", "dog", "fox"], "offsets": [0.0, 50.0, 0.0]}))
    texts = ["quick brown fox", "video thanks"]
    raw = Classifier.from_run(rd, offsets=False)
    z = raw.logits(texts)
    assert [p["label"] for p in raw.predict(texts)] == [raw.labels[i] for i in z.argmax(-1).tolist()]
    assert [p["label"] for p in Classifier.from_run(rd).predict(texts)] == ["dog", "dog"]  # +50 on dog wins
    _mount()
    runner = CliRunner()
    with_offsets = runner.invoke(app, ["predict", str(rd), "--text", texts[0]])
    without = runner.invoke(app, ["predict", str(rd), "--text", texts[0], "--no-offsets"])
    assert with_offsets.exit_code == 0 and without.exit_code == 0, with_offsets.output + without.output
    assert with_offsets.stdout.split("\t")[0] == "dog"
    assert without.stdout.split("\t")[0] == raw.labels[int(z[0].argmax())]


def test_offsets_of_other_labels_are_a_one_line_error(run_dir):
    from tunelab.infer.classify import Classifier

    rd = run_dir.run_dir
    (rd / "offsets.json").write_text(json.dumps({"labels": ["a", "b"], "offsets": [0.0, 1.0]}))
    with pytest.raises(TunelabError) as e:
        Classifier.from_run(rd)
    assert "does not match the run's labels" in str(e.value) and "\n" not in str(e.value)
    assert Classifier.from_run(rd, offsets=False).offsets is None
