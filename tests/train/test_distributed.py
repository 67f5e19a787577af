"""Training on 2 processes (gloo, CPU) against 1: the same update at the same global batch, resume
after the launcher is SIGKILLed, and a run folder written by rank 0 alone.

Three launches share the module (each costs ~10 s of imports): one `torch.distributed.run` of a
script that trains the LoRA and the full fine-tune configs on 2 processes; `tunelab train --nproc 2`
of the LoRA config killed mid-run; and its `--resume`. The references train in this process with
grad_accum 2 (global batch 2 x 2 = 1 process x batch 2 x accumulation 2).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples/data/tunebot/train.jsonl"
VAL = ROOT / "examples/data/tunebot/validation.jsonl"

WORKER = """
import sys
from tunelab.config import load_config
from tunelab.train.recipes.sft import run_sft
for path in sys.argv[1:]:
    run_sft(load_config(path), quiet=True)
"""


def _config(tmp: Path, tiny: Path, name: str, method: str, grad_accum: int, steps: int, lr: float) -> dict:
    data = tmp / "data"
    if not data.exists():
        data.mkdir(parents=True)
        (data / "train.jsonl").write_text("".join(TRAIN.read_text().splitlines(keepends=True)[:16]))
        (data / "val.jsonl").write_text("".join(VAL.read_text().splitlines(keepends=True)[:4]))
    return {"model": {"name": str(tiny)},
            "data": {"train": str(data / "train.jsonl"), "validation": str(data / "val.jsonl"),
                     "system": "You are TuneBot."},
            "method": {"name": method, "r": 4, "alpha": 16, "dropout": 0.0},
            "train": {"lr": lr, "max_steps": steps, "batch_size": 2, "grad_accum": grad_accum, "precision": "fp32",
                      "eval_every": 4, "keep_best": False, "save_every": 2, "warmup_ratio": 0.1,
                      "keep_checkpoints": "all"},  # the tests read a finished run's checkpoints
            "output": {"dir": str(tmp / "runs"), "name": name}, "eval": {"from_validation": 0}}


def _write(tmp: Path, cfg: dict) -> Path:
    p = tmp / f"{cfg['output']['name']}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _tensors(run: Path) -> dict:
    from safetensors.torch import load_file

    f = run / "adapter" / "adapter_model.safetensors"
    return load_file(str(f if f.exists() else run / "model" / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def _session_members(sid: int) -> list[int]:
    """Live processes of session `sid` (the launcher's: start_new_session), from /proc/<pid>/stat field 6."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    from tunelab.config import from_dict
    from tunelab.train.recipes.sft import run_sft

    tmp = tmp_path_factory.mktemp("dist")
    lora = {"method": "lora", "steps": 24, "lr": 1e-2}
    full = {"method": "full", "steps": 6, "lr": 1e-3}
    two = [_write(tmp, _config(tmp, tiny_model_dir, f"{k}-2proc", grad_accum=1, **v))
           for k, v in (("lora", lora), ("full", full))]
    (tmp / "worker.py").write_text(WORKER)
    launch = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                               str(tmp / "worker.py"), *map(str, two)], env=_env(), cwd=tmp,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for k, v in (("lora", lora), ("full", full)):  # the 1-process references, while the launch runs
        run_sft(from_dict(_config(tmp, tiny_model_dir, f"{k}-1proc", grad_accum=2, **v)), quiet=True)
    out, _ = launch.communicate(timeout=300)
    assert launch.returncode == 0, out[-3000:]

    # tunelab train --nproc 2, SIGKILLed once a mid-run checkpoint exists, then --resume
    killed_cfg = _write(tmp, _config(tmp, tiny_model_dir, "lora-killed", grad_accum=1, **lora))
    cmd = [sys.executable, "-m", "tunelab", "train", str(killed_cfg), "--nproc", "2"]
    launcher = subprocess.Popen(cmd + ["--quiet"], env=_env(), cwd=tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
    ckpt = tmp / "runs" / "lora-killed" / "checkpoints" / "step-4"
    deadline = time.monotonic() + 240
    try:
        while not (ckpt / "state.json").exists() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        time.sleep(1.0)  # the workers die with their launcher (PR_SET_PDEATHSIG)
        killed_done = (tmp / "runs" / "lora-killed" / "DONE").exists()
        survivors = _session_members(launcher.pid)
    finally:
        try:
            os.killpg(launcher.pid, signal.SIGKILL)  # the session this test started, if anything is left
        except ProcessLookupError:
            pass
    resumed = subprocess.run(cmd + ["--resume"], env=_env(), cwd=tmp, capture_output=True, text=True, timeout=300,
                             check=False)
    return {"tmp": tmp, "runs": tmp / "runs", "killed_done": killed_done, "survivors": survivors,
            "resumed": resumed, "launch_log": out}


def test_two_processes_match_one_with_accumulation_lora(runs):
    d = _max_diff(_tensors(runs["runs"] / "lora-2proc"), _tensors(runs["runs"] / "lora-1proc"))
    assert d < 1e-5, d
    # the adapter moved: the comparison is not between two untrained adapters
    b = {k: v for k, v in _tensors(runs["runs"] / "lora-1proc").items() if "lora_B" in k}
    assert max(float(v.abs().max()) for v in b.values()) > 1e-3


def test_two_processes_match_one_with_accumulation_full(runs):
    d = _max_diff(_tensors(runs["runs"] / "full-2proc"), _tensors(runs["runs"] / "full-1proc"))
    assert d < 1e-5, d


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_losses_and_reduced_validation_match(runs):
    one, two = _metrics(runs["runs"] / "lora-1proc"), _metrics(runs["runs"] / "lora-2proc")
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two):
        for key in ("loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-4), (key, a, b)
    assert sum("val_loss" in r for r in two) == 6  # eval_every 4 over 24 steps: validated on both ranks' shares


def test_run_folder_written_once(runs):
    run = runs["runs"] / "lora-2proc"
    rows = _metrics(run)
    assert len(rows) == len({json.dumps(r, sort_keys=True) for r in rows})
    train_steps = [r["step"] for r in rows if "loss" in r]
    assert train_steps == list(range(1, 25))  # one row per step: rank 1 logged nothing
    assert (run / "report.md").read_text().count("# Run") == 1
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("metrics")) == ["metrics.jsonl"]
    assert (run / "DONE").exists()
    saved = json.loads((run / "checkpoints" / "step-22" / "state.json").read_text())
    assert saved["position"]["world"] == 2


def test_sigkill_of_the_launcher_then_resume_equals_uninterrupted(runs):
    assert not runs["killed_done"], "the launcher finished before it was killed"
    assert runs["survivors"] == [], "workers outlived their SIGKILLed launcher"
    r = runs["resumed"]
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stderr
    run = runs["runs"] / "lora-killed"
    assert _max_diff(_tensors(run), _tensors(runs["runs"] / "lora-1proc")) < 1e-5
    steps = [x["step"] for x in _metrics(run) if "loss" in x]
    assert steps == list(range(1, 25))  # rows logged after the checkpoint were dropped, then logged once


def test_resume_on_another_world_size_is_refused(runs, tmp_path):
    """The killed run's checkpoints are 2-process ones: this process (1) may not continue them."""
    import shutil

    from tunelab.config import load_config
    from tunelab.errors import TunelabError
    from tunelab.train.recipes.sft import run_sft

    src = runs["runs"] / "lora-2proc"
    cfg = load_config(runs["tmp"] / "lora-2proc.yaml")
    cfg.output.dir, cfg.train.resume = str(tmp_path), "yes"
    shutil.copytree(src, tmp_path / "lora-2proc")
    (tmp_path / "lora-2proc" / "DONE").unlink()
    saved = yaml.safe_load((src / "config.yaml").read_text())
    saved["output"]["dir"] = str(tmp_path)
    (tmp_path / "lora-2proc" / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(TunelabError, match="trained on 2 processes"):
        run_sft(cfg, quiet=True)
