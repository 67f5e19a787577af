"""train/rewards.py: built-in scores, weights and NaN handling, user functions by module or file, and the
one-line errors (bad spec, missing module / file / function, a reward that raises, wrong count)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.train.grpo_config import grpo_settings
from tunelab.train.rewards import load_rewards, score


def rewards(*specs, base=None):
    return load_rewards(grpo_settings({"rewards": list(specs)}).rewards, base)


def test_builtins_score():
    comps = ["The sum is 81. #### 81", "#### 80", "no answer", '{"a": 1}']
    cols = {"answer": ["81", "81", "81", "81"]}
    rs = rewards({"name": "exact_match", "column": "answer", "pattern": r"####\s*(-?\d+)"},
                 {"name": "exact_match", "column": "answer"},
                 {"name": "contains", "column": "answer"},
                 {"name": "regex", "pattern": r"####\s*\d+$"},
                 {"name": "length", "target": 4},
                 {"name": "json_valid"})
    total, per = score(rs, ["p"] * 4, comps, cols)
    assert per["exact_match"] == [1.0, 0.0, 0.0, 0.0]
    assert per["exact_match_2"] == [0.0, 0.0, 0.0, 0.0]  # whole completion vs "81"; second of the name: _2
    assert per["contains"] == [1.0, 0.0, 0.0, 0.0]
    assert per["regex"] == [1.0, 1.0, 0.0, 0.0]
    assert per["length"] == [1 - 2 / 4, 1 - 2 / 4, 1 - 2 / 4, 1 - 2 / 4]  # 6, 2, 2, 2 words vs 4
    assert per["json_valid"] == [0.0, 0.0, 0.0, 1.0]
    assert total == [sum(v[i] for v in per.values()) for i in range(4)]


def test_weights_and_none_scores(tmp_path):
    (tmp_path / "my_rewards.py").write_text(
        "def half_none(prompts, completions, **cols):\n"
        "    return [None if i % 2 else 2.0 for i, _ in enumerate(completions)]\n"
        "def uses_column(prompts, completions, answer, **cols):\n"
        "    return [float(len(c) == len(a)) for c, a in zip(completions, answer)]\n", encoding="utf-8")
    rs = rewards({"function": "my_rewards.py:half_none", "weight": 0.5},
                 {"function": "my_rewards.py:uses_column", "weight": 3.0},
                 {"name": "contains", "column": "answer", "weight": -1.0}, base=tmp_path)
    assert [r.name for r in rs] == ["half_none", "uses_column", "contains"]
    total, per = score(rs, ["p", "q"], ["ab", "xyz"], {"answer": ["ab", "b"]})
    assert math.isnan(per["half_none"][1])
    assert total == [0.5 * 2.0 + 3.0 * 1.0 - 1.0, 0.0 + 3.0 * 0.0 - 0.0]  # a None score is left out


def test_module_function(tmp_path, monkeypatch):
    (tmp_path / "rewardmod_xyz.py").write_text("def one(prompts, completions, **k):\n    return [1] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rs = rewards({"function": "rewardmod_xyz:one", "weight": 2})
    assert score(rs, ["p"], ["c"], {})[0] == [2.0]


@pytest.mark.parametrize("spec, where, words", [
    ({"name": "nope"}, "grpo.rewards[0].name", "unknown reward 'nope'"),
    ({"name": "exact_match"}, "grpo.rewards[0]", "needs column"),
    ({"name": "regex", "pattern": "(["}, "grpo.rewards[0].pattern", "bad pattern"),
    ({"function": "no_such_module_qq:f"}, "grpo.rewards[0].function", "cannot be imported"),
    ({"function": "json:no_such_fn"}, "grpo.rewards[0].function", "has no function 'no_such_fn'"),
    ({"function": "missing.py:f"}, "grpo.rewards[0].function", "reward file not found"),
    ({"function": "nocolon"}, "grpo.rewards[0].function", "is not module:function"),
])
def test_load_errors(tmp_path, spec, where, words):
    with pytest.raises(TunelabError) as e:
        rewards(spec, base=tmp_path)
    assert e.value.where == where and words in e.value.message and "\n" not in str(e.value)


def test_spec_and_section_errors():
    for bad, where in [({"rewards": [{"name": "regex", "function": "a:b"}]}, "grpo.rewards.0"),
                       ({"rewards": [{}]}, "grpo.rewards.0"), ({"loss_type": "ppo"}, "grpo.loss_type"),
                       ({"num_generations": 1}, "grpo.num_generations")]:
        with pytest.raises(TunelabError) as e:
            grpo_settings(bad)
        assert e.value.where == where
    with pytest.raises(TunelabError, match="at least one reward"):
        load_rewards([])


def test_reward_errors_at_scoring(tmp_path):
    (tmp_path / "r.py").write_text("def boom(prompts, completions, **k):\n    raise ValueError('bad input')\n"
                                   "def short(prompts, completions, **k):\n    return [1.0]\n"
                                   "def text(prompts, completions, **k):\n    return ['x'] * len(completions)\n")
    cases = [("r.py:boom", "reward boom raised ValueError: bad input"),
             ("r.py:short", "reward short returned 1 scores for 2 completions"),
             ("r.py:text", "reward text returned list, not a list of numbers")]
    for fn, msg in cases:
        rs = rewards({"function": fn}, base=tmp_path)
        with pytest.raises(TunelabError) as e:
            score(rs, ["a", "b"], ["x", "y"], {})
        assert e.value.message == msg
    rs = rewards({"name": "contains", "column": "answer"})
    with pytest.raises(TunelabError, match="reward contains: the data has no column 'answer'"):
        score(rs, ["a"], ["x"], {"other": ["1"]})


def test_cli_missing_function_exits_2_in_one_line(tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps({"prompt": "What is 1 + 1?", "answer": "2"}) + "\n")
    (tmp_path / "rw.py").write_text("def other(prompts, completions, **k):\n    return [0.0] * len(completions)\n")
    (tmp_path / "cfg.yaml").write_text(
        "task: grpo\nmodel: {name: tiny-llama}\ndata: {train: data.jsonl}\n"
        "grpo: {rewards: [{function: 'rw.py:score'}]}\n" f"output: {{dir: {tmp_path / 'runs'}}}\n")
    exe = Path(sys.executable).parent / "tunelab"
    p = subprocess.run([str(exe), "train", str(tmp_path / "cfg.yaml")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "'rw.py' has no function 'score'" in lines[0] and "grpo.rewards[0].function" in lines[0]
    assert not (tmp_path / "runs").exists()  # refused before anything was written
