"""train.report_to through accelerate's trackers (mlflow file store, wandb offline), the TRL tasks'
tracker arguments, train.optim (bitsandbytes 8-bit AdamW on CPU, resumed exactly), and pick_device per rank."""

from __future__ import annotations

import pytest
import torch


def _log_a_run(tmp_path, kind: str):
    from tunelab.runs.rundir import RunDir
    from tunelab.train.loggers import MetricsLogger

    rd = RunDir(tmp_path / kind)
    rd.path.mkdir()
    logger = MetricsLogger(rd, kind)
    for s in (1, 2, 3):
        logger({"step": s, "epoch": s / 10, "loss": 1.0 / s, "lr": 1e-3})
    logger({"step": 3, "epoch": 0.3, "val_loss": 0.5})
    logger.close()
    return rd.path


def test_mlflow_tracker_writes_a_local_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow (tunelab[track]) is not installed")
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)
    run = _log_a_run(tmp_path, "mlflow")
    [loss] = list((run / "mlruns").glob("*/*/metrics/train/loss"))
    rows = [line.split() for line in loss.read_text().splitlines()]
    assert [(float(v), int(s)) for _, v, s in rows] == [(1.0, 1), (0.5, 2), (pytest.approx(1 / 3), 3)]
    assert (loss.parents[1] / "eval" / "val_loss").read_text().split()[1:] == ["0.5", "3"]
    assert (loss.parents[2] / "tags" / "mlflow.runName").read_text() == "mlflow"


def test_wandb_tracker_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb (tunelab[track]) is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for key in ("WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(key, raising=False)
    import time

    run = _log_a_run(tmp_path, "wandb")
    [log] = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    deadline = time.monotonic() + 60  # wandb's service process may still be writing after finish() returns
    while b"eval/val_loss" not in log.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    data = log.read_bytes()
    assert b"train/loss" in data and b"eval/val_loss" in data  # the history records name their keys


def test_missing_tracker_package_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    from tunelab.errors import TunelabError
    from tunelab.train.loggers import tracker_env

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(TunelabError, match="wandb package is missing"):
        tracker_env("wandb", tmp_path)


def test_trl_tasks_get_report_to_and_optim(tmp_path, tiny_model_dir, monkeypatch):
    from trl import RewardConfig

    from tunelab.config import from_dict
    from tunelab.runs.rundir import RunDir
    from tunelab.train.recipes.preference import trainer_args

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    cfg = from_dict({"task": "reward", "model": {"name": str(tiny_model_dir)}, "data": {"train": "x.jsonl"},
                     "train": {"report_to": "tensorboard", "optim": "adamw8bit", "precision": "fp32"},
                     "output": {"dir": str(tmp_path), "name": "rw"}})
    run = RunDir(tmp_path / "rw")
    args = trainer_args(RewardConfig, cfg, run, torch.device("cpu"), True, False)
    assert args.report_to == ["tensorboard"]
    assert str(args.optim.value if hasattr(args.optim, "value") else args.optim) == "adamw_bnb_8bit"
    import os

    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(run.path / "tensorboard")


# ---- train.optim ---------------------------------------------------------------------------------------------
def _examples(n: int = 8):
    from tunelab.data.tokenize import TokenizedExample

    g = torch.Generator().manual_seed(0)
    return [TokenizedExample(ids, list(ids)) for ids in
            (torch.randint(5, 200, (int(torch.randint(6, 14, (1,), generator=g)),), generator=g).tolist()
             for _ in range(n))]


def _full_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("optim", ["adamw_fused", "adamw8bit"])
def test_optimizer_trains_and_resumes_exactly(tmp_path, tiny_model_dir, optim):
    """4 steps with a checkpoint at step 2; a fresh model resumed from it ends where the run ended
    (8-bit AdamW's nested state survives the safetensors checkpoint)."""
    from tunelab.config import TrainConfig
    from tunelab.train.engine import train_loop

    cfg = TrainConfig(lr=1e-3, max_steps=4, batch_size=2, save_every=2, eval_every="never", precision="fp32",
                      optim=optim, warmup_ratio=0.0)
    data = _examples()
    model = _full_model(tiny_model_dir)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_loop(model, data, [], cfg, pad_id=0, quiet=True, ckpt_dir=tmp_path / "ck")
    if optim == "adamw8bit":
        import bitsandbytes as bnb  # noqa: F401

        from tunelab.train.engine import Trainer
        from tunelab.train.objective import CausalLMObjective

        opt = Trainer(_full_model(tiny_model_dir), data, [], cfg, CausalLMObjective(0)).opt
        assert type(opt).__name__ == "AdamW8bit"
    resumed = _full_model(tiny_model_dir)
    res = train_loop(resumed, data, [], cfg, pad_id=0, quiet=True, ckpt_dir=tmp_path / "ck", resume=True)
    assert res.resumed_from == 2
    a, b = dict(model.named_parameters()), dict(resumed.named_parameters())
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    assert max(float((a[k] - start[k]).abs().max()) for k in a) > 1e-4  # it trained


def test_paged_adamw8bit_needs_cuda():
    from tunelab.errors import TunelabError
    from tunelab.train.optim import make_optimizer

    with pytest.raises(TunelabError, match="paged_adamw8bit pages optimizer states in CUDA memory"):
        make_optimizer([torch.nn.Parameter(torch.zeros(3))], "paged_adamw8bit", 1e-3, 0.0, torch.device("cpu"))


def test_memory_estimate_follows_the_optimizer():
    from tunelab.train.optim import memory_optimizer

    assert [memory_optimizer(o) for o in ("adamw", "adamw_fused", "adamw8bit", "paged_adamw8bit")] == \
        ["adamw", "adamw", "adamw8bit", "adamw8bit"]


# ---- the device per rank -------------------------------------------------------------------------------------
def test_pick_device_takes_the_local_rank_gpu(monkeypatch):
    from tunelab.models import load

    monkeypatch.setattr(load.torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert load.pick_device("auto") == torch.device("cuda", 3)
    assert load.pick_device("cuda") == torch.device("cuda", 3)
    assert load.pick_device("cuda:1") == torch.device("cuda", 1)
    assert load.pick_device("cpu") == torch.device("cpu")
    monkeypatch.delenv("LOCAL_RANK")
    assert load.pick_device("auto") == torch.device("cuda")


def test_shard_splits_a_group_across_ranks():
    from tunelab.train.distributed import shard

    group = [[0, 1], [2, 3], [4, 5]]  # a short last group: 3 micro-batches on 2 ranks
    assert shard(group, 2, 0) == [[0, 1], [4, 5]] and shard(group, 2, 1) == [[2, 3]]
    assert sorted(b for r in range(4) for b in shard(group, 4, r)) == group
