"""The Python API (`import tunelab`): train, load, quantize, rag, on the tiny random Llama."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tunelab
from tunelab.errors import TunelabError

SRC = str(Path(tunelab.__file__).resolve().parents[1])
TRAIN = "examples/data/tunebot/train.jsonl"
VAL = "examples/data/tunebot/validation.jsonl"


def python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=False)


def tiny_dict(tmp_path, model_dir, **over) -> dict:
    d = {
        "model": {"name": str(model_dir)},
        "data": {"train": TRAIN, "validation": VAL, "system": "You are TuneBot."},
        "method": {"name": "lora", "r": 4},
        "train": {"lr": 5e-3, "max_steps": 2, "batch_size": 8, "precision": "fp32"},
        "output": {"dir": str(tmp_path / "runs"), "name": "api"},
        "eval": {"from_validation": 1, "max_new_tokens": 2},
    }
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v}
    return d


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, tiny_model_dir):
    # a module of train/ imported before tunelab.train is called
    from tunelab.train.engine import train_loop

    assert callable(train_loop)
    tmp = tmp_path_factory.mktemp("api")
    config = tiny_dict(tmp, tiny_model_dir)
    before = json.dumps(config, sort_keys=True)
    out = tunelab.train(config, quiet=True)
    assert json.dumps(config, sort_keys=True) == before  # the dict is not modified
    return config, out


def test_import_tunelab_does_not_import_torch():
    r = python("import sys, tunelab\n"
               "t, l, q = tunelab.train, tunelab.load, tunelab.quantize\n"
               "assert callable(t) and callable(l) and callable(q)\n"
               "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'numpy') if m in sys.modules)\n"
               "print(heavy)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("order", ["api first", "engine first"])
def test_train_is_callable_in_either_import_order(order):
    api = "import tunelab\nfn = tunelab.train\n"
    engine = "from tunelab.train.engine import train_loop\nimport tunelab.train.engine as engine\n"
    r = python((api + engine if order == "api first" else engine + api) + (
        "import tunelab\n"
        "from tunelab import train\n"
        "from tunelab.errors import TunelabError\n"
        "assert tunelab.train is fn is train and engine.train_loop is train_loop and callable(tunelab.train)\n"
        "assert tunelab.api.train is tunelab.train.run\n"
        "try:\n"
        "    tunelab.train({'data': {'train': 'x.jsonl'}, 'bogus': 1})\n"
        "except TunelabError as e:\n"
        "    print(e)\n"))
    assert r.returncode == 0, r.stderr
    assert "bogus: unknown key" in r.stdout


def test_train_a_dict_and_reply(api_run):
    from tunelab.infer.generate import Generator

    _, out = api_run
    assert (out.run_dir / "DONE").exists() and out.result.steps == 2
    assert out.summary_lines()
    gen = tunelab.load(out.run_dir)
    assert isinstance(gen, Generator)
    reply = gen.reply([{"role": "user", "content": "Great video, thanks!"}], max_new_tokens=4)
    assert isinstance(reply, str)


def test_train_takes_a_yaml_path_and_overrides(api_run, tiny_model_dir, tmp_path):
    import yaml

    from tunelab.config import as_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_dict(tmp_path, tiny_model_dir)))
    cfg = as_config(path, ["train.lr=1e-4", "output.name=other"])
    assert cfg.train.lr == 1e-4 and cfg.output.name == "other"
    assert as_config(cfg) is cfg
    assert as_config(cfg, "train.epochs=2").train.epochs == 2
    with pytest.raises(TunelabError, match="already finished"):  # the same run again: refused, as by the CLI
        tunelab.train(api_run[0], quiet=True)
    with pytest.raises(TunelabError, match="a config is a YAML path, a dict or a RunConfig"):
        tunelab.train(42)


def test_load_refuses_what_it_cannot_serve(tmp_path, api_run):
    with pytest.raises(TunelabError, match="no such run directory"):
        tunelab.load(tmp_path / "missing")
    with pytest.raises(TunelabError, match="not a tunelab run directory"):
        tunelab.load(tmp_path)
    reward = tmp_path / "reward"
    reward.mkdir()
    (reward / "config.yaml").write_text("task: reward\n")
    (reward / "DONE").write_text("")
    with pytest.raises(TunelabError, match="is a reward run; tunelab.load needs") as e:
        tunelab.load(reward)
    assert "\n" not in str(e.value)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("task: sft\n")
    with pytest.raises(TunelabError, match="incomplete"):
        tunelab.load(unfinished)


def test_quantize_to_a_folder(tiny_model_dir, tmp_path):
    from tunelab.quant.nn import QuantLinear

    model = tunelab.quantize(str(tiny_model_dir), "nf4", out=tmp_path / "q", double_quant=True)
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 14  # every Linear but lm_head
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert manifest["formats"] == ["nf4"] and manifest["double_quant"] is True and manifest["skip"] == ["lm_head"]
    assert manifest["source"] == str(tiny_model_dir)
    back = tunelab.quant.load(tmp_path / "q")
    assert sum(isinstance(m, QuantLinear) for m in back.modules()) == 14
    with pytest.raises(TunelabError, match="unknown format"):
        tunelab.quantize(str(tiny_model_dir), "nf3")


def test_quantize_a_loaded_model_in_place(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunelab.quant.nn import QuantLinear

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tunelab.quantize(model, "int8", rest_dtype="fp32") is model
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 14


def test_quantize_refuses_a_run(api_run):
    with pytest.raises(TunelabError, match="takes a model"):
        tunelab.quantize(str(api_run[1].run_dir), "nf4")


def test_rag_is_the_subpackage():
    from tunelab import rag

    assert tunelab.rag is rag and rag.__name__ == "tunelab.rag"
    assert all(callable(getattr(tunelab.rag, f)) for f in ("index", "query", "ask", "evaluate"))
