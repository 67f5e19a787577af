"""A run's LoRA adapter as a GGUF adapter file, for `llama-cli -m base.gguf --lora adapter.gguf`.

Written as llama.cpp's convert_lora_to_gguf.py writes one:

  metadata  general.architecture (the base's, e.g. "llama"), general.type = "adapter",
            adapter.type = "lora", adapter.lora.alpha = the adapter's lora_alpha
  tensors   <base GGUF name>.lora_a   A, numpy shape (r, in)   (ggml ne = [in, r])
            <base GGUF name>.lora_b   B, numpy shape (out, r)  (ggml ne = [r, out])
            e.g. blk.0.attn_q.weight.lora_a, blk.0.attn_qkv.weight.lora_b (Phi-3's fused projections stay
            fused, as in its base GGUF); all F32 (the converter keeps every non-".weight" tensor F32)
  general.architecture and the names are the base family's (gguf_arches.GgufArch, as for --to gguf).

llama.cpp applies W x + (alpha / r) B (A x), r read from A. Everything is exact in that form:
  - attn_q / attn_k of the llama-rope families: the base weight's rows are permuted per head (permute_qk), so B's rows
    are permuted the same way: permute(W + s B A) = permute(W) + s permute(B) A; A is untouched.
  - PEFT scales other than alpha / r (use_rslora: alpha / sqrt(r); alpha_pattern / rank_pattern)
    are folded into B: B' = B * s_peft / (alpha / r_module), so llama.cpp's alpha / r gives s_peft.

Refused, in one line each (llama.cpp cannot apply them): what every reader of adapter files refuses
(adapters/peft_files.py: modules_to_save, LoRA on the embedding or lm_head, DoRA, biases, fan_in_fan_out,
trainable token indices), and a module with no GGUF tensor. The adapter
was trained against the base the run names (config.yaml model.name); for a QLoRA run that base was
NF4 during training, so applying the adapter to an f16 base GGUF is the merge of
`tunelab merge` without the 4-bit rounding of W0.
"""

from __future__ import annotations

import math
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

HINT = "llama.cpp cannot apply it as a LoRA adapter; export with --to gguf"


def _refuse(msg: str, where: str) -> None:
    raise TunelabError(msg, where=where, hint=HINT)


def write_lora_gguf(run_dir: str | Path, out: str | Path) -> GGUFInfo:
    """Write the LoRA adapter of the finished run `run_dir` (RUN/adapter/: adapter_config.json +
    adapter_model.safetensors) as a GGUF adapter at `out` (replacing it). GGUFInfo.quant is "f32".

    Raises:
        TunelabError: not a finished adapter run, an adapter llama.cpp cannot apply (see the module
            docstring), or a base architecture GGUF export does not support.
    """
    from tunelab.adapters.peft_files import WEIGHTS
    from tunelab.models.registry import resolve
    from tunelab.runs.load import load_run

    rd, _ = load_run(run_dir)
    adapter = rd.adapter_dir
    if not rd.has_adapter or not (adapter / WEIGHTS).is_file():
        raise TunelabError(f"run {rd.path} has no LoRA adapter (adapter/adapter_model.safetensors)", where="RUN",
                           hint="a full or freeze run is a whole model: export it with --to gguf")
    base_where = "RUN: config.yaml model.name"
    resolved = resolve(rd.config.model.name, where=base_where)
    base_cfg = read_config(Path(resolved.path), where=base_where)
    return write_adapter_gguf(adapter, base_cfg, out, f"{rd.path.resolve().name} (LoRA)", base_where=base_where)


def write_adapter_gguf(adapter: Path, base_cfg: dict, out: str | Path, name: str,
                       base_where: str = "base config.json") -> GGUFInfo:
    """Write the PEFT LoRA folder `adapter` (adapter_config.json + adapter_model.safetensors), trained on
    a base with config.json `base_cfg`, as a GGUF adapter at `out` named `name`."""
    import gguf
    import numpy as np
    import torch

    from tunelab.adapters.peft_files import read_adapter

    adapter = Path(adapter)
    where = str(adapter)
    files = read_adapter(adapter, hint=HINT)  # the refusals every reader makes (adapters/peft_files.py)
    lcfg = files.config
    out = Path(out)
    if out.is_dir():
        raise TunelabError(f"{out} is a folder", where="--out", hint="give a file name ending in .gguf")

    arch = arch_of(base_cfg, where=base_where)
    arch.check(base_cfg)  # a base the GGUF export refuses has no base GGUF to apply the adapter to
    n_head = base_cfg["num_attention_heads"]
    n_kv = base_cfg.get("num_key_value_heads") or n_head
    names = tensor_name_map(arch, base_cfg["num_hidden_layers"])

    alpha = float(lcfg["lora_alpha"])
    writer = gguf.GGUFWriter(path=None, arch=arch.gguf)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(name)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    if not files.modules:
        raise TunelabError("adapter has no LoRA matrices", where=where)
    tensors = []
    for module, (a, b) in files.modules.items():
        hf = module + ".weight"
        gname = names.get_name(hf, try_suffixes=(".weight",))
        if gname is None:
            _refuse(f"adapter targets {hf}, which has no GGUF tensor", where)
        a = a.to(torch.float32).numpy()
        b = b.to(torch.float32).numpy()
        r = a.shape[0]
        s_peft = files.scaling(module)  # what PEFT multiplies B A by
        s_gguf = alpha / r  # what llama.cpp will multiply it by
        if not math.isclose(s_peft, s_gguf, rel_tol=1e-7):
            b = b * np.float32(s_peft / s_gguf)
        if arch.permute_qk and hf.endswith("q_proj.weight"):
            b = permute_qk(b, n_head)
        elif arch.permute_qk and hf.endswith("k_proj.weight"):
            b = permute_qk(b, n_kv)
        tensors.append((gname, np.ascontiguousarray(a), np.ascontiguousarray(b)))

    def order(t):  # blocks in order, then by name (the base file's layout)
        parts = t[0].split(".")
        return (int(parts[1]) if parts[0] == "blk" else 1 << 30, t[0])

    for gname, a, b in sorted(tensors, key=order):
        writer.add_tensor(f"{gname}.lora_a", a)
        writer.add_tensor(f"{gname}.lora_b", b)

    with staged_file(out, writer.close) as tmp:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    return GGUFInfo(out, "f32", 2 * len(tensors), out.stat().st_size, arch.gguf)
