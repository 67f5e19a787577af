"""Engine controls on a toy objective: eval every N steps, early stopping, keep-best, TensorBoard."""

import json

import pytest
import torch

from tunelab.config import TrainConfig
from tunelab.train.engine import train_loop


class Scripted:
    """A least-squares objective whose validation losses are scripted, to drive the engine's decisions."""

    def __init__(self, val_losses):
        self.val_losses = list(val_losses)
        self.calls = 0

    def collate(self, examples):
        return {"x": torch.stack([e[0] for e in examples]), "y": torch.stack([e[1] for e in examples])}

    def loss_sum(self, model, batch):
        return ((model(batch["x"]) - batch["y"]) ** 2).sum(), len(batch["x"])

    def evaluate(self, model, examples, amp):
        v = self.val_losses[min(self.calls, len(self.val_losses) - 1)]
        self.calls += 1
        return {"val_loss": v, "marker": float(self.calls)}

    def length(self, example):
        return 1

    def trained_tokens(self, batch, count):
        return count


def data(n=32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return [(x[i], x[i].sum(0, keepdim=True)) for i in range(n)]


def run(val_losses, log=None, **cfg):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    obj = Scripted(val_losses)
    rows = []
    res = train_loop(model, data(), data(4), TrainConfig(lr=0.05, epochs=4, batch_size=8, **cfg),
                     log=log or rows.append, quiet=True, objective=obj)
    return res, obj, rows, model


def test_eval_every_n_steps_logs_extra_metrics():
    _, obj, rows, _ = run([1.0], eval_every=2)  # 4 steps/epoch x 4 epochs = 16 steps, an eval every 2
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert obj.calls == 8 and evals[-1]["marker"] == 8.0


def test_early_stopping_stops_after_patience_and_restores_best():
    losses = [3.0, 2.0, 2.5, 2.4, 2.6, 1.0]  # best at eval 2; evals 3, 4, 5 do not improve
    res, obj, rows, _ = run(losses, eval_every=2, early_stopping_patience=3)
    assert res.stopped_early.startswith("early stopping")
    assert obj.calls == 5 and res.steps == 10  # stopped at the 5th evaluation, never saw the 1.0
    assert res.best_val == 2.0 and res.best_epoch == rows[[r.get("val_loss") for r in rows].index(2.0)]["epoch"]
    assert any(r.get("event") == "early_stopping" for r in rows)


def test_min_delta_counts_small_gains_as_no_improvement():
    res, obj, _, _ = run([3.0, 2.99, 2.98, 2.97, 0.5], eval_every=2, early_stopping_patience=3,
                         early_stopping_min_delta=0.1)
    assert obj.calls == 4 and res.stopped_early  # 2.99, 2.98, 2.97 are within min_delta of the best


def test_no_early_stopping_by_default():
    res, obj, _, _ = run([3.0, 4.0, 5.0, 6.0], eval_every=2)
    assert res.stopped_early is None and res.steps == 16 and obj.calls == 8


def test_keep_best_restores_the_best_evaluations_weights():
    states = []

    def snapshot(rec):
        if "val_loss" in rec:
            states.append(model_ref[0].weight.detach().clone())

    model_ref = []
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    model_ref.append(model)
    obj = Scripted([5.0, 1.0, 4.0, 4.5])  # per epoch; the best is epoch 2
    train_loop(model, data(), data(4), TrainConfig(lr=0.05, epochs=4, batch_size=8), log=snapshot, quiet=True,
               objective=obj)
    assert torch.equal(model.weight, states[1])
    assert not torch.equal(model.weight, states[-1])


def test_tensorboard_logger_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tunelab.runs.rundir import RunDir
    from tunelab.train.loggers import MetricsLogger

    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    logger = MetricsLogger(rd, "tensorboard")
    run([2.0, 1.0], log=logger, eval_every=4)
    logger.close()
    rows = [json.loads(x) for x in (rd.path / "metrics.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in rows) == 16
    acc = EventAccumulator(str(rd.path / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr", "eval/val_loss"} <= set(tags)
    assert [e.step for e in acc.Scalars("eval/val_loss")] == [4, 8, 12, 16]
    assert len(acc.Scalars("train/loss")) == 16
