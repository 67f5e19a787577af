"""Packaging that stays quiet and true: a LoRA run does not import bitsandbytes (nor print its CPU
warning), peft still wraps bitsandbytes layers once they exist, and pyproject's metadata and floors
say what the code needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BNB_CPU_WARNING = "Failed to load CPU gemm_4bit_forward"  # bitsandbytes/backends/cpu/ops.py, AVX-512-BF16 CPUs

# A tiny LoRA SFT run in a fresh interpreter (this one has long imported bitsandbytes), then the
# bitsandbytes path in the same process: peft must still give a Linear4bit its bitsandbytes LoRA layer.
SCRIPT = r"""
import json, sys
from tunelab.config import from_dict
from tunelab.train.recipes.sft import run_sft

model_dir, data, out = sys.argv[1:4]
cfg = from_dict({"model": {"name": model_dir},
                 "data": {"train": data + "/train.jsonl", "validation": data + "/validation.jsonl"},
                 "method": {"name": "lora", "r": 4},
                 "train": {"max_steps": 1, "batch_size": 4, "eval_every": "never", "precision": "fp32"},
                 "output": {"dir": out, "name": "lora"}, "eval": {"from_validation": 0}})
run_sft(cfg, quiet=True)
report = {"after_lora": "bitsandbytes" in sys.modules}
try:
    import bitsandbytes as bnb
except ImportError:
    report["bnb_layer"] = None
else:
    import torch
    from peft import LoraConfig, get_peft_model

    class Net(torch.nn.Module):
        is_loaded_in_4bit = True  # what transformers sets on a 4-bit model, and peft's dispatch reads

        def __init__(self):
            super().__init__()
            self.proj = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")

        def forward(self, x):
            return self.proj(x)

    net = get_peft_model(Net().to("cpu"), LoraConfig(r=2, target_modules=["proj"]))
    report["bnb_layer"] = type(net.base_model.model.proj).__module__ + "." + type(net.base_model.model.proj).__name__
print("REPORT " + json.dumps(report))
"""


def test_lora_run_does_not_import_bitsandbytes(tiny_model_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model_dir), str(ROOT / "examples/data/tunebot"),
                           str(tmp_path / "runs")], capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.split("REPORT ", 1)[1])
    assert report["after_lora"] is False  # the whole LoRA run went by without importing bitsandbytes
    output = proc.stdout + proc.stderr
    assert BNB_CPU_WARNING not in output.split("REPORT ", 1)[0]
    if report["bnb_layer"] is not None:  # bitsandbytes installed: its layers are still dispatched by peft
        assert report["bnb_layer"] == "peft.tuners.lora.bnb.Linear4bit"


# The inference commands on a plain LoRA run, each through the CLI entry point, in one fresh interpreter.
INFER = r"""
import json, sys
from tunelab.cli.main import run

run_dir, data, docs = sys.argv[1:4]
codes = {}
for name, argv in (("generate", ["generate", run_dir, "-p", "hi", "--max-new-tokens", "4"]),
                   ("chat", ["chat", run_dir, "--max-new-tokens", "4"]),
                   ("eval", ["eval", run_dir, "--data", data, "--max-new-tokens", "4", "--out", run_dir + "-eval"]),
                   ("rag index", ["rag", "index", docs, "--kb", "notes"]),
                   ("rag ask", ["rag", "ask", "notes", "hi", "--run", run_dir, "--max-new-tokens", "4", "-k", "1"])):
    try:
        run(argv)
    except SystemExit as e:
        codes[name] = e.code
print("REPORT " + json.dumps({"codes": codes, "bnb": "bitsandbytes" in sys.modules}))
"""


def test_inference_of_a_lora_run_is_quiet_and_imports_no_bitsandbytes(tiny_run, tmp_path):
    """eval, generate, chat and rag of a plain LoRA run: no bitsandbytes import (nor its CPU-kernel
    lines); `generate` prints its answer and nothing else; third-party warnings only with --debug."""
    import os

    run = tiny_run(tmp_path, "lora", steps=1)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.md").write_text("# Hours\n\nThe shop opens at nine.\n", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TUNELAB_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-c", INFER, str(run), str(tmp_path / "data" / "val.jsonl"), str(docs)],
                          input="/quit\n", capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.split("REPORT ", 1)[1])
    assert report["codes"] == {k: 0 for k in ("generate", "chat", "eval", "rag index", "rag ask")}, proc.stderr[-3000:]
    assert report["bnb"] is False
    output = proc.stdout + proc.stderr
    assert BNB_CPU_WARNING not in output and "kernels-community" not in output
    assert "Warning" not in output and "WARN" not in output, output[-3000:]

    gen = subprocess.run([sys.executable, "-m", "tunelab", "generate", str(run), "-p", "hi", "--max-new-tokens", "4"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)
    assert gen.returncode == 0 and gen.stderr == "", gen.stderr  # nothing but the answer (on stdout)


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _floors(reqs: list[str]) -> dict[str, tuple[int, ...]]:
    out = {}
    for r in reqs:
        name, _, rest = r.partition(">=")
        if rest:
            out[name.strip()] = tuple(int(x) for x in rest.split(",")[0].split(";")[0].strip().split("."))
    return out


def test_license_is_an_spdx_expression_and_setuptools_reads_it():
    meta = _pyproject()
    assert meta["project"]["license"] == "Apache-2.0"
    setuptools = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    assert setuptools and _floors(setuptools)["setuptools"] >= (77,)  # PEP 639 support


def test_dependency_floors_cover_what_the_code_calls():
    meta = _pyproject()
    core = _floors(meta["project"]["dependencies"])
    extra = {k: _floors(v) for k, v in meta["project"]["optional-dependencies"].items()}
    assert core["transformers"] >= (4, 56)  # from_pretrained(dtype=...): torch_dtype= before 4.56
    assert core["peft"] >= (0, 19)  # LoraLayer.update_layer(..., config=) in tunelab.adapters.qlora
    assert extra["preference"]["trl"] >= (0, 29) and extra["dev"]["trl"] >= (0, 29)  # prompt_ids/chosen_ids rows
    assert extra["bnb"]["bitsandbytes"] >= (0, 46)  # a CPU backend
    assert extra["dev"]["bitsandbytes"] >= (0, 49)  # _convert_weight_packed_for_cpu, used by the tests
    src = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "tunelab").rglob("*.py"))
    assert "torch_dtype" not in src  # dtype= throughout, the spelling the transformers floor accepts
