"""benchmarks/gpu_check.py: on a machine without CUDA, one JSON verdict saying so and exit 0; the configs it
trains on are the quickstart's, accepted by tunelab's config loader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_without_cuda_it_prints_a_verdict_and_exits_0():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no device visible, also on a GPU machine
    p = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env,
                       check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    verdict = json.loads(p.stdout.strip().splitlines()[-1])
    assert verdict["cuda"] is False and verdict["ok"] is None
    assert "CUDA" in verdict["reason"] and verdict["torch"]
    assert "stages" not in verdict


def test_stage_configs_are_valid_quickstart_configs(load_benchmark, tmp_path):
    from tunelab.config import load_config

    bench = load_benchmark("gpu_check")
    path = bench.write_config(tmp_path, "gpu-qlora", {"name": "qlora", "quant_backend": "bitsandbytes",
                                                      "quant_type": "nf4"}, 3)
    cfg = load_config(path)
    assert cfg.method.name == "qlora" and cfg.method.quant_backend == "bitsandbytes"
    assert cfg.train.max_steps == 3 and cfg.model.device == "cuda"
    assert cfg.output.dir == str(tmp_path / "runs") and Path(cfg.data.train).is_file()


def test_a_failed_stage_reports_its_last_stderr_line(load_benchmark):
    bench = load_benchmark("gpu_check")
    r = bench.run_stage([sys.executable, "-c", "import sys; print('one'); sys.exit('the reason')"], 30)
    assert r["ok"] is False and r["error"] == "the reason" and r["seconds"] >= 0
    ok = bench.run_stage([sys.executable, "-c", "pass"], 30)
    assert ok["ok"] is True and "error" not in ok
