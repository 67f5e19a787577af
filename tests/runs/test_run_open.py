"""runs.open(path) -> Run: a finished run read back, its RunConfig validated again, every part by accessor."""

from __future__ import annotations

import pytest
import yaml

from tunelab import runs
from tunelab.errors import TunelabError


@pytest.fixture(scope="module")
def run_path(tiny_run, tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("open"), "opened", steps=1)


def test_open_reads_the_typed_config_and_names_every_part(run_path):
    run = runs.open(run_path)
    assert isinstance(run, runs.Run) and isinstance(run, runs.RunDir)
    cfg = run.config
    assert cfg.method.r == 4 and cfg.method.alpha == 16 and cfg.train.max_steps == 1 and run.task == "sft"
    assert run.versions.get("torch") and "versions" not in cfg.model_dump()
    assert run.adapter_dir == run_path / "adapter" and run.has_adapter and run.weights == "adapter"
    assert run.model_dir == run_path / "model" and run.quantized_dir == run_path / "quantized"
    assert run.checkpoints_dir == run_path / "checkpoints"
    assert run.checkpoint(7) == run_path / "checkpoints" / "step-7"
    assert run.template_path.is_file() and run.metrics_path.is_file() and run.config_path.is_file()
    assert run.export_dir == run_path / "export" and run.done and run.done_path.is_file()
    assert run.template().name


def test_open_checks_like_require_run(run_path, tmp_path):
    with pytest.raises(TunelabError, match="no such run directory"):
        runs.open(tmp_path / "missing")
    with pytest.raises(TunelabError, match="needs a classify run"):
        runs.open(run_path, ("classify",), "predict")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text((run_path / "config.yaml").read_text())
    with pytest.raises(TunelabError, match="incomplete"):
        runs.open(tmp_path / "half")


def _copy_with(run_path, tmp_path, edit):
    import shutil

    dst = tmp_path / "edited"
    shutil.copytree(run_path, dst)
    saved = yaml.safe_load((dst / "config.yaml").read_text())
    edit(saved)
    (dst / "config.yaml").write_text(yaml.safe_dump(saved))
    return dst


def test_a_run_recorded_with_autos_still_loads(run_path, tmp_path):
    """Runs trained before train/resolve.py recorded autos; qlora's quant_type auto meant nf4 then."""
    def old(saved):
        saved["train"].update(precision="auto", gradient_checkpointing="auto", keep_freed_memory="auto")
        saved["method"].update(name="qlora", quant_type="auto", quant_backend="auto")

    cfg = runs.open(_copy_with(run_path, tmp_path, old)).config
    assert cfg.train.precision == "auto" and cfg.method.quant_type == "nf4"


def test_an_invalid_config_is_one_line_when_read(run_path, tmp_path):
    run = runs.open(_copy_with(run_path, tmp_path, lambda s: s["train"].update(lr_rate=1)))
    with pytest.raises(TunelabError, match="config.yaml does not validate") as e:
        run.config
    assert "\n" not in str(e.value) and "lr_rate" in str(e.value)
