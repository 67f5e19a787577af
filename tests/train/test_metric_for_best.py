"""train.metric_for_best: keep_best and early stopping follow macro_f1 / accuracy (higher is better)
or loss, on a toy objective whose validation metrics are scripted."""

import torch

from tunelab.config import TrainConfig
from tunelab.train.engine import score_of, train_loop

VAL_LOSS = [1.0, 0.8, 0.6, 0.5]  # falls every epoch: loss keeps epoch 4
MACRO_F1 = [0.30, 0.70, 0.50, 0.40]  # peaks at epoch 2
ACCURACY = [0.60, 0.62, 0.66, 0.64]  # peaks at epoch 3


class ScriptedMetrics:
    """Least squares on a linear model; evaluation i reports the scripted metrics and snapshots the weights."""

    def __init__(self):
        self.calls, self.snapshots = 0, []

    def collate(self, examples):
        return {"x": torch.stack([e[0] for e in examples]), "y": torch.stack([e[1] for e in examples])}

    def loss_sum(self, model, batch):
        return ((model(batch["x"]) - batch["y"]) ** 2).sum(), len(batch["x"])

    def evaluate(self, model, examples, amp):
        i = min(self.calls, len(VAL_LOSS) - 1)
        self.calls += 1
        self.snapshots.append(model.weight.detach().clone())
        return {"val_loss": VAL_LOSS[i], "accuracy": ACCURACY[i], "macro_f1": MACRO_F1[i]}

    def length(self, example):
        return 1

    def trained_tokens(self, batch, count):
        return count


def data(n=16):
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    return [(x[i], x[i].sum(0, keepdim=True)) for i in range(n)]


def train(metric, **over):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1, bias=False)
    obj = ScriptedMetrics()
    cfg = TrainConfig(lr=0.05, epochs=4, batch_size=8, warmup_ratio=0.0, scheduler="constant", precision="fp32",
                      metric_for_best=metric, **over)
    res = train_loop(model, data(), data(4), cfg, objective=obj)
    return model, obj, res


def test_keep_best_restores_the_macro_f1_best_epoch():
    model, obj, res = train("macro_f1")
    assert len(obj.snapshots) == 4 and res.best_epoch == 2 and res.best_val == 0.8  # that epoch's val loss
    assert torch.equal(model.weight, obj.snapshots[1])  # epoch 2's weights, not the last epoch's
    assert not torch.equal(obj.snapshots[1], obj.snapshots[3])


def test_accuracy_and_loss_pick_their_own_best():
    model, obj, res = train("accuracy")
    assert res.best_epoch == 3 and torch.equal(model.weight, obj.snapshots[2])
    model, obj, res = train("loss")
    assert res.best_epoch == 4 and torch.equal(model.weight, obj.snapshots[3])


def test_early_stopping_follows_the_metric():
    _, obj, res = train("macro_f1", early_stopping_patience=1)  # epoch 3's 0.50 does not beat 0.70: stop
    assert obj.calls == 3 and res.stopped_early and res.best_epoch == 2
    _, obj, res = train("loss", early_stopping_patience=1)  # the loss improves every epoch: no stop
    assert obj.calls == 4 and not res.stopped_early


def test_score_is_higher_is_better():
    m = {"val_loss": 0.5, "macro_f1": 0.7}
    assert score_of(m, "loss") == -0.5 and score_of(m, "macro_f1") == 0.7
