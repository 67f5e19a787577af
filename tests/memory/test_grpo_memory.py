"""The memory estimate of a task-grpo config (memory/grpo.py): its terms have the shapes of the module
docstring, and it grows with G, prompts per step, the completion length and the prompt length."""

import json

import pytest

from tunelab.config import from_dict
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
