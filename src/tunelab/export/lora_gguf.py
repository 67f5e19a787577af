"""A run's LoRA adapter as a GGUF adapter file, for `llama-cli -m base.gguf --lora adapter.gguf`.

Written as llama.cpp's convert_lora_to_gguf.py writes one:

  metadata  general.architecture (the base's, e.g. "llama"), general.type = "adapter",
            adapter.type = "lora", adapter.lora.alpha = the adapter's lora_alpha
  tensors   <base GGUF name>.lora_a   A, numpy shape (r, in)   (ggml ne = [in, r])
            <base GGUF name>.lora_b   B, numpy shape (out, r)  (ggml ne = [r, out])
            e.g. blk.0.attn_q.weight.lora_a; all F32 (the converter keeps every non-".weight" tensor F32)

llama.cpp applies W x + (alpha / r) B (A x), r read from A. Everything is exact in that form:
  - attn_q / attn_k: the base weight's rows are permuted per head (gguf.permute_qk), so B's rows
    are permuted the same way: permute(W + s B A) = permute(W) + s permute(B) A; A is untouched.
  - PEFT scales other than alpha / r (use_rslora: alpha / sqrt(r); alpha_pattern / rank_pattern)
    are folded into B: B' = B * s_peft / (alpha / r_module), so llama.cpp's alpha / r gives s_peft.

Refused, in one line each (llama.cpp cannot apply them): modules_to_save (whole trained copies of
layers), LoRA on the embedding or lm_head, DoRA, LoRA biases, trainable token indices. The adapter
was trained against the base the run names (config.yaml model.name); for a QLoRA run that base was
NF4 during training, so applying the adapter to an f16 base GGUF is the merge of
`tunelab merge` without the 4-bit rounding of W0.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.export.staging import staged_file
from tunelab.export.gguf import (
    GGUFInfo,
    arch_of,
    permute_qk,
    read_config,
    tensor_name_map,
)

_AB = re.compile(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$")


def _refuse(msg: str, where: str) -> None:
    raise TunelabError(msg, where=where, hint="llama.cpp cannot apply it as a LoRA adapter; export with --to gguf")


def _check_config(lcfg: dict, where: str) -> None:
    if lcfg.get("peft_type", "LORA") != "LORA":
        _refuse(f"adapter is {lcfg.get('peft_type')}, not LoRA", where)
    if lcfg.get("modules_to_save"):
        _refuse(f"adapter has modules_to_save {lcfg['modules_to_save']}", where)
    if lcfg.get("use_dora"):
        _refuse("adapter is DoRA (a learned magnitude per column)", where)
    if lcfg.get("lora_bias"):
        _refuse("adapter trains LoRA biases", where)
    if lcfg.get("trainable_token_indices"):
        _refuse("adapter trains token embeddings (trainable_token_indices)", where)


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern lookup: a key matches the module name or a dotted suffix."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _pairs(state: dict, where: str) -> dict[str, tuple]:
    """{HF base weight name: (A, B)} from a PEFT state dict; refuses anything that is not A/B."""
    pairs: dict[str, dict] = {}
    for key, t in state.items():
        if "lora_embedding" in key or ".embed_tokens." in key or ".lm_head." in key:
            _refuse(f"adapter has LoRA on the embedding or lm_head ({key})", where)
        m = _AB.match(key)
        if not m:
            _refuse(f"adapter holds {key}, which is not a LoRA A/B matrix", where)
        pairs.setdefault(m.group(1) + ".weight", {})[m.group(2)] = t
    out = {}
    for name, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise TunelabError(f"adapter has lora_A without lora_B (or the reverse) for {name}", where=where)
        out[name] = (ab["A"], ab["B"])
    return out


def write_lora_gguf(run_dir: str | Path, out: str | Path) -> GGUFInfo:
    """Write the LoRA adapter of the finished run `run_dir` (RUN/adapter/: adapter_config.json +
    adapter_model.safetensors) as a GGUF adapter at `out` (replacing it). GGUFInfo.quant is "f32".

    Raises:
        TunelabError: not a finished adapter run, an adapter llama.cpp cannot apply (see the module
            docstring), or a base architecture GGUF export does not support.
    """
    import gguf
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from tunelab.models.registry import resolve
    from tunelab.runs.load import load_run

    rd, cfg = load_run(run_dir)
    adapter = rd.path / "adapter"
    where = str(adapter)
    if not (adapter / "adapter_config.json").is_file() or not (adapter / "adapter_model.safetensors").is_file():
        raise TunelabError(f"run {rd.path} has no LoRA adapter (adapter/adapter_model.safetensors)", where="RUN",
                           hint="a full or freeze run is a whole model: export it with --to gguf")
    lcfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    _check_config(lcfg, where)
    out = Path(out)
    if out.is_dir():
        raise TunelabError(f"{out} is a folder", where="--out", hint="give a file name ending in .gguf")

    base_where = "RUN: config.yaml model.name"
    resolved = resolve(cfg["model"]["name"], where=base_where)
    base_cfg = read_config(Path(resolved.path), where=base_where)
    arch = arch_of(base_cfg, where=base_where)
    n_head = base_cfg["num_attention_heads"]
    n_kv = base_cfg.get("num_key_value_heads") or n_head
    names = tensor_name_map(arch, base_cfg["num_hidden_layers"])

    alpha = float(lcfg["lora_alpha"])
    rslora = bool(lcfg.get("use_rslora"))
    writer = gguf.GGUFWriter(path=None, arch=arch.gguf)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(f"{rd.path.resolve().name} (LoRA)")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    pairs = _pairs(load_file(str(adapter / "adapter_model.safetensors")), where)
    if not pairs:
        raise TunelabError("adapter has no LoRA matrices", where=where)
    tensors = []
    for hf, (a, b) in pairs.items():
        name = names.get_name(hf, try_suffixes=(".weight",))
        if name is None:
            _refuse(f"adapter targets {hf}, which has no GGUF tensor", where)
        a = a.to(torch.float32).numpy()
        b = b.to(torch.float32).numpy()
        r = a.shape[0]
        module = hf.removesuffix(".weight")
        alpha_m = float(_pattern_value(lcfg.get("alpha_pattern"), module, alpha))
        s_peft = alpha_m / (math.sqrt(r) if rslora else r)  # what PEFT multiplies B A by
        s_gguf = alpha / r  # what llama.cpp will multiply it by
        if not math.isclose(s_peft, s_gguf, rel_tol=1e-7):
            b = b * np.float32(s_peft / s_gguf)
        if arch.permute_qk and hf.endswith("q_proj.weight"):
            b = permute_qk(b, n_head)
        elif arch.permute_qk and hf.endswith("k_proj.weight"):
            b = permute_qk(b, n_kv)
        tensors.append((name, np.ascontiguousarray(a), np.ascontiguousarray(b)))

    def order(t):  # blocks in order, then by name (the base file's layout)
        parts = t[0].split(".")
        return (int(parts[1]) if parts[0] == "blk" else 1 << 30, t[0])

    for name, a, b in sorted(tensors, key=order):
        writer.add_tensor(f"{name}.lora_a", a)
        writer.add_tensor(f"{name}.lora_b", b)

    with staged_file(out, writer.close) as tmp:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    return GGUFInfo(out, "f32", 2 * len(tensors), out.stat().st_size, arch.gguf)
