"""Export a transformers model folder as one GGUF file (llama.cpp's format), in pure Python.

No llama.cpp checkout and no compiler: the `gguf` package's writer and its numpy quantizers. The
file has the keys and tensor layout llama.cpp's convert_hf_to_gguf.py writes for the model's family;
what differs per family (general.architecture, its own keys, q/k permutation, Gemma's norm shift,
generated tensors, what the file cannot express) is one `gguf_arches.GgufArch` each:

  metadata  general.{architecture, type=model, name, file_type, quantization_version}
            <arch>.{context_length, embedding_length, block_count, feed_forward_length,
                    attention.head_count, attention.head_count_kv, rope.freq_base,
                    attention.layer_norm_rms_epsilon, vocab_size, rope.dimension_count,
                    attention.key_length / value_length} + the family's own (gguf_arches.py)
            tokenizer.* (gguf_vocab.py: vocabulary, merges or scores, token types, special ids, chat template)
  tensors   (gguf_tensors.py) token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
            ffn_up, ffn_down, + per family attn_q_norm, attn_k_norm, post_attention_norm, post_ffw_norm,
            attn_qkv, ...}, output_norm, output (absent when the embeddings are tied);
            rope_freqs for Llama 3 style rope scaling, rope_factors_long/short for long-rope Phi-3

Llama's q/k rows are permuted per head (`gguf_tensors.permute_qk`) because ggml's llama rope rotates adjacent
pairs (x[2i], x[2i+1]) where transformers' rotate_half rotates (x[i], x[i + d/2]); transformers'
GGUF loader undoes the same permutation. The other families use the NeoX rope in llama.cpp: no permutation.

Type per tensor: llama-quantize's rules for each `--quant` (one `gguf_quants.GgufQuant` each; the table is
in that module): 1-D tensors, norms and biases F32; f32 / f16 / bf16 everything else in that type; q8_0
and q4_0 (the output matrix Q6_K, or Q8_0 when 256 does not divide its rows); q4_k_m / q5_k_m (Q4_K / Q5_K,
with Q6_K for the output matrix and for attn_v and ffn_down in the use_more_bits layers); tq1_0 / tq2_0 for
the ternary weights of a BitNet run. A row length the type's block does not divide takes llama.cpp's
fallback (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, TQ -> Q4_0, then F16), listed in GGUFInfo.notes (F16
ones in GGUFInfo.f16_fallback) and logged.

The tensors are streamed: infos first (shapes and byte sizes are known from the safetensors
headers), then each tensor is read, converted and written, so peak memory is about one tensor in
fp32. The file is written to a temporary sibling and renamed into place when complete.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.export.staging import staged_file
from tunelab.export.gguf_arches import GGUF_ARCHES, GgufArch, arch_of, common_hparams, rope_params  # noqa: F401
from tunelab.export.gguf_quants import GGUF_QUANT_TYPES, gguf_quant
from tunelab.export.gguf_tensors import (  # noqa: F401  (re-exported: lora_gguf, tests, benchmarks)
    choose_type,
    nbytes,
    permute_qk,
    plan,
    read_config,
    tensor_name_map,
    unpermute_qk,
    weight_files,
)
from tunelab.export.gguf_tensors import tensor_data as _tensor_data

log = logging.getLogger(__name__)

GGUF_QUANTS = tuple(GGUF_QUANT_TYPES)  # f32 f16 bf16 q8_0 q4_0 q4_k_m q5_k_m tq1_0 tq2_0


@dataclass
class GGUFInfo:
    """A written GGUF: its path, the quant asked for (lora: "f32"), tensor count, file size in bytes,
    general.architecture, the tensors kept in F16 instead of a block quant, and one-line notes on what
    the file could not express (gguf_arches.Fit)."""

    path: Path
    quant: str
    tensors: int
    bytes: int
    arch: str
    f16_fallback: tuple[str, ...] = ()  # tensors kept in F16: rows not a multiple of the 32-weight block
    notes: tuple[str, ...] = ()
    types: tuple[tuple[str, int], ...] = ()  # (tensor type, how many tensors), most frequent first


def write_gguf(model_dir: str | Path, out: str | Path, quant: str = "f16") -> GGUFInfo:
    """Write the transformers folder `model_dir` (config.json, safetensors weights, tokenizer.json,
    chat template: what `tunelab merge` writes) as one complete GGUF file at `out` (replacing it).

    Raises:
        TunelabError: unknown quant, unsupported architecture or tokenizer, missing files.
    """
    from contextlib import ExitStack

    import gguf
    import numpy as np
    from safetensors import safe_open

    from tunelab.export.gguf_vocab import add_tokenizer

    q = gguf_quant(quant)  # one line naming the choices for any other name
    model_dir, out = Path(model_dir), Path(out)
    if not model_dir.is_dir():
        raise TunelabError(f"{model_dir} is not a folder", where="GGUF export", hint="give a transformers model folder")
    if out.is_dir():
        raise TunelabError(f"{out} is a folder", where="--out", hint="give a file name ending in .gguf")
    cfg = read_config(model_dir)
    arch = arch_of(cfg)
    fit = arch.check(cfg)  # refusals first: before any file is touched
    files = weight_files(model_dir)
    items = plan(files, cfg, arch, quant)
    fallback = tuple(i.name for i in items if i.fallback and i.qtype == gguf.GGMLQuantizationType.F16)
    if fallback:
        log.warning("GGUF %s: %d tensors kept in F16 (rows not a multiple of 32): %s", quant, len(fallback),
                    ", ".join(fallback[:4]))
    notes = list(fit.notes) + fallback_notes(items)
    ftype = q.ftype

    writer = gguf.GGUFWriter(path=None, arch=arch.gguf)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(model_dir.resolve().name)
    common_hparams(writer, cfg, fit, int(ftype))
    writer.add_rope_dimension_count(arch.rope_dims(cfg))
    arch.hparams(writer, cfg)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_tokenizer(writer, model_dir, cfg["vocab_size"])
    for it in items:  # a float dtype means "logical shape" (not byte shape) to the writer
        writer.add_tensor_info(it.name, it.shape, np.dtype(np.float32), nbytes(it.shape, it.qtype),
                               raw_dtype=it.qtype)

    with staged_file(out, writer.close) as tmp, ExitStack() as stack:
        opened = {p: stack.enter_context(safe_open(str(p), framework="pt")) for p in dict.fromkeys(files.values())}
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for it in items:  # same order as the infos: the writer pairs them one by one
            writer.write_tensor_data(_tensor_data(opened[files[it.hf]] if it.hf else None, it))
    for note in notes:
        log.warning("GGUF: %s", note)
    counts = Counter(it.qtype.name for it in items)
    return GGUFInfo(out, quant, len(items), out.stat().st_size, arch.gguf, fallback, tuple(notes),
                    tuple(counts.most_common()))


def fallback_notes(items) -> list[str]:
    """One line per block type taken as llama.cpp's fallback (other than F16): how many tensors, which rows."""
    by_type: dict[str, list] = {}
    for it in items:
        if it.fallback and it.qtype.name != "F16":
            by_type.setdefault(it.qtype.name, []).append(it)
    return [f"{len(its)} tensors in {t} (llama.cpp's fallback: rows of "
            f"{', '.join(str(n) for n in sorted({i.shape[-1] for i in its}))} are not whole blocks of the rules' type)"
            for t, its in by_type.items()]
