"""`tunelab doctor [--json]`: the facts of tunelab.doctor, as JSON and as one screen of text."""

import json
import os
import subprocess
import sys

import pytest

TUNELAB = [sys.executable, "-m", "tunelab"]


@pytest.fixture(scope="module")
def facts():
    r = subprocess.run([*TUNELAB, "doctor", "--json"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_json_has_every_section_with_its_types(facts):
    assert set(facts) == {"versions", "python", "platform", "device", "cpu", "precision", "decode", "memory",
                          "paths", "models", "quant_backend"}
    assert set(facts["versions"]) == {"tunelab", "torch", "transformers", "peft", "bitsandbytes", "trl",
                                      "accelerate"}
    assert all(v is None or isinstance(v, str) for v in facts["versions"].values())
    assert facts["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert isinstance(facts["platform"]["system"], str) and isinstance(facts["platform"]["machine"], str)
    dev = facts["device"]
    assert dev["selected"] in ("cpu", "cuda", "mps") and isinstance(dev["cuda"], list) and isinstance(dev["mps"], bool)
    for g in dev["cuda"]:
        assert isinstance(g["name"], str) and g["vram_total_bytes"] > 0
    cpu = facts["cpu"]
    assert set(cpu["flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx"}
    assert all(v is None or isinstance(v, bool) for v in cpu["flags"].values())
    assert isinstance(cpu["mkldnn_bf16"], bool) and cpu["cores"] >= 1
    mem = facts["memory"]
    assert mem["ram_total_bytes"] > 0 and 0 < mem["ram_available_bytes"] <= mem["ram_total_bytes"]
    assert isinstance(facts["paths"]["home"], str) and facts["paths"]["models"].startswith(facts["paths"]["home"])
    aliases = {m["alias"]: m for m in facts["models"]}
    assert {"smollm2-135m-instruct", "minilm-l6", "tiny-llama"} <= set(aliases)
    assert all(isinstance(m["ready_offline"], bool) for m in facts["models"])
    assert aliases["tiny-llama"]["ready_offline"] is True  # built locally
    assert facts["quant_backend"]["auto"] in ("tunelab", "bitsandbytes") and facts["quant_backend"]["why"]
    assert facts["precision"]["why"]


def test_versions_and_choices_match_this_process(facts):
    import torch

    from tunelab.adapters.qlora import choose_backend
    from tunelab.models.load import pick_device
    from tunelab.runtime.precision import cpu_has_bf16

    assert facts["versions"]["torch"] == torch.__version__
    assert facts["cpu"]["mkldnn_bf16"] == cpu_has_bf16()
    dev = pick_device("auto")
    assert facts["device"]["selected"] == dev.type
    if dev.type == "cpu":
        from tunelab.runtime.precision import cpu_int4_decode

        assert facts["precision"]["auto"] == ("bf16" if cpu_has_bf16() else "fp32")
        assert facts["decode"]["auto"].startswith("int4") == cpu_int4_decode()  # the rule engine_choice applies
        assert facts["quant_backend"]["auto"] == choose_backend("auto", dev) == "tunelab"
    else:
        assert facts["precision"]["auto"] in ("bf16", "fp16", "fp32")


def test_text_mode_prints_one_screen():
    r = subprocess.run([*TUNELAB, "doctor"], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    for word in ("torch", "precision: auto", "quant_backend: auto", "--weights auto", "RAM", "tunelab home", "tiny-llama", "AVX2"):
        assert word in r.stdout, word
    assert len(r.stdout.splitlines()) <= 50


def test_doctor_never_imports_bitsandbytes_to_report_it():
    code = ("import sys\n"
            "import tunelab.doctor as d, tunelab.cli.doctor\n"
            "assert 'bitsandbytes' not in sys.modules and 'torch' not in sys.modules\n"
            "import torch\n"
            "facts = d.gather()\n"
            "assert torch.cuda.is_available() or 'bitsandbytes' not in sys.modules\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_cpu_flags_parse_cpuinfo():
    from tunelab.doctor import cpu_flags

    x86 = "processor : 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
    assert cpu_flags(x86) == {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx": True}
    assert cpu_flags("flags : fpu sse avx2\n") == {"avx2": True, "avx512f": False, "avx512_bf16": False, "amx": False}
    assert cpu_flags("nothing here\n") == {"avx2": None, "avx512f": None, "avx512_bf16": None, "amx": None}


def test_cuda_devices_are_reported_with_vram_precision_and_backend(monkeypatch):
    """The CUDA branch on a machine without a GPU: torch.cuda and choose_backend stand in for one."""
    from types import SimpleNamespace

    import torch

    from tunelab.adapters import qlora
    from tunelab.cli.doctor import rows
    from tunelab import doctor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(name="NVIDIA H200", major=9, minor=0, total_memory=141 * 2**30))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (100 * 2**30, 141 * 2**30))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(qlora, "choose_backend", lambda pref, device: "bitsandbytes")
    facts = doctor.gather()
    assert facts["device"]["selected"] == "cuda"
    assert facts["device"]["cuda"] == [{"index": 0, "name": "NVIDIA H200", "capability": "9.0", "bf16": True,
                                        "vram_total_bytes": 141 * 2**30, "vram_free_bytes": 100 * 2**30}]
    assert facts["precision"]["auto"] == "bf16" and facts["quant_backend"]["auto"] == "bitsandbytes"
    json.dumps(facts)  # still plain JSON
    text = {item: value for _, item, value in rows(facts)}
    assert text["VRAM cuda:0"] == "100.0 GiB free of 141.0 GiB"
    assert text["cuda:0"].startswith("NVIDIA H200, compute 9.0")
