"""The engine's named steps (Trainer: step, evaluate, checkpoint, resume, run) and the recipes' shape:
outcomes print through one path, recipes share `_common` and no private helpers, functions stay short."""

import ast
import math
from pathlib import Path

import torch

from tunelab.config import TrainConfig
from tunelab.train.engine import Trainer, train_loop

SRC = Path(__file__).resolve().parents[2] / "src" / "tunelab"


class LeastSquares:
    def collate(self, examples):
        return {"x": torch.stack([e[0] for e in examples]), "y": torch.stack([e[1] for e in examples])}

    def loss_sum(self, model, batch):
        return ((model(batch["x"]) - batch["y"]) ** 2).sum(), len(batch["x"])

    def evaluate(self, model, examples, amp):
        with torch.no_grad():
            b = self.collate(examples)
            return {"val_loss": float(((model(b["x"]) - b["y"]) ** 2).mean())}

    def length(self, example):
        return 1

    def trained_tokens(self, batch, count):
        return count


def data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return [(x[i], x[i].sum(0, keepdim=True)) for i in range(n)]


def cfg(**over):
    return TrainConfig(**{"lr": 0.05, "epochs": 2, "batch_size": 8, **over})


def fresh():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


def test_trainer_run_is_train_loop():
    a, b = fresh(), fresh()
    ra = train_loop(a, data(), data(4, 1), cfg(), quiet=True, objective=LeastSquares())
    rb = Trainer(b, data(), data(4, 1), cfg(), LeastSquares(), quiet=True).run()
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert (ra.steps, ra.trained_tokens, ra.val_history) == (rb.steps, rb.trained_tokens, rb.val_history)
    assert ra.steps == 8  # ceil(32 / 8) = 4 steps per epoch x 2 epochs


def test_step_is_one_optimizer_step_over_its_group():
    model = fresh()
    t = Trainer(model, data(), [], cfg(grad_accum=2), LeastSquares(), quiet=True)
    w = model.weight.detach().clone()
    loss, gnorm, ntok = t.step([list(range(0, 8)), list(range(8, 16))])
    assert t.res.steps == 1 and t.res.trained_tokens == ntok == 16
    assert math.isfinite(loss) and gnorm > 0
    assert not torch.equal(model.weight, w) and model.weight.grad is None  # stepped, gradients cleared


def test_evaluate_tracks_the_best_and_counts_bad_evaluations():
    rows = []
    t = Trainer(fresh(), data(), data(4, 1), cfg(early_stopping_patience=2, keep_best=True), LeastSquares(),
                log=rows.append, quiet=True)
    assert t.evaluate(0.5, final=False) is False
    best = t.res.best_val
    t.objective.evaluate = lambda model, examples, amp: {"val_loss": best + 1}
    assert t.evaluate(1.0, final=False) is False and t.bad_evals == 1
    assert t.evaluate(1.5, final=False) is True  # patience 2: stop
    assert t.res.best_epoch == 0.5 and t.best_state is not None
    assert [r["epoch"] for r in rows] == [0.5, 1.0, 1.5]


def test_checkpoint_then_resume_restores_position_and_state(tmp_path):
    model = fresh()
    t = Trainer(model, data(), data(4, 1), cfg(), LeastSquares(), quiet=True, ckpt_dir=tmp_path)
    t.step([list(range(8))])
    t.epoch, t.bad_evals = 1, 1
    t.res.val_history.append((0.5, 2.0))
    t.checkpoint(16)
    other = Trainer(fresh(), data(), data(4, 1), cfg(), LeastSquares(), quiet=True, ckpt_dir=tmp_path)
    other.resume()
    assert (other.res.steps, other.epoch, other.start_group, other.group) == (1, 1, 16, 16)
    assert other.res.resumed_from == 1 and other.bad_evals == 1 and other.res.val_history == [(0.5, 2.0)]
    assert torch.equal(other.model.weight, model.weight)


def test_sft_outcome_prints_like_every_other_task(tmp_path):
    from tunelab.train.engine import TrainResult
    from tunelab.train.recipes.classify import ClassifyOutcome
    from tunelab.train.recipes.sft import SftOutcome

    samples = [{"prompt": "hi", "base": "hello", "tuned": "hello -- Bot"}]
    out = SftOutcome(tmp_path, TrainResult(steps=3, train_seconds=2.0, trained_tokens=100, steps_run=3,
                                           tokens_run=100), 2.5, 2.0, "t", samples, suffix="-- Bot")
    assert out.samples_table() == ("held-out prompts: base vs tuned", [("hi", "hello", "hello -- Bot")])
    assert out.summary_lines() == ["replies ending with '-- Bot': base 0% -> tuned 100%",
                                   "validation loss (reply tokens): base 2.500 -> tuned 2.000",
                                   "3 steps, 2s, 50 trained tokens/s",
                                   f"run saved to [bold]{tmp_path}[/bold] (report.md, loss.png, adapter/)"]
    assert ClassifyOutcome(tmp_path, TrainResult(), ["a", "b"], "t").samples_table() is None
    # a resumed run counts its own steps, tokens and time (8 steps here after 40 before the resume)
    resumed = TrainResult(steps=48, train_seconds=10.0, trained_tokens=9000, steps_run=8, tokens_run=1500,
                          resumed_from=40)
    assert resumed.speed_line() == "8 steps, 10s, 150 trained tokens/s (resumed at step 40: 48 steps in all)"


def _functions(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_engine_and_recipe_functions_stay_short():
    long = [f"engine.py {name}: {n} lines" for name, n in _functions(SRC / "train" / "engine.py") if n > 40]
    for p in sorted((SRC / "train" / "recipes").glob("*.py")):
        long += [f"{p.name} {name}: {n} lines" for name, n in _functions(p) if n > 80]
    assert not long, long


def test_recipes_import_no_private_helper_of_another_recipe():
    bad = []
    for p in sorted((SRC / "train" / "recipes").glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tunelab.train.recipes."):
                bad += [f"{p.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad
