"""The memory estimate of a task-grpo config (memory/grpo.py): its terms have the shapes of the module
docstring, and it grows with G, prompts per step, the completion length and the prompt length."""

import json

import pytest

from tunelab.config import from_dict
from tunelab.errors import TunelabError
from tunelab.memory.estimator import estimate
from tunelab.memory.grpo import HELDOUT_BATCH, estimate_grpo, prompt_tokens
from tunelab.memory.shape import ModelShape, read_config


def _cfg(tmp_path, model, **data):
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": "word " * k, "answer": "1"}) + "\n"
                                              for k in (3, 20, 7)))
    return from_dict({"task": "grpo", "model": {"name": str(model)},
                      "data": {"train": str(tmp_path / "p.jsonl"), **data}, "method": {"name": "lora", "r": 8}})


def test_terms_and_monotone(tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir)
    m = estimate_grpo(cfg, 4, 2, 16, s_prompt=30, heldout=0)
    s = ModelShape.from_config(read_config(str(tiny_model_dir))[0])
    n, c, v, h = 8, 16, s.vocab, s.hidden
    assert m.rows == n and m.kv_rows == n
    assert m.logprobs == n * c * v * 12
    assert m.engine == (s.linear_params + v * h) * 4
    assert m.kv_cache == 2 * s.layers * s.kv_dim * n * (30 + c) * 4
    ref = estimate(str(tiny_model_dir), "lora", batch=n, seq=30 + c, r=8, device="cpu", target_fraction=0.0,
                   detect=False, layers=cfg.method.layers, autocast=m.head_cast > 0)
    assert m.policy.total == ref.total
    resident = ref.weights + ref.optimizer_states + ref.adapters
    assert m.total == resident + m.engine + max(m.step, m.kv_cache)
    assert m.rss == m.total + ref.process
    assert m.step >= ref.forward_phase + m.logprobs
    grow = [estimate_grpo(cfg, 8, 2, 16, s_prompt=30, heldout=0), estimate_grpo(cfg, 4, 4, 16, s_prompt=30, heldout=0),
            estimate_grpo(cfg, 4, 2, 32, s_prompt=30, heldout=0), estimate_grpo(cfg, 4, 2, 16, s_prompt=60, heldout=0)]
    assert all(x.rss > m.rss for x in grow)
    assert estimate_grpo(cfg, 4, 2, 16, s_prompt=30, heldout=100).kv_rows == HELDOUT_BATCH  # the held-out batch


def test_prompt_length_and_heldout_count(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from tunelab.data.templates import build_template
    from tunelab.data.tokenize import encode_segments

    cfg = _cfg(tmp_path, tiny_model_dir, val_split=0.5)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids, _ = encode_segments(tok, build_template("auto", tok).segments([{"role": "user", "content": "word " * 20}],
                                                                      add_generation_prompt=True))
    assert prompt_tokens(cfg) == len(ids)
    m = estimate_grpo(cfg, 2, 1, 8)
    assert m.prompt_tokens == len(ids) and m.kv_rows == 2  # round(3 x 0.5) = 2 held-out prompts
    assert m.rss == pytest.approx(estimate_grpo(cfg, 2, 1, 8, s_prompt=len(ids), heldout=2).rss)


def test_memory_command_reads_a_grpo_config(tmp_path, tiny_model_dir):
    """`tunelab memory CONFIG.yaml` prints the grpo estimate's parts and its peak; another task's config is refused."""
    import yaml
    from typer.testing import CliRunner

    from tunelab.cli.main import _mount, app

    cfg = _cfg(tmp_path, tiny_model_dir)
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump({**cfg.model_dump(mode="json", exclude_none=True),
                                    "grpo": {"num_generations": 4, "prompts_per_step": 2, "max_completion_length": 16,
                                             "rewards": [{"name": "contains", "column": "answer"}]}}))
    _mount()
    out = CliRunner().invoke(app, ["memory", str(path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    m = estimate_grpo(from_dict(yaml.safe_load(path.read_text())), 4, 2, 16)
    from tunelab.cli.merge import _gb

    assert "N = G x P = 8 rows" in out.output and f"process peak: {_gb(m.rss)}" in out.output
    sft = tmp_path / "sft.yaml"
    sft.write_text(yaml.safe_dump({"task": "sft", "model": {"name": str(tiny_model_dir)},
                                   "data": {"train": str(tmp_path / "p.jsonl")}}))
    bad = CliRunner().invoke(app, ["memory", str(sft)])  # the TunelabError that main prints as one line, exit 2
    assert isinstance(bad.exception, TunelabError) and "a config of task sft" in str(bad.exception)
