"""Ctrl-C anywhere in training saves a checkpoint that resumes exactly: a step cut short is dropped with
the dropout draws it made, an evaluation cut short is done first on resume; a second Ctrl-C during that
save leaves the last complete checkpoint; a finished run keeps the checkpoints train.keep_checkpoints says."""

import pytest
import torch

from tunelab.config import TrainConfig
from tunelab.train import engine
from tunelab.train.engine import train_loop
from tunelab.train.interrupts import Interrupts
from tunelab.train.state import latest_checkpoint, list_checkpoints, prune_finished


class Toy:
    """Least squares; raises KeyboardInterrupt at the `at`-th call of `where` ("loss_sum" | "evaluate")."""

    def __init__(self, where=None, at=0):
        self.where, self.at, self.calls = where, at, {"loss_sum": 0, "evaluate": 0}

    def _tick(self, name):
        self.calls[name] += 1
        if name == self.where and self.calls[name] == self.at:
            raise KeyboardInterrupt

    def collate(self, examples):
        return {"x": torch.stack([e[0] for e in examples]), "y": torch.stack([e[1] for e in examples])}

    def loss_sum(self, model, batch):
        self._tick("loss_sum")
        return ((model(batch["x"]) - batch["y"]) ** 2).sum(), len(batch["x"])

    def evaluate(self, model, examples, amp):
        self._tick("evaluate")
        with torch.no_grad():
            b = self.collate(examples)
            return {"val_loss": float(((model(b["x"]) - b["y"]) ** 2).mean())}

    def length(self, example):
        return 1

    def trained_tokens(self, batch, count):
        return count


def data(n, seed):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))
    return [(x[i], x[i].sum(0, keepdim=True)) for i in range(n)]


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))


# 32 examples, batch 4, accumulation 2: 4 steps an epoch, 3 epochs; an evaluation every 3 steps and at epoch ends
CFG = dict(lr=0.02, epochs=3, batch_size=4, grad_accum=2, eval_every=3, keep_best=True, seed=3)


def run(objective, ckpt_dir=None, resume=False):
    rows, m = [], model()
    res = train_loop(m, data(32, 0), data(8, 1), TrainConfig(**CFG), log=rows.append, quiet=True,
                     ckpt_dir=ckpt_dir, resume=resume, objective=objective)
    return m, res, rows


@pytest.mark.parametrize("where,at", [
    ("loss_sum", 10),  # step 5, its 2nd micro-batch: the first one's dropout draws are undone
    ("loss_sum", 1),  # the very first micro-batch: nothing trained, the checkpoint is step 0
    ("evaluate", 2),  # the mid-epoch evaluation after step 3: done first on resume
    ("evaluate", 3),  # the epoch-end evaluation after step 4
])
def test_interrupt_anywhere_then_resume_equals_uninterrupted(tmp_path, where, at):
    ref, ref_res, ref_rows = run(Toy())
    _, cut, rows = run(Toy(where, at), tmp_path)
    assert cut.stopped_early == "interrupted" and cut.steps < ref_res.steps
    assert list_checkpoints(tmp_path)[-1] == cut.steps  # the checkpoint of the moment of the Ctrl-C
    resumed, res, more = run(Toy(), tmp_path, resume=True)
    assert res.steps == ref_res.steps and res.val_history == ref_res.val_history
    assert res.steps_run == ref_res.steps - cut.steps and res.resumed_from == cut.steps
    for a, b in zip(ref.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    losses = {r["step"]: r["loss"] for r in rows + more if "loss" in r}
    assert losses == {r["step"]: r["loss"] for r in ref_rows if "loss" in r}
    vals = [(r["step"], r["val_loss"]) for r in rows + more if "val_loss" in r]
    assert vals == [(r["step"], r["val_loss"]) for r in ref_rows if "val_loss" in r]


def test_second_ctrl_c_during_the_save_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    cfg = TrainConfig(**{**CFG, "save_every": 2})
    m = model()
    real_save, calls = engine.save_checkpoint, []

    def save(*args, **kwargs):
        calls.append(args[4]["step"])
        if len(calls) == 3:  # the save after the first Ctrl-C: the second one lands in it
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(engine, "save_checkpoint", save)
    with pytest.raises(KeyboardInterrupt):
        train_loop(m, data(32, 0), data(8, 1), cfg, quiet=True, ckpt_dir=tmp_path, objective=Toy("loss_sum", 11))
    assert calls == [2, 4, 5] and list_checkpoints(tmp_path) == [2, 4]
    assert not [p for p in tmp_path.iterdir() if "." in p.name]  # no half checkpoint left looking like one


def test_ctrl_c_in_an_update_waits_for_its_end():
    """SIGINT inside a critical section (the optimizer update) is raised when the section ends."""
    import os
    import signal

    # Python's own handler, as in a terminal: a background job (nohup, `make test &`) starts with SIGINT
    # ignored, and install() leaves an ignored SIGINT alone
    launched_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    ints = Interrupts()
    ints.install()
    try:
        assert signal.getsignal(signal.SIGINT) == ints._handler
        done = []
        with pytest.raises(KeyboardInterrupt):
            with ints.critical():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("update finished")
        assert done == ["update finished"]
    finally:
        ints.uninstall()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, launched_with)


def test_keep_checkpoints_of_a_finished_run(tmp_path):
    for keep, left in (("all", [2, 4, 5]), ("last", [5]), ("none", None)):
        ckpts = tmp_path / keep / "checkpoints"
        train_loop(model(), data(32, 0), [], TrainConfig(**{**CFG, "save_every": 2, "keep_checkpoints": keep}),
                   quiet=True, ckpt_dir=ckpts, objective=Toy("loss_sum", 11))
        prune_finished(ckpts, keep)
        if left is None:
            assert not ckpts.exists()
        else:
            assert list_checkpoints(ckpts) == left and latest_checkpoint(ckpts).name == "step-5"


class Slow(Toy):
    def loss_sum(self, model, batch):
        import time

        time.sleep(0.01)
        return super().loss_sum(model, batch)


def test_tokens_per_s_is_this_process_steps_over_its_time(tmp_path):
    """metrics.jsonl, the bar and the summary share one tokens/s: this process's trained tokens over its
    time; a resumed run counts from its own start (8 tokens a step: 2 micro-batches of 4)."""
    _, cut, _ = run(Slow("loss_sum", 10), tmp_path)
    _, res, rows = run(Slow(), tmp_path, resume=True)
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(cut.steps + 1, 13))
    for r in steps:
        own = 8 * (r["step"] - cut.steps)  # tokens of this process's steps so far
        assert abs(r["tokens_per_s"] * r["elapsed_s"] - own) <= r["tokens_per_s"] * 0.006 + 0.1  # elapsed_s: 2 digits
    assert res.tokens_run == 8 * res.steps_run and res.trained_tokens == 8 * res.steps
    assert res.tokens_per_s == pytest.approx(res.tokens_run / res.train_seconds)
    assert res.speed_line().startswith(f"{12 - cut.steps} steps, ")
