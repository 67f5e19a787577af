"""`tunelab eval RUN --lm-eval TASKS`: a local lm-eval YAML task on a tiny LoRA run and its base (accuracy
equal to the argmax of the continuation log-likelihoods computed here with the same model, adapter
applied), and the one-line errors: lm_eval absent, a task's data not local, an unknown task."""

from __future__ import annotations

import json
import sys

import pytest

from tunelab.cli.main import run as tunelab

DOCS = [
    {"question": "Which is a colour?", "choices": ["red", "seven", "run"], "answer": 0},
    {"question": "Which is a number?", "choices": ["blue", "seven", "walk"], "answer": 1},
    {"question": "Which is a verb?", "choices": ["green", "three", "run"], "answer": 2},
    {"question": "Which thanks you?", "choices": ["thanks for watching", "zero", "the loss"], "answer": 0},
]


def cli(*args) -> int:
    with pytest.raises(SystemExit) as e:
        tunelab(["eval", *map(str, args)])
    return e.value.code


def one_line_error(capsys, *fragments: str) -> str:
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    for f in fragments:
        assert f in err[0], err
    return err[0]


def task_dir(tmp_path, name="tiny_mc", data_files=None, dataset_path="json"):
    d = tmp_path / f"tasks-{name}"
    d.mkdir()
    data = d / "data.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in DOCS), encoding="utf-8")
    files = data_files if data_files is not None else str(data)
    (d / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: {dataset_path}\n"
        + (f"dataset_kwargs:\n  data_files:\n    test: {files}\n" if dataset_path == "json" else "")
        + "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n", encoding="utf-8")
    return d


def test_without_lm_eval_one_line_exit_2(monkeypatch, capsys, tmp_path, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` raises ImportError
    assert cli(tiny_model_dir, "--lm-eval", "hellaswag", "--out", tmp_path / "o") == 2
    one_line_error(capsys, "lm-evaluation-harness, which is not installed", "pip install 'tunelab[lmeval]'")
    assert not (tmp_path / "o").exists()


def test_lm_eval_is_alone(capsys, tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    assert cli(tiny_model_dir, "--lm-eval", "x", "--data", data, "--out", tmp_path / "o") == 2
    one_line_error(capsys, "--lm-eval runs lm-eval's tasks alone, not with --data")
    assert cli(tiny_model_dir, "--out", tmp_path / "o") == 2
    one_line_error(capsys, "give --data FILE (or --lm-eval TASKS)")


@pytest.fixture(scope="module")
def lm_eval_installed():
    return pytest.importorskip("lm_eval", reason="the lmeval extra is not installed")


def _loaded(monkeypatch):
    from tunelab.eval.compare import Contender

    loaded = []
    monkeypatch.setattr(Contender, "load", lambda self: loaded.append(self.label) or pytest.fail("model loaded"))
    return loaded


def test_task_data_not_local_is_one_line(lm_eval_installed, monkeypatch, capsys, tmp_path, tiny_model_dir):
    _loaded(monkeypatch)
    missing = task_dir(tmp_path, "no_file", data_files=str(tmp_path / "absent.jsonl"))
    assert cli(tiny_model_dir, "--lm-eval", "no_file", "--lm-eval-include", missing, "--out", tmp_path / "o") == 2
    one_line_error(capsys, "lm-eval task 'no_file': its data is not available locally", "--lm-eval-include")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    hub = task_dir(tmp_path, "on_hub", dataset_path="tunelab-test/no-such-dataset")
    assert cli(tiny_model_dir, "--lm-eval", "on_hub", "--lm-eval-include", hub, "--out", tmp_path / "o") == 2
    one_line_error(capsys, "lm-eval task 'on_hub': its data is not available locally",
                   "the Hugging Face hub is offline")


def test_a_broken_task_is_one_line_not_a_data_error(lm_eval_installed, monkeypatch, capsys, tmp_path, tiny_model_dir):
    _loaded(monkeypatch)
    d = task_dir(tmp_path, "broken")
    y = d / "broken.yaml"
    y.write_text(y.read_text().replace("output_type: multiple_choice", "output_type: not_a_type"))
    assert cli(tiny_model_dir, "--lm-eval", "broken", "--lm-eval-include", d, "--out", tmp_path / "o") == 2
    line = one_line_error(capsys, "lm-eval could not build task 'broken'")
    assert "not available locally" not in line


def test_unknown_task_names_the_closest(lm_eval_installed, monkeypatch, capsys, tmp_path, tiny_model_dir):
    _loaded(monkeypatch)
    d = task_dir(tmp_path)
    monkeypatch.setattr("lm_eval.tasks.TaskManager.__init__", _only_include(d))  # skip indexing ~200 folders
    assert cli(tiny_model_dir, "--lm-eval", "tiny_mcc", "--lm-eval-include", d, "--out", tmp_path / "o") == 2
    one_line_error(capsys, "unknown lm-eval task 'tiny_mcc'", "did you mean 'tiny_mc'?")


def _only_include(d):
    from lm_eval.tasks import TaskManager

    real = TaskManager.__init__

    def init(self, verbosity=None, include_path=None, include_defaults=True, metadata=None):
        real(self, include_path=include_path, include_defaults=False, metadata=metadata)

    return init


def _acc_by_hand(model, tok) -> float:
    """lm-eval's multiple_choice: argmax over choices of log P(" " + choice | context), where the
    continuation's tokens are those of encode(context + continuation) after encode(context)'s."""
    import torch

    right = 0
    for doc in DOCS:
        ctx = f"Question: {doc['question']}\nAnswer:"
        scores = []
        for ch in doc["choices"]:
            whole = tok(ctx + " " + ch, add_special_tokens=False)["input_ids"]
            n_ctx = len(tok(ctx, add_special_tokens=False)["input_ids"])
            ids = torch.tensor([whole])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits.float(), -1)[0]
            scores.append(sum(logp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole))))
        right += int(max(range(len(scores)), key=scores.__getitem__) == doc["answer"])
    return right / len(DOCS)


def test_local_task_on_a_run_and_its_base(lm_eval_installed, tmp_path, tiny_run, capsys):
    from tunelab.infer.generate import Generator

    run = tiny_run(tmp_path, "lmrun", n_train=8, steps=2)
    d = task_dir(tmp_path)
    out = tmp_path / "out"
    assert cli(run, "--base", "--lm-eval", "tiny_mc", "--lm-eval-include", d, "--batch-size", "4", "--out", out) == 0
    assert "| tiny_mc | acc |" in capsys.readouterr().out
    res = json.loads((out / "lm_eval.json").read_text(encoding="utf-8"))
    assert [m["label"] for m in res["models"]] == ["lmrun", "lmrun (base)"] and res["tasks"] == ["tiny_mc"]
    for m, base in zip(res["models"], (False, True)):
        gen = Generator.from_run(run, base=base)
        assert m["results"]["tiny_mc"]["acc"] == pytest.approx(_acc_by_hand(gen.model, gen.tokenizer))
        assert m["n_samples"]["tiny_mc"] == len(DOCS)
    assert "| tiny_mc | acc |" in (out / "lm_eval.md").read_text(encoding="utf-8")
