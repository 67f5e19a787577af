"""Merge a run's adapter into its base and export a plain transformers model.

    LoRA:   W = W0 + (alpha / r) B A                         W0 the base weight as trained
    QLoRA:  W = dequant(W0_nf4) + (alpha / r) B A            dequantized first, never re-quantized
    full / freeze: the run's model/ is re-saved as it is (in the requested dtype)

Merging into the 4-bit weight itself would round W0 + delta back onto the NF4 grid: with a typical
delta far below one NF4 step (absmax / 8 per block), most of the update would round away and the
rest would move other weights of the block (the complaint in peft#2321). Here the 4-bit base is
decoded exactly as it was during training (`QuantLinear.dequantize_weight`, fp32), so the merged
model computes what base+adapter computed, to fp32 rounding. That decode is tunelab's NF4 codec
whichever backend trained the run (the bytes are identical), so a merge never calls bitsandbytes'
CPU `dequantize_4bit` (wrong on AVX-512 CPUs for rows that are not whole 64-blocks, see
docs/quantization.md) and never imports bitsandbytes.

The sum is formed in fp32 and cast once to the export dtype: bf16(W0 + delta) rounds once, where
bf16(bf16(W0) + bf16(delta)) would round three times. Peak memory is therefore one fp32 copy of the
model (4 bytes/param: 0.54 GB for SmolLM2-135M, 27 GB for a 7B model) on the whole-model path; a QLoRA
run whose base is a local safetensors folder is merged streamed instead (`export.merge_stream`: the
4-bit base + one shard, layer by layer).

The output folder is written to a sibling temporary folder and renamed into place when complete,
so a crash never leaves a half-written model under the requested name.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.export.staging import check_out, publish, staging
from tunelab.quant import bnb_compat

bnb_compat.defer_bitsandbytes_import()  # merge_run imports peft: keep it from importing bitsandbytes

EXPORT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class MergeResult:
    out: Path
    method: str  # lora | qlora | full | freeze
    dtype: str
    params: int
    dequantized: int  # QuantLinear layers decoded back to nn.Linear (qlora)
    merged: int  # LoRA-adapted layers folded into their base weight


def dequantize_linears(model: nn.Module, dtype: torch.dtype = torch.float32) -> int:
    """Replace every QuantLinear by an nn.Linear holding W' = dequantize_weight(dtype) (+ its bias),
    in place; returns how many were replaced. Nothing is re-quantized."""
    from tunelab.quant.nn import QuantLinear, replace_linears

    def make(_name: str, q: QuantLinear) -> nn.Linear:
        w = q.dequantize_weight(dtype)
        lin = nn.Linear(q.in_features, q.out_features, bias=q.bias is not None, device=w.device, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            if q.bias is not None:
                lin.bias.copy_(q.bias.to(dtype))
        return lin

    return len(replace_linears(model, make, skip=(), types=(QuantLinear,)))


def _cast(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast floating parameters and buffers in place (`model.to(dtype)` is refused by transformers for
    models whose config carries a quantization_config, e.g. the GGUF-converted aliases)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point() and t.dtype != dtype:
            t.data = t.data.to(dtype)


def _drop_quantization_config(model: nn.Module) -> None:
    """The export holds plain dense weights: forget any quantization the base was loaded with
    (a GGUF source's `quantization_config` would make from_pretrained look for a .gguf file)."""
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


def _streamable_base(cfg) -> str | None:
    """The run's base (`cfg`: its RunConfig) as a local safetensors folder (what the streamed QLoRA merge
    reads), else None."""
    from tunelab.models.registry import resolve
    from tunelab.quant.stream_load import is_streamable

    rm = resolve(cfg.model.name, where="RUN: config.yaml model.name")
    return rm.path if rm.source != "hub" and is_streamable(rm.path) else None


def _run_tokenizer(rd):
    """The run's own tokenizer/ when it saved one (runs of earlier versions), else the base's."""
    from transformers import AutoTokenizer

    from tunelab.models.load import load_tokenizer
    from tunelab.models.registry import resolve

    if rd.tokenizer_dir.exists():
        return AutoTokenizer.from_pretrained(str(rd.tokenizer_dir))
    return load_tokenizer(resolve(rd.config.model.name, where="RUN: config.yaml model.name"))


def merge_run(run: str | Path, out: str | Path, dtype: str = "fp32", overwrite: bool = False) -> MergeResult:
    """Merge (or export) a finished run into `out`: a folder `AutoModelForCausalLM.from_pretrained`
    loads without tunelab, with the tokenizer and the run's chat template.

    Raises:
        TunelabError: `run` is not a finished run, `out` exists and is not empty (without `overwrite`),
            or `dtype` is unknown.
    """
    from tunelab.methods import Merge, method_of
    from tunelab.runs.load import attach_adapter, load_run, load_run_base
    from tunelab.runs.rundir import save_tokenizer_with_template

    if dtype not in EXPORT_DTYPES:
        raise TunelabError(f"unknown dtype '{dtype}'", where="--dtype", hint=f"one of: {', '.join(EXPORT_DTYPES)}")
    rd, _ = load_run(run)
    cfg, out = rd.config, Path(out)
    method, m = cfg.method.name, cfg.method
    decode_base = method_of(m).merge is Merge.DEQUANTIZED_ADAPTER  # qlora: its 4-bit base decoded first
    check_out(out, overwrite)
    tmp = staging(out)
    dequantized = merged = 0
    streamed = None
    try:
        quant_type = m.quant_type  # qlora: settled (nf4 | fp4 | gguf) when the run is read back
        # streamed for an NF4/FP4 base (a GGUF-blocks base is merged whole: its weights are the blocks' decode)
        base_dir = _streamable_base(cfg) if decode_base and quant_type in ("nf4", "fp4") \
            and not rd.model_dir.exists() else None
        if base_dir is not None and rd.has_adapter:
            # layer by layer into shards: neither the full-precision base nor the merged model is held
            from tunelab.export.merge_stream import stream_merge_qlora

            streamed, params, dequantized, merged = stream_merge_qlora(
                base_dir, rd.adapter_dir, tmp, EXPORT_DTYPES[dtype], quant_type, m.double_quant)
            tok = _run_tokenizer(rd)
            model = streamed.base_model.model
        elif rd.model_dir.exists():  # full / freeze: already one model
            from transformers import AutoModelForCausalLM, AutoTokenizer

            model = AutoModelForCausalLM.from_pretrained(str(rd.model_dir), dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(str(rd.model_dir))
        else:
            if not rd.has_adapter:
                raise TunelabError(f"run {rd.path} has neither adapter/ nor model/", where="RUN")
            # the base as trained (4-bit for qlora), on the CPU, in fp32 for the merge arithmetic
            model, tok = load_run_base(cfg, device="cpu", dtype="fp32", where="RUN: config.yaml model.name")
            if rd.tokenizer_dir.exists():
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(str(rd.tokenizer_dir))
            if decode_base:  # decode the exact 4-bit base of training: W0' = dequant(quant(W0))
                dequantized = dequantize_linears(model, torch.float32)
            peft_model = attach_adapter(model, rd.adapter_dir)
            merged = sum(1 for mod in peft_model.modules() if hasattr(mod, "lora_A") and mod.lora_A)
            model = peft_model.merge_and_unload()  # W0 + (alpha/r) B A, in fp32
        _drop_quantization_config(model)
        if streamed is not None:  # the weights are written: the config (and generation config) only
            model.config.dtype = EXPORT_DTYPES[dtype]
            model.config.save_pretrained(str(tmp))
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(str(tmp))
        else:
            _cast(model, EXPORT_DTYPES[dtype])
            model.config.dtype = EXPORT_DTYPES[dtype]
            for p in model.parameters():
                p.requires_grad_(False)
            model.save_pretrained(str(tmp), safe_serialization=True)
            params = sum(p.numel() for p in model.parameters())
        template_path = rd.template_path
        save_tokenizer_with_template(tok, tmp, template_path)
        if template_path.exists():
            shutil.copy(template_path, tmp / "tunelab_template.json")
        info = {"run": str(rd.path.resolve()), "method": method, "dtype": dtype, "params": params,
                "dequantized_layers": dequantized, "merged_layers": merged}
        (tmp / "tunelab_merge.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return MergeResult(out, method, dtype, params, dequantized, merged)
