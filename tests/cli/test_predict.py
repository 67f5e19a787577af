"""`tunelab train` (task classify) and `tunelab predict` through the real CLI: text and file modes, errors."""

import json
import subprocess
import sys

import pytest

TUNELAB = [sys.executable, "-m", "tunelab"]
WORDS = {"fox": ["quick", "brown", "fox", "jumps"], "dog": ["lazy", "dog", "loss", "python"]}


def run(*args):
    return subprocess.run([*TUNELAB, *args], capture_output=True, text=True, timeout=180)


def assert_one_line_error(r, fragment):
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert fragment in lines[0] and "Traceback" not in r.stderr


def write_cfg(tmp, model_dir, train, labels="[dog, fox]"):
    p = tmp / "c.yaml"
    p.write_text(f"task: classify\nmodel:\n  name: {model_dir}\ndata:\n  train: {train}\n  validation: {train}\n"
                 f"  max_length: 16\nclassify:\n  labels: {labels}\nmethod:\n  name: lora\n  r: 4\n"
                 f"train:\n  lr: 1.0e-2\n  epochs: 3\n  batch_size: 8\noutput:\n  dir: {tmp}/runs\n  name: p\n")
    return p


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("predict")
    train = tmp / "train.jsonl"
    rows = [{"text": " ".join(WORDS[lab][i % 4:] + WORDS[lab][:i % 4]), "label": lab}
            for i in range(8) for lab in ("fox", "dog")]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run("train", str(write_cfg(tmp, tiny_model_dir, train)), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "validation accuracy: untrained head" in r.stdout and "tunelab predict" in r.stdout
    return tmp, tmp / "runs" / "p"


def test_text_mode_prints_label_and_probabilities(trained):
    _, rd = trained
    r = run("predict", str(rd), "--text", "quick brown fox", "--text", "lazy dog")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, ["quick brown fox", "lazy dog"]):
        label, probs, echoed = line.split("\t")
        assert label in ("dog", "fox") and echoed == text
        p = dict(kv.split("=") for kv in probs.split())
        assert set(p) == {"dog", "fox"} and abs(sum(map(float, p.values())) - 1) < 2e-3
        assert float(p[label]) == max(map(float, p.values()))


def test_file_mode_writes_every_record_with_its_prediction(trained):
    tmp, rd = trained
    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps({"id": i, "body": t}) + "\n"
                           for i, t in enumerate(["quick fox", "lazy dog", "brown fox jumps"] * 3)))
    out = tmp / "out" / "preds.jsonl"
    r = run("predict", str(rd), "--file", str(src), "--out", str(out), "--field", "body", "--batch-size", "4")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in rows] == list(range(9))
    assert all(x["prediction"] in ("dog", "fox") and set(x["probabilities"]) == {"dog", "fox"} for x in rows)
    assert [x["prediction"] for x in rows[:3]] * 3 == [x["prediction"] for x in rows]  # same text, same label
    assert not list(out.parent.glob("*.tmp"))
    # a record without the field: one-line error naming file:line, no output written
    src.write_text(json.dumps({"body": "fox"}) + "\n" + json.dumps({"text": "dog"}) + "\n")
    bad_out = tmp / "bad.jsonl"
    assert_one_line_error(run("predict", str(rd), "--file", str(src), "--out", str(bad_out), "--field", "body"),
                          f"{src}:2: missing text field 'body'")
    assert not bad_out.exists()


def test_predict_without_input_is_a_one_line_error(trained):
    _, rd = trained
    assert_one_line_error(run("predict", str(rd)), "nothing to classify")


def test_bad_label_exits_2_before_anything_is_written(tmp_path, tiny_model_dir):
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"text": "lazy dog", "label": "dog"}) + "\n"
                     + json.dumps({"text": "quick fox", "label": "cat"}) + "\n")
    assert_one_line_error(run("train", str(write_cfg(tmp_path, tiny_model_dir, train))),
                          f"{train}:2: field 'label': 'cat' is not in classify.labels - one of: dog, fox")
    assert not (tmp_path / "runs").exists()
