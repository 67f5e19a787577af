"""What `tunelab doctor` reports: one dict of facts about this installation and machine.

`gather()` returns plain JSON-able values (str, int, float, bool, None, lists, dicts):

    versions       tunelab, torch, transformers, peft, bitsandbytes, trl, accelerate -> version, or None
                   when not installed (read with importlib.metadata: nothing is imported for it)
    python         version, implementation, executable
    platform       system, release, machine, libc
    device         what `model.device: auto` picks (cuda > mps > cpu), CUDA devices (name, capability,
                   bf16, VRAM total/free bytes), whether MPS is there
    cpu            model name, cores, flags (avx2, avx512f, avx512_bf16, amx from /proc/cpuinfo; None
                   where unknown), torch's CPU capability (e.g. "AVX2", "AVX512"), mkldnn_bf16
    precision      auto: the autocast `train.precision: auto` picks on that device (bf16 | fp16 | fp32), why
    decode         auto: the decode engine's weights `--weights auto` picks on that device, why
    memory         RAM total / available bytes
    paths          tunelab home ($TUNELAB_HOME), model cache, knowledge bases, Hugging Face hub cache, offline
    models         per registry alias: source, installed, converted (safetensors cache), ready_offline
    quant_backend  auto: the backend `method.quant_backend: auto` picks (tunelab | bitsandbytes), why

Importing this module imports neither torch nor bitsandbytes; `gather()` imports torch (and
bitsandbytes only on a CUDA machine, where `choose_backend` tries it, as training would).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path

LIBRARIES = ("tunelab", "torch", "transformers", "peft", "bitsandbytes", "trl", "accelerate")
CPU_FLAGS = {"avx2": ("avx2",), "avx512f": ("avx512f",), "avx512_bf16": ("avx512_bf16",),
             "amx": ("amx_tile", "amx_bf16", "amx_int8")}


def gather() -> dict:
    """Every fact `tunelab doctor` shows, as one JSON-able dict (keys: see the module docstring)."""
    from tunelab.models.load import pick_device

    device = pick_device("auto")
    precision, why = precision_auto(device)
    backend, backend_why = quant_backend_auto(device)
    return {
        "versions": versions(),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "libc": " ".join(platform.libc_ver()).strip() or None},
        "device": device_info(device),
        "cpu": cpu_info(),
        "precision": {"auto": precision, "why": why, "device": device.type},
        "decode": dict(zip(("auto", "why"), decode_auto(device)), device=device.type),
        "memory": memory_info(),
        "paths": paths(),
        "models": models(),
        "quant_backend": {"auto": backend, "why": backend_why, "device": device.type},
    }


def versions() -> dict[str, str | None]:
    """Installed version of each of LIBRARIES (None: not installed), without importing them."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def device_info(device) -> dict:
    """The device training picks (`device`), and the CUDA devices and MPS this torch sees."""
    import torch

    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            try:
                free, total = torch.cuda.mem_get_info(i)
            except RuntimeError:
                free, total = None, props.total_memory
            cuda.append({"index": i, "name": props.name, "capability": f"{props.major}.{props.minor}",
                         "vram_total_bytes": int(total), "vram_free_bytes": None if free is None else int(free),
                         "bf16": props.major >= 8})
    mps = getattr(torch.backends, "mps", None)
    return {"selected": device.type, "cuda": cuda, "cuda_build": torch.version.cuda,
            "mps": bool(mps is not None and mps.is_available())}


def cpu_flags(cpuinfo: str | None = None) -> dict[str, bool | None]:
    """AVX2 / AVX-512F / AVX-512-BF16 / AMX from the `flags` line of /proc/cpuinfo (or the text given);
    every value None where that is not readable (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return {k: None for k in CPU_FLAGS}
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, rest = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 | arm
            flags = set(rest.split())
            break
    else:
        return {k: None for k in CPU_FLAGS}
    return {k: any(f in flags for f in names) for k, names in CPU_FLAGS.items()}


def cpu_model(cpuinfo: str | None = None) -> str | None:
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or None
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware"):
            return rest.strip()
    return platform.processor() or None


def cpu_info() -> dict:
    import torch

    from tunelab.runtime.precision import cpu_has_bf16

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch
        capability = None
    return {"model": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "flags": cpu_flags(),
            "torch_capability": capability, "mkldnn_bf16": cpu_has_bf16()}


def precision_auto(device) -> tuple[str, str]:
    """(the autocast dtype `train.precision: auto` trains with on `device`, why) via engine.autocast_dtype."""
    import torch

    from tunelab.runtime.precision import autocast_dtype, cpu_has_bf16

    dtype = autocast_dtype("auto", device)
    name = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}.get(dtype, str(dtype))
    if device.type == "cuda":
        why = "the GPU does bf16 natively" if name == "bf16" else "the GPU has no bf16: fp16 autocast"
    elif device.type == "cpu":
        why = ("the CPU does bf16 matmuls natively (oneDNN)" if cpu_has_bf16() else
               "no native bf16 matmuls on this CPU (AVX-512-BF16/AMX)")
    else:
        why = f"no autocast on {device.type}: its weights dtype decides"
    return name, why


def decode_auto(device) -> tuple[str, str]:
    """(the engine weights `--weights auto` and `tunelab serve` decode with on `device`, why), by
    infer/engine_choice.py's rule."""
    from tunelab.runtime.precision import cpu_int4_decode

    if device.type == "cpu" and cpu_int4_decode():
        return ("int4 for a model on a 4/8-bit grid, else the model's dtype",
                "native bf16 and torch's int4 kernel: a model converted from a Q4_0/Q4_1/Q8_0 GGUF (SmolLM2's) "
                "decodes on its exact 4-bit codes, and prompts and batches of more than 4 rows on a bf16 copy "
                "where 2 bytes a parameter fit half the free memory")
    return "the model's dtype (fp32: transformers' exact greedy tokens)", (
        "no native bf16 on this CPU, so no int4 weights" if device.type == "cpu" else
        f"int4 weights are CPU-only; on {device.type} the model's dtype")


def memory_info() -> dict:
    from tunelab.memory.available import detect_memory

    _, total, avail = detect_memory("cpu")
    return {"ram_total_bytes": total, "ram_available_bytes": avail}


def paths() -> dict:
    from tunelab.models.registry import hub_offline, model_cache_dir, tunelab_home

    try:
        from huggingface_hub import constants

        hf_cache = str(constants.HF_HUB_CACHE)
    except ImportError:
        hf_cache = None
    home = tunelab_home()
    return {"home": str(home), "home_from_env": "TUNELAB_HOME" in os.environ, "models": str(model_cache_dir("")),
            "kb": str(home / "kb"), "hf_hub_cache": hf_cache, "hub_offline": hub_offline()}


def models() -> list[dict]:
    """Per registry alias: where it comes from and whether it works offline (packages located with
    find_spec, never imported)."""
    from tunelab.models.registry import ALIASES, model_cache_dir, package_dir

    out = []
    for a in ALIASES.values():
        if a.builder:
            row = {"source": "built locally", "package": None, "installed": None,
                   "converted": (model_cache_dir(a.name) / "DONE").exists(), "ready_offline": True}
        else:
            installed = a.module is not None and package_dir(a.module) is not None
            converted = (model_cache_dir(a.name) / "DONE").exists() if a.gguf_file else None
            row = {"source": "package", "package": a.package, "installed": installed, "converted": converted,
                   "ready_offline": installed or bool(converted)}
        out.append({"alias": a.name, "task": a.task, **row})
    return out


def quant_backend_auto(device) -> tuple[str, str]:
    """(the backend `method.quant_backend: auto` picks on `device`, why) via qlora.choose_backend."""
    from tunelab.adapters.qlora import choose_backend

    backend = choose_backend("auto", device)
    if backend == "bitsandbytes":
        return backend, "CUDA, and bitsandbytes imports"
    if device.type == "cuda":
        return backend, "pure-PyTorch NF4: bitsandbytes does not import"
    return backend, "pure-PyTorch NF4 (bitsandbytes only on CUDA)"
