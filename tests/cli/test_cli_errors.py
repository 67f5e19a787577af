"""Bad input through the real CLI: one line on stderr, exit 2, no traceback; --debug shows it."""

import json
import subprocess
import sys

import pytest

TUNELAB = [sys.executable, "-m", "tunelab"]


def run(*args, cwd=None):
    return subprocess.run([*TUNELAB, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def write_cfg(tmp_path, train, extra=""):
    p = tmp_path / "c.yaml"
    p.write_text(f"model:\n  name: tiny-llama\ndata:\n  train: {train}\noutput:\n  dir: {tmp_path}/runs\n{extra}")
    return p


def assert_one_line_error(r, fragment):
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert fragment in lines[0]
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module", autouse=True)
def _tiny_home(tmp_path_factory, tiny_model_dir):
    return tiny_model_dir


def test_missing_data_file(tmp_path):
    r = run("train", str(write_cfg(tmp_path, tmp_path / "nope.jsonl")))
    assert_one_line_error(r, "data.train: file not found")
    assert not (tmp_path / "runs").exists()  # nothing written


def test_bad_json_line_names_file_and_line(tmp_path):
    d = tmp_path / "d.jsonl"
    d.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n{oops\n")
    r = run("train", str(write_cfg(tmp_path, d)))
    assert_one_line_error(r, f"{d}:2: invalid JSON")


def test_missing_field_and_empty_dataset(tmp_path):
    d = tmp_path / "d.jsonl"
    d.write_text(json.dumps({"instruction": "a", "input": "b"}) + "\n")
    assert_one_line_error(run("train", str(write_cfg(tmp_path, d))), "cannot tell the record format")
    d.write_text("\n\n")
    assert_one_line_error(run("train", str(write_cfg(tmp_path, d))), "the dataset is empty")


def test_unknown_key_alias_and_template(tmp_path):
    d = tmp_path / "d.jsonl"
    d.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    cfg = write_cfg(tmp_path, d, "train:\n  epoch: 1\n")
    assert_one_line_error(run("train", str(cfg)), "did you mean 'epochs'?")
    cfg = write_cfg(tmp_path, d)
    assert_one_line_error(run("train", str(cfg), "model.name=smolm2-135m-instruct"), "unknown model")
    assert_one_line_error(run("train", str(cfg), "data.template=chatmll"), "unknown template 'chatmll'")


def test_debug_shows_traceback(tmp_path):
    r = run("--debug", "train", str(write_cfg(tmp_path, tmp_path / "nope.jsonl")))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_help_on_every_command():
    for cmd in ([], ["train"], ["quickstart"], ["generate"], ["chat"], ["models"]):
        r = run(*cmd, "--help")
        assert r.returncode == 0 and "Usage" in r.stdout, cmd


def test_generate_on_incomplete_run(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("model: {name: tiny-llama}\n")
    r = run("generate", str(tmp_path / "run"), "-p", "hi")
    assert_one_line_error(r, "is incomplete")
