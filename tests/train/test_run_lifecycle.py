"""Every recipe starts and ends its run folder the same way (train/recipes/_common.py): `begin_run` writes
config.yaml and template.json, `finish_run` writes DONE last and never for an interrupted run; and the
before/after evaluation of pretrain, as of sft, runs on rank 0 only."""

from __future__ import annotations

import math

import pytest

from tests.train.test_preference_tiny import cfg_for as pairs_cfg
from tests.train.test_pretrain_tiny import cfg_for as pretrain_cfg


def _spy(monkeypatch, module, name: str) -> list:
    """Record the calls of `module.name` (still calling it)."""
    calls, real = [], getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def _small(tmp_path, model_dir, task: str, name: str):
    return pairs_cfg(tmp_path, model_dir, task, train={"epochs": 1, "batch_size": 8}, output={"name": name},
                     eval={"from_validation": 0})


@pytest.mark.parametrize("task", ["dpo", "reward"])
def test_preference_tasks_begin_and_finish_their_runs(task, tmp_path, tiny_model_dir, monkeypatch):
    import importlib

    from tunelab.train.recipes import run_task

    recipe = importlib.import_module(f"tunelab.train.recipes.{task}")
    begun, finished = _spy(monkeypatch, recipe, "begin_run"), _spy(monkeypatch, recipe, "finish_run")
    out = run_task(_small(tmp_path, tiny_model_dir, task, task), quiet=True)
    assert len(begun) == 1 and len(finished) == 1
    names = {p.name for p in out.run_dir.iterdir()}
    assert {"config.yaml", "template.json", "report.md", "DONE"} <= names and "checkpoints" not in names


@pytest.mark.parametrize("task", ["dpo", "reward"])
def test_an_interrupted_preference_run_is_not_marked_done(task, tmp_path, tiny_model_dir, monkeypatch):
    import importlib

    from tunelab.train.recipes import run_task

    recipe = importlib.import_module(f"tunelab.train.recipes.{task}")

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe, "train_and_measure", ctrl_c)
    cfg = _small(tmp_path, tiny_model_dir, task, f"{task}-stopped")
    with pytest.raises(KeyboardInterrupt):
        run_task(cfg, quiet=True)
    run_dir = tmp_path / "runs" / f"{task}-stopped"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "template.json").is_file()
    assert not (run_dir / "DONE").exists()


def test_finish_run_leaves_an_interrupted_engine_run_unfinished(tmp_path):
    from types import SimpleNamespace

    from tunelab.runs.rundir import RunDir
    from tunelab.train.recipes._common import finish_run

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    finish_run(run, SimpleNamespace(stopped_early="interrupted"))
    assert not run.done
    finish_run(run, None)  # a TRL task that returned: finished
    assert run.done


def test_pretrain_evaluates_on_rank_0_only(tmp_path, tiny_model_dir, monkeypatch):
    """Another rank neither measures nor samples (as sft): it reports nan and writes nothing of its own."""
    from tunelab.train.recipes import pretrain, run_task

    measured = _spy(monkeypatch, pretrain, "measure")
    monkeypatch.setattr(pretrain, "is_main", lambda: False)
    cfg = pretrain_cfg(tmp_path, tiny_model_dir, train={"epochs": 1}, output={"name": "rank1"})
    out = run_task(cfg, quiet=True)
    assert measured == [] and math.isnan(out.val_before) and math.isnan(out.val_after) and out.samples == []
    assert not (out.run_dir / "report.md").exists()
