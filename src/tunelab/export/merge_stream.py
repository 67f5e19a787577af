"""The QLoRA merge, streamed: a 4-bit base and its adapter merged layer by layer into shards.

    base      streamed from its safetensors checkpoint, each Linear quantized to NF4 as it is read
              (`quant.stream_load`, bit-identical to the 4-bit base training used)
    per layer W = dequant(W0_nf4) + (alpha / r) B A   in fp32, cast once to the export dtype, handed to a
              `models.shards.ShardWriter`, which writes a shard whenever `max_shard_bytes` are pending
    other     embeddings, norms, the head: cast to the export dtype the same way (a tied head once)

So the merged model is never held: peak memory = the 4-bit base + the adapter + one pending shard
+ one layer's fp32 decode and delta (measured: docs/memory.md, "Streamed PTQ and merge"). The tensors
equal `merge_run`'s whole-model path (dequantize_linears, then peft's merge_and_unload) bit for bit
(tests/export/test_merge_stream.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def _delta(layer: nn.Module) -> torch.Tensor | None:
    """(alpha / r) B A of the layer's active adapter, fp32 (peft's get_delta_weight for a plain Linear)."""
    for name in layer.active_adapters:
        if name in layer.lora_A:
            a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
            return (b.float() @ a.float()) * layer.scaling[name]
    return None


def stream_merge_qlora(base_path: str | Path, adapter_dir: Path, out: Path, dtype: torch.dtype,
                       quant_type: str = "nf4", double_quant: bool = True,
                       max_shard_bytes: int = 1024**3) -> tuple[nn.Module, int, int, int]:
    """Write the merged weights of base + adapter into `out` (shards + index); returns (the peft-wrapped
    4-bit model, for its config, params written, 4-bit layers decoded, adapters merged)."""
    from tunelab.models.shards import ShardWriter
    from tunelab.quant.nn import QuantLinear
    from tunelab.quant.stream_load import default_maker, stream_quantized
    from tunelab.runs.load import attach_adapter

    base = stream_quantized(base_path, default_maker(quant_type, 64, double_quant, None, torch.float32),
                            dtype=torch.float32)
    model = attach_adapter(base, adapter_dir)
    inner = model.base_model.model
    writer = ShardWriter(out, max_shard_bytes, metadata={"producer": "tunelab.export.merge"})
    seen: set[int] = set()
    params = dequantized = merged = 0

    def add(name: str, t: torch.Tensor) -> None:
        nonlocal params
        writer.add(name, t.detach().to(dtype))
        params += t.numel()

    done: list[str] = []
    with torch.no_grad():
        for mname, mod in inner.named_modules():
            if any(mname.startswith(d + ".") for d in done):
                continue  # inside a layer written whole (a LoRA wrapper's base_layer, lora_A, ...)
            prefix = mname + "." if mname else ""
            core = getattr(mod, "base_layer", None) if hasattr(mod, "lora_A") else None
            target = core if core is not None else mod
            if isinstance(target, QuantLinear) or core is not None:
                if isinstance(target, QuantLinear):
                    w = target.dequantize_weight(torch.float32)
                    dequantized += 1
                else:
                    w = target.weight.detach().float()
                delta = _delta(mod) if core is not None else None
                if delta is not None:
                    w = w + delta
                    merged += 1
                add(prefix + "weight", w)
                del w, delta
                if target.bias is not None:
                    add(prefix + "bias", target.bias)
                done.append(mname)
                continue
            for attr, p in mod.named_parameters(recurse=False):
                if p.untyped_storage().data_ptr() in seen:  # a tied head: saved once, as transformers does
                    continue
                seen.add(p.untyped_storage().data_ptr())
                add(prefix + attr, p)
            for attr, b in mod.named_buffers(recurse=False):
                if attr not in mod._non_persistent_buffers_set:
                    add(prefix + attr, b)
    writer.close()
    return model, params, dequantized, merged
