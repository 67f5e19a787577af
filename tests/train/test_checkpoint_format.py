"""Checkpoints are safetensors + JSON (no pickle is written or loaded); trainer_state.json sums up a run."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunelab.config import TrainConfig, from_dict
from tunelab.errors import TunelabError
from tunelab.train.state import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from tunelab.train.engine import train_loop
from tunelab.train.loggers import MetricsLogger
from tunelab.runs.rundir import RunDir

TRAIN = "examples/data/tunebot/train.jsonl"
VAL = "examples/data/tunebot/validation.jsonl"


class Scripted:
    """Least squares on a toy model whose validation losses are scripted (deterministic best step)."""

    def __init__(self, val_losses):
        self.val_losses, self.calls = list(val_losses), 0

    def collate(self, examples):
        return {"x": torch.stack([e[0] for e in examples]), "y": torch.stack([e[1] for e in examples])}

    def loss_sum(self, model, batch):
        return ((model(batch["x"]) - batch["y"]) ** 2).sum(), len(batch["x"])

    def evaluate(self, model, examples, amp):
        self.calls += 1
        return {"val_loss": self.val_losses[min(self.calls - 1, len(self.val_losses) - 1)]}

    def length(self, example):
        return 1

    def trained_tokens(self, batch, count):
        return count


def data(n=32):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    return [(x[i], x[i].sum(0, keepdim=True)) for i in range(n)]


def toy_run(ckpt_dir, val_losses, log=lambda r: None, **cfg):
    """4 steps per epoch (32 examples / 8); a checkpoint every 2 steps and at epoch ends."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.1), torch.nn.Linear(8, 1))
    cfg = TrainConfig(**{"lr": 0.05, "max_steps": 8, "batch_size": 8, "save_every": 2, "eval_every": 2, **cfg})
    return train_loop(model, data(), data(4), cfg, log=log, quiet=True, ckpt_dir=ckpt_dir,
                      objective=Scripted(val_losses))


def strict_json(path):
    """json.loads that refuses NaN/Infinity tokens (not JSON)."""
    def bad(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=bad)


def test_checkpoint_files_are_safetensors_and_json(tmp_path):
    ckpts = tmp_path / "checkpoints"
    toy_run(ckpts, [3.0, 2.0, 1.0, 1.5], keep_best=True)
    assert list_checkpoints(ckpts) == [4, 6]  # 2, 4 (epoch end), 6 written; the last 2 kept
    assert not list(tmp_path.rglob("*.pt")) and not list(ckpts.glob("*.tmp"))
    step = latest_checkpoint(ckpts)
    assert {p.name for p in step.iterdir()} == {"trainable.safetensors", "optimizer.safetensors", "rng.safetensors",
                                               "best.safetensors", "state.json"}
    trainable = load_file(str(step / "trainable.safetensors"))
    assert set(trainable) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    opt = load_file(str(step / "optimizer.safetensors"))
    assert {"0.exp_avg", "0.exp_avg_sq", "0.step", "3.exp_avg"} <= set(opt) and float(opt["0.step"]) == 6
    rng = load_file(str(step / "rng.safetensors"))
    assert rng["torch"].dtype == torch.uint8 and rng["torch"].dim() == 1
    assert set(load_file(str(step / "best.safetensors"))) == set(trainable)  # best = eval at step 6
    state = strict_json(step / "state.json")
    assert state["format"] == "tunelab-checkpoint" and state["version"] == 1
    assert state["position"] == {"step": 6, "epoch": 1, "group": 2}
    assert state["result"]["val_history"] == [[0.5, 3.0], [1, 2.0], [1.5, 1.0]]
    assert state["result"]["best_val"] == 1.0 and state["result"]["bad_evals"] == 0
    assert state["scheduler"]["last_epoch"] == 6 and state["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.999]


def _stepped(seed):
    """A dropout model + AdamW + cosine schedule after 3 steps (non-trivial state everywhere)."""
    from transformers import get_scheduler

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    sched = get_scheduler("cosine", opt, num_warmup_steps=1, num_training_steps=10)
    for _ in range(3):
        step(model, opt, sched)
    return model, opt, sched


def step(model, opt, sched):
    model(torch.randn(8, 4)).pow(2).mean().backward()  # randn and dropout both draw from the RNG
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def test_roundtrip_restores_weights_optimizer_scheduler_rng_exactly(tmp_path):
    model, opt, sched = _stepped(0)
    best = {n: p.detach().clone() + 1 for n, p in model.named_parameters()}
    result = {"trained_tokens": 123, "val_history": [[1, 2.5], [2, float("inf")]], "best_val": float("nan"),
              "best_epoch": -1, "bad_evals": 2, "best_state": best}
    save_checkpoint(tmp_path, model, opt, sched, {"step": 3, "epoch": 0, "group": 6}, result)
    rng = torch.get_rng_state()

    model2, opt2, sched2 = _stepped(1)  # different weights, moments, RNG
    saved = load_checkpoint(tmp_path / "step-3", model2, opt2, sched2)
    assert torch.equal(torch.get_rng_state(), rng)
    for (n, a), (_, b) in zip(model.named_parameters(), model2.named_parameters()):
        assert torch.equal(a, b), n
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"] and s1["state"].keys() == s2["state"].keys()
    for i in s1["state"]:
        assert s1["state"][i].keys() == s2["state"][i].keys()
        assert all(torch.equal(s1["state"][i][k], s2["state"][i][k]) for k in s1["state"][i])
    assert sched.state_dict() == sched2.state_dict()
    assert saved["position"] == {"step": 3, "epoch": 0, "group": 6}
    r = saved["result"]
    assert r["trained_tokens"] == 123 and r["bad_evals"] == 2 and r["best_epoch"] == -1
    assert math.isnan(r["best_val"]) and r["val_history"] == [[1, 2.5], [2, float("inf")]]
    assert r["best_state"].keys() == best.keys() and all(torch.equal(r["best_state"][n], best[n]) for n in best)

    step(model2, opt2, sched2)  # the restored copy continues exactly as the original
    torch.set_rng_state(rng)
    step(model, opt, sched)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    assert sched.get_last_lr() == sched2.get_last_lr()


def test_no_best_state_no_best_file(tmp_path):
    model, opt, sched = _stepped(0)
    out = save_checkpoint(tmp_path, model, opt, sched, {"step": 3, "epoch": 0, "group": 0},
                          {"trained_tokens": 0, "val_history": [], "best_val": float("nan"), "best_epoch": -1,
                           "best_state": None, "bad_evals": 0})
    assert not (out / "best.safetensors").exists()
    assert load_checkpoint(out, *_stepped(1))["result"]["best_state"] is None


class Planted:
    """A pickle that would create `path` if it were ever unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_checkpoint_is_refused_and_never_loaded(tmp_path):
    ckpts = tmp_path / "checkpoints"
    (ckpts / "step-4").mkdir(parents=True)
    sentinel = tmp_path / "code-ran"
    torch.save({"trainable": Planted(sentinel)}, ckpts / "step-4" / "state.pt")
    with pytest.raises(TunelabError, match=r"step-4/state.pt is a pickle .*can run code") as e:
        list_checkpoints(ckpts)
    assert e.value.where == "train.resume" and "--resume" in e.value.hint
    with pytest.raises(TunelabError, match="is a pickle"):
        load_checkpoint(ckpts / "step-4", *_stepped(0))
    assert not sentinel.exists()


def test_pickle_or_damage_under_a_safetensors_name_is_refused(tmp_path):
    model, opt, sched = _stepped(0)
    out = save_checkpoint(tmp_path, model, opt, sched, {"step": 3, "epoch": 0, "group": 0},
                          {"trained_tokens": 0, "val_history": [], "best_val": 1.0, "best_epoch": 0,
                           "best_state": None, "bad_evals": 0})
    sentinel = tmp_path / "code-ran"
    torch.save(Planted(sentinel), out / "optimizer.safetensors")
    with pytest.raises(TunelabError, match="optimizer.safetensors is a pickle"):
        load_checkpoint(out, *_stepped(1))
    (out / "optimizer.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    with pytest.raises(TunelabError, match="cannot read checkpoint file .*optimizer.safetensors"):
        load_checkpoint(out, *_stepped(1))
    assert not sentinel.exists()


def test_cli_resume_of_a_pickle_checkpoint_exits_2_with_one_line(tmp_path, tiny_model_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""model: {{name: {tiny_model_dir}}}
data: {{train: {Path(TRAIN).resolve()}, validation: {Path(VAL).resolve()}}}
method: {{name: lora, r: 4}}
train: {{max_steps: 8, batch_size: 4, save_every: 4}}
output: {{dir: {tmp_path}/runs, name: old}}
""")
    step = tmp_path / "runs" / "old" / "checkpoints" / "step-4"
    step.mkdir(parents=True)
    sentinel = tmp_path / "code-ran"
    torch.save({"trainable": Planted(sentinel)}, step / "state.pt")
    r = subprocess.run([sys.executable, "-m", "tunelab", "train", str(cfg), "--quiet", "--resume"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: train.resume: ") and "Traceback" not in r.stderr
    assert f"{step / 'state.pt'} is a pickle" in lines[0] and "can run code" in lines[0]
    assert not sentinel.exists() and (step / "state.pt").exists()  # nothing run, nothing deleted
    assert sorted(p.name for p in (tmp_path / "runs" / "old").iterdir()) == ["checkpoints"]


def test_trainer_state_tracks_logs_and_best_checkpoint(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.write_text("config.yaml", "train: {max_steps: 8, logging_steps: 1}\n")
    logger = MetricsLogger(rd)
    toy_run(rd.path / "checkpoints", [3.0, 2.0, 1.0, 1.5], log=logger)
    logger.close()
    state = strict_json(rd.path / "trainer_state.json")
    assert state["log_history"] == rd.metrics()
    assert sum("loss" in r for r in state["log_history"]) == 8
    assert [r["val_loss"] for r in state["log_history"] if "val_loss" in r] == [3.0, 2.0, 1.0, 1.5]
    assert state["global_step"] == 8 and state["epoch"] == 2 and state["max_steps"] == 8
    assert state["logging_steps"] == 1 and state["best_metric"] == 1.0
    assert state["best_model_checkpoint"] == "checkpoints/step-6"  # the eval at step 6, checkpointed then
    assert not (rd.path / "trainer_state.json.tmp").exists()


def test_trainer_state_continues_a_resumed_run_and_names_no_pruned_checkpoint(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    kept = [{"step": 1, "epoch": 0.5, "loss": 2.0}, {"step": 2, "epoch": 1, "val_loss": 0.5}]
    rd.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))
    logger = MetricsLogger(rd)  # no config.yaml: max_steps / logging_steps unknown
    logger({"step": 3, "epoch": 1.5, "loss": 1.0})
    logger({"step": 4, "epoch": 2, "val_loss": 0.75})
    state = strict_json(rd.path / "trainer_state.json")  # written at the eval record
    assert state["log_history"] == [*kept, {"step": 3, "epoch": 1.5, "loss": 1.0}, {"step": 4, "epoch": 2, "val_loss": 0.75}]
    assert state["global_step"] == 4 and state["best_metric"] == 0.5
    assert state["best_model_checkpoint"] is None  # no checkpoints/step-2 on disk
    assert "max_steps" not in state and "logging_steps" not in state


def test_trainer_state_after_a_tiny_sft_run(tmp_path, tiny_model_dir):
    from tunelab.train.recipes.sft import run_sft

    cfg = from_dict({"model": {"name": str(tiny_model_dir)}, "data": {"train": TRAIN, "validation": VAL},
                     "method": {"name": "lora", "r": 4},
                     "train": {"lr": 5e-3, "max_steps": 4, "batch_size": 8, "logging_steps": 2},
                     "output": {"dir": str(tmp_path / "runs"), "name": "t"}})
    out = run_sft(cfg, quiet=True)
    state = strict_json(out.run_dir / "trainer_state.json")
    rows = [json.loads(x) for x in (out.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert state["log_history"] == rows and [r["step"] for r in rows if "loss" in r] == [2, 4]
    assert state["global_step"] == out.result.steps == 4 and state["max_steps"] == 4 and state["logging_steps"] == 2
    assert state["epoch"] == rows[-1]["epoch"]
    assert state["best_metric"] == min(r["val_loss"] for r in rows if "val_loss" in r)
    assert state["best_model_checkpoint"] is None  # no checkpoint was saved at the evaluation's step
