"""TRL tasks (dpo, reward) resume: the Trainer's epoch-end saves become the run's checkpoints/step-N, a
run interrupted after one continues from it (train.resume: auto) and ends exactly where an
uninterrupted run ends: the same loss at every step, the same validation rows, the same adapter."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.train.test_preference_tiny import cfg_for
from tunelab.errors import TunelabError
from tunelab.runs.rundir import RunDir
from tunelab.train.state import is_final

def _timing(key: str) -> bool:
    """Wall-clock values (runtimes, rates, model preparation time) and grad_norm (compared to 1e-6)."""
    return "time" in key or "per_s" in key or key == "grad_norm"


def _rows(run_dir) -> list[dict]:
    """metrics.jsonl without its wall-clock values."""
    return [{k: v for k, v in json.loads(x).items() if not _timing(k)}
            for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _interrupt_at(monkeypatch, module, step: int) -> None:
    """Make the recipe's checkpoint callback raise KeyboardInterrupt (a Ctrl-C, as TRL gets it) right
    after the checkpoint of `step` is saved: the run is left unfinished with that checkpoint."""
    real = module.checkpoint_callback

    def wrapped(run, keep):
        cb = real(run, keep)
        on_save = cb.on_save

        def stop_after(args, state, control, **kw):
            on_save(args, state, control, **kw)
            if state.global_step == step:
                raise KeyboardInterrupt

        cb.on_save = stop_after
        return cb

    monkeypatch.setattr(module, "checkpoint_callback", wrapped)


@pytest.mark.parametrize("task", ["dpo", "reward"])
def test_interrupted_trl_run_resumes_to_the_uninterrupted_result(task, tmp_path, tiny_model_dir, monkeypatch):
    import importlib

    from tunelab.train.recipes import run_task

    module = importlib.import_module(f"tunelab.train.recipes.{task}")
    over = {"eval": {"from_validation": 0, "prompts": []}, "train": {"keep_checkpoints": "all"}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = run_task(cfg_for(tmp_path / "a", tiny_model_dir, task, output={"name": "whole"}, **over), quiet=True)
    # 24 pairs / batch 4 = 6 steps an epoch x 2: the epoch-1 save at 6, the final one at 12
    assert whole.steps == 12 and RunDir(whole.run_dir).done
    assert sorted(p.name for p in RunDir(whole.run_dir).checkpoints_dir.iterdir()) == ["step-12", "step-6"]

    cfg = cfg_for(tmp_path / "b", tiny_model_dir, task, output={"name": "cut"}, **over)
    run = RunDir(cfg.run_dir())
    with monkeypatch.context() as m:
        _interrupt_at(m, module, 6)
        with pytest.raises(KeyboardInterrupt):
            run_task(cfg, quiet=True)
    assert not run.done and run.checkpoint(6).is_dir() and not run.checkpoint(12).exists()
    assert max(r["step"] for r in _rows(run.path)) == 6

    resumed = run_task(cfg, quiet=True)  # train.resume: auto (the default)
    assert resumed.steps == 12 and run.done
    rows, whole_rows = _rows(run.path), _rows(whole.run_dir)
    # the Trainer's end-of-training summary row: its train_loss is the mean over the steps this train()
    # call ran (transformers' definition for a resumed call), so the resumed one averages steps 7-12
    summary, whole_summary = rows.pop(), whole_rows.pop()
    steps = [r["loss"] for r in rows if "loss" in r]
    assert summary.pop("train_loss") == pytest.approx(sum(steps[6:]) / 6, abs=1e-4)
    assert whole_summary.pop("train_loss") == pytest.approx(sum(steps) / 12, abs=1e-4)
    assert summary == whole_summary
    assert rows == whole_rows  # every other row once, equal: each step's loss, rewards, lr, tokens; validation
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 13))
    assert steps[-1] == [r["loss"] for r in whole_rows if "loss" in r][-1]  # the final loss
    grads = [[r.get("grad_norm") for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())]
             for d in (whole.run_dir, run.path)]
    assert grads[0] == pytest.approx(grads[1], abs=1e-6)
    a = load_file(str(RunDir(whole.run_dir).adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {k: v for k, v in resumed.after.items() if not _timing(k)} == {
        k: v for k, v in whole.after.items() if not _timing(k)}
    state = json.loads((run.checkpoint(12) / "state.json").read_text())
    assert state["format"] == "transformers-trainer" and state["position"] == {
        "step": 12, "epoch": 2.0, "final": True, "train_tokens": state["position"]["train_tokens"]}


def test_trl_checkpoints_kept_as_keep_checkpoints_says_and_resume_yes(tmp_path, tiny_model_dir):
    from tunelab.train.recipes import run_task

    cfg = cfg_for(tmp_path, tiny_model_dir, "dpo", output={"name": "r"}, train={"resume": "yes", "epochs": 1},
                  eval={"from_validation": 0, "prompts": []})
    with pytest.raises(TunelabError, match="nothing to resume"):
        run_task(cfg, quiet=True)
    assert not (tmp_path / "runs" / "r").exists()
    out = run_task(cfg_for(tmp_path, tiny_model_dir, "dpo", output={"name": "n"}, train={"epochs": 1},
                           eval={"from_validation": 0, "prompts": []}), quiet=True)
    assert RunDir(out.run_dir).done and not RunDir(out.run_dir).checkpoints_dir.exists()  # keep_checkpoints: none
    out = run_task(cfg_for(tmp_path, tiny_model_dir, "dpo", output={"name": "l"},
                           train={"epochs": 2, "keep_checkpoints": "last"},
                           eval={"from_validation": 0, "prompts": []}), quiet=True)
    assert [p.name for p in RunDir(out.run_dir).checkpoints_dir.iterdir()] == ["step-12"]


def test_interrupted_after_the_last_step_resumes_without_training_again(tmp_path, tiny_model_dir, monkeypatch):
    """A Ctrl-C after the last step's checkpoint (in the final evaluation or save): the rerun resumes
    there, trains no step, and finishes the run (weights, report, DONE) with each step logged once."""
    from tunelab.train.recipes import dpo, run_task

    cfg = cfg_for(tmp_path, tiny_model_dir, "dpo", output={"name": "end"}, train={"epochs": 1},
                  eval={"from_validation": 0, "prompts": []})
    run = RunDir(cfg.run_dir())
    with monkeypatch.context() as m:
        _interrupt_at(m, dpo, 6)  # 24 pairs / 4 = 6 steps: the final checkpoint
        with pytest.raises(KeyboardInterrupt):
            run_task(cfg, quiet=True)
    assert not run.done and is_final(run.checkpoint(6))
    out = run_task(cfg, quiet=True)
    assert out.steps == 6 and run.done and run.adapter_dir.is_dir() and out.after
    assert [r["step"] for r in _rows(run.path) if "loss" in r] == list(range(1, 7))
    assert not run.checkpoints_dir.exists()  # train.keep_checkpoints: none
