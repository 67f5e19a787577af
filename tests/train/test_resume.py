"""A run killed with SIGKILL mid-epoch and resumed, or stopped with Ctrl-C and simply run again, ends with the
same adapter (and losses) as an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

from tunelab.train.state import list_checkpoints

ROOT = Path(__file__).resolve().parents[2]


def write_cfg(tmp_path, model_dir, name):
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""model: {{name: {model_dir}}}
data:
  train: {ROOT}/examples/data/tunebot/train.jsonl
  validation: {ROOT}/examples/data/tunebot/validation.jsonl
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


def _no_sigint_ignore():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background job starts with SIGINT ignored; a terminal's does not


def _losses(run):
    rows = map(__import__("json").loads, (run / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_ctrl_c_then_plain_rerun_matches_uninterrupted(tmp_path, tiny_model_dir):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) mid-run: exit 130, one line saying how
    to resume, no DONE; the same command again resumes without a flag and ends exactly like a run never
    interrupted (every step's loss and the adapter), then drops its checkpoints (keep_checkpoints: none)."""
    ref = subprocess.run(tunelab("train", str(write_cfg(tmp_path, tiny_model_dir, "ref")), "--quiet"),
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    cfg = write_cfg(tmp_path, tiny_model_dir, "cut")
    run = tmp_path / "runs" / "cut"
    proc = subprocess.Popen(tunelab("train", str(cfg), "--quiet"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_no_sigint_ignore, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len(_losses(run)) >= 13:
            os.killpg(proc.pid, signal.SIGINT)
            break
        time.sleep(0.005)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines[-1].startswith("interrupted at step ") and "run the same command again to resume" in lines[-1], err
    assert "Traceback" not in err and not (run / "DONE").exists() and not (run / "adapter").exists()
    step = max(list_checkpoints(run / "checkpoints"))
    assert 13 <= step < 30 and sorted(_losses(run)) == list(range(1, step + 1))

    again = subprocess.run(tunelab("train", str(cfg)), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"resuming {run} from its checkpoint at step {step}" in again.stderr
    assert _losses(run) == _losses(tmp_path / "runs" / "ref")  # every step, those after the Ctrl-C included
    a, b = _adapter(tmp_path / "runs" / "ref"), _adapter(run)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert (run / "DONE").exists() and not (run / "checkpoints").exists()
    assert f"{30 - step} steps" in again.stdout and f"resumed at step {step}" in again.stdout


def test_a_rerun_with_another_config_says_how_to_go_on(tmp_path, tiny_model_dir):
    cfg = write_cfg(tmp_path, tiny_model_dir, "changed")
    proc = subprocess.Popen(tunelab("train", str(cfg), "--quiet"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_no_sigint_ignore, start_new_session=True)
    ckpts = tmp_path / "runs" / "changed" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list_checkpoints(ckpts):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode == 130 and list_checkpoints(ckpts)
    r = subprocess.run(tunelab("train", str(cfg), "--quiet", "train.lr=0.001"), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "train.lr: 0.003 -> 0.001" in r.stderr and "--overwrite" in r.stderr
    assert list_checkpoints(ckpts)  # nothing wiped
    r = subprocess.run(tunelab("train", str(cfg), "--quiet", "train.lr=0.001", "--overwrite"), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_resume_errors(tmp_path, tiny_model_dir):
    cfg = write_cfg(tmp_path, tiny_model_dir, "none")
    r = subprocess.run(tunelab("train", str(cfg), "--quiet", "--resume"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "nothing to resume" in r.stderr


def _adapter(run):
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))
