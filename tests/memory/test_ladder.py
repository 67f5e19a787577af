"""The largest model that fits (memory.ladder) and what `tunelab memory` says about it."""

from __future__ import annotations

from tunelab.memory.estimator import estimate
from tunelab.memory.ladder import LADDER, largest_fitting

SETTINGS = {"batch": 1, "seq": 256, "grad_checkpointing": True, "device": "cpu", "autocast": False, "layers": "all"}


def test_the_ladder_grows_and_qlora_fits_the_largest():
    totals = [estimate(dict(cfg, _name_or_path=name), "qlora", detect=False, **SETTINGS).rss for name, cfg in LADDER]
    assert totals == sorted(totals)
    got = largest_fitting(6 * 10**9, **SETTINGS)  # the 7B benchmark's budget (measured peak 6.07 GB)
    assert got["qlora"].startswith("7B") and got["lora"].startswith("1.1B") and got["full"].startswith("135M")
    seven = estimate(dict(LADDER[4][1], _name_or_path="7b"), "qlora", detect=False, **SETTINGS)
    assert seven.rss <= 6 * 10**9 < estimate(dict(LADDER[5][1], _name_or_path="8b"), "qlora", detect=False,
                                              **SETTINGS).rss
    assert largest_fitting(10**8, **SETTINGS) == {"full": None, "lora": None, "qlora": None}


def test_memory_command_names_the_largest_model_that_fits(tiny_model_dir):
    from typer.testing import CliRunner

    from tunelab.cli.main import _mount, app

    _mount()
    out = CliRunner().invoke(app, ["memory", str(tiny_model_dir), "--method", "qlora", "--device", "cpu"],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "largest that fits in" in text and "qlora " in text and "process peak:" in text
