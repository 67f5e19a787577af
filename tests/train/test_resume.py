"""A run killed with SIGKILL mid-epoch and resumed ends with the same adapter as an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

from safetensors.torch import load_file

from tunelab.train.state import list_checkpoints


def write_cfg(tmp_path, model_dir, name):
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""model: {{name: {model_dir}}}
data:
  train: examples/data/tunebot/train.jsonl
  validation: examples/data/tunebot/validation.jsonl
method: {{name: lora, r: 4, dropout: 0.1}}
train: {{lr: 0.003, max_steps: 30, batch_size: 4, save_every: 3, seed: 7, precision: fp32}}
output: {{dir: {tmp_path}/runs, name: {name}}}
""")
    return p


def tunelab(*args):
    return [sys.executable, "-m", "tunelab", *args]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_model_dir):
    ref = subprocess.run(tunelab("train", str(write_cfg(tmp_path, tiny_model_dir, "ref")), "--quiet"),
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr

    cfg = write_cfg(tmp_path, tiny_model_dir, "killed")
    ckpts = tmp_path / "runs" / "killed" / "checkpoints"
    proc = subprocess.Popen(tunelab("train", str(cfg), "--quiet"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(s >= 9 for s in list_checkpoints(ckpts)):
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    run = tmp_path / "runs" / "killed"
    assert not (run / "DONE").exists() and not (run / "adapter").exists()

    resumed = subprocess.run(tunelab("train", str(cfg), "--quiet", "--resume"), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _adapter(tmp_path / "runs" / "ref"), _adapter(run)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    steps = [r["step"] for r in map(__import__("json").loads, (run / "metrics.jsonl").read_text().splitlines())
             if "loss" in r]
    assert steps == list(range(1, 31))  # no step lost or logged twice


def test_resume_errors(tmp_path, tiny_model_dir):
    cfg = write_cfg(tmp_path, tiny_model_dir, "none")
    r = subprocess.run(tunelab("train", str(cfg), "--quiet", "--resume"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "nothing to resume" in r.stderr


def _adapter(run):
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))
