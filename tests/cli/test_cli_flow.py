"""The CLI end to end on the tiny model: train -> generate -> chat."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TUNELAB = [sys.executable, "-m", "tunelab"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("cli")
    cfg = tmp / "c.yaml"
    cfg.write_text(f"""model: {{name: {tiny_model_dir}}}
data:
  train: {ROOT}/examples/data/tunebot/train.jsonl
  val_split: 0.1
method: {{name: lora, r: 4}}
train: {{epochs: 1, batch_size: 16, lr: 0.003}}
output: {{dir: {tmp}/runs, name: cli}}
""")
    r = subprocess.run([*TUNELAB, "train", str(cfg), "--quiet", "train.max_steps=3"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "3 steps" in r.stdout and "run saved to" in r.stdout
    return tmp / "runs" / "cli", cfg


def test_train_writes_run_and_refuses_rerun(cli_run):
    run, cfg = cli_run
    assert (run / "DONE").exists()
    r = subprocess.run([*TUNELAB, "train", str(cfg), "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "already finished" in r.stderr and "--overwrite" in r.stderr


def test_generate_prints_reply(cli_run):
    run, _ = cli_run
    r = subprocess.run([*TUNELAB, "generate", str(run), "-p", "hi", "-p", "thanks", "--max-new-tokens", "3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("### ") == 2


def test_chat_reset_and_quit(cli_run):
    run, _ = cli_run
    r = subprocess.run([*TUNELAB, "chat", str(run), "--max-new-tokens", "3"], input="hello\n/reset\nagain\n/quit\n",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("bot> ") == 2 and "history cleared" in r.stdout
