"""Quantize while loading: a causal LM built on the meta device, filled one checkpoint tensor at a time.

    skeleton     AutoModelForCausalLM.from_config on the meta device (no weight memory); buffers
                 computed at init (RoPE's inv_freq) are made on the CPU as usual
    per tensor   a memory-mapped view of its bytes (`models.shards.ShardReader`), then
                   Linear weight (not skipped)  -> QuantLinear: NF4 codes + absmax, quantized in chunks
                                                   of whole 64-blocks, double quantization over the
                                                   whole absmax vector (bit-identical to quantize_4bit)
                   anything else                -> a copy in `dtype` (embeddings, norms, the skipped head)
                 and the view's pages are dropped from the resident set before the next one
    after        tied weights tied (lm_head = embed_tokens), nothing may be left on the meta device

The full-precision model is never held. Peak resident memory during the load:

    peak <= (the resulting model's bytes) + (the largest tensor's mapped bytes)
            + (one chunk's quantization temporaries: ~17 bytes x chunk_weights = 1.1 MB at 65,536 weights)

and the result equals `quantize_model(load_causal_lm(...))` bit for bit: NF4 blocks are independent,
and the fp32 upcast of a bf16 checkpoint is exact, so quantizing the bf16 view (`quantize_4bit` casts
to fp32 first) gives the same codes (tests/quant/test_stream_load.py; measured peaks: docs/memory.md).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.models.shards import ShardReader, checkpoint_files
from tunelab.quant import codecs
from tunelab.quant.codecs import FORMATS_4BIT, Packed4bit
from tunelab.quant.int8_rows import Int8Embedding, Int8Head, quantize_rows
from tunelab.quant.nn import QuantLinear, is_skipped
from tunelab.runtime.allocator import _libc

CHUNK_WEIGHTS = 1 << 16  # weights quantized at a time: 65,536 x ~17 bytes of temporaries ~ 1.1 MB


def quantize_4bit_chunked(w: torch.Tensor, fmt: str = "nf4", blocksize: int = 64, double_quant: bool = True,
                          chunk_weights: int = CHUNK_WEIGHTS, workers: int = 1) -> Packed4bit:
    """`codecs.quantize_4bit(w, ...)`, bit for bit, with temporaries for `chunk_weights` values at a time
    (per worker: `workers` threads quantize chunks side by side, each op single-threaded, see `parallel_chunks`).

    Chunks hold whole blocks (a multiple of `blocksize`, which is even), so each chunk's packed bytes and
    absmax constants are the whole tensor's slice; the double quantization runs once on the concatenated
    absmax (its offset is the mean over all blocks, as in quantize_4bit).
    """
    flat = w.detach().reshape(-1)
    n = flat.numel()
    step = max(blocksize, chunk_weights - chunk_weights % blocksize)
    if n <= step:
        return codecs.quantize_4bit(w, fmt, blocksize, double_quant)
    nblocks = -(-n // blocksize)
    out = Packed4bit(torch.empty((n + 1) // 2, dtype=torch.uint8), torch.empty(nblocks), tuple(w.shape), fmt, blocksize)

    def one(s: int) -> None:  # chunk s fills bytes s/2.. and blocks s/blocksize.. (step is a multiple of blocksize)
        p = codecs.quantize_4bit(flat[s:s + step], fmt, blocksize, False)
        out.packed[s // 2:s // 2 + p.packed.numel()] = p.packed
        out.absmax[s // blocksize:s // blocksize + p.absmax.numel()] = p.absmax

    starts = range(0, n, step)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, starts))
    else:
        for s in starts:
            one(s)
    if double_quant:
        offset = out.absmax.mean()
        out.absmax, out.absmax_scale = codecs.quantize_blockwise_8bit(out.absmax - offset, codecs.DQ_BLOCKSIZE)
        out.absmax_offset = offset
    return out


@contextmanager
def parallel_chunks():
    """Run torch ops single-threaded and yield the worker count (torch's thread count) for chunk threads.

    Small ops on many threads wait on each other at every op (OpenMP barriers): on the shared 2-core
    machine a 2,048 x 4,096 bf16 weight took 13.8 s in 64K-weight chunks with 2 torch threads and 0.87 s
    with 1 (`quantize_4bit` on the whole tensor: 1.36 s). So ops run on one thread each and chunks are
    quantized in parallel Python threads instead (torch releases the GIL inside an op).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def quant_linear_4bit(weight: torch.Tensor, bias: torch.Tensor | None, fmt: str, blocksize: int, double_quant: bool,
                      compute_dtype: torch.dtype | None = None, workers: int = 1) -> QuantLinear:
    """A QuantLinear holding `quantize_4bit_chunked(weight)` (its buffers are the codec's tensors, no copy)."""
    out_f, in_f = weight.shape
    with torch.device("meta"):  # no zero-filled buffers: every one is replaced below
        q = QuantLinear(in_f, out_f, bias is not None, fmt, blocksize, double_quant, compute_dtype)
    p = quantize_4bit_chunked(weight, fmt, blocksize, q.double_quant, workers=workers)
    q.packed, q.absmax = p.packed, p.absmax
    if p.double_quant:
        q.absmax_scale, q.absmax_offset = p.absmax_scale, p.absmax_offset.reshape(())
    if bias is not None:
        q.bias = nn.Parameter(bias, requires_grad=False)
    return q


MakeLinear = Callable[[str, torch.Tensor, "torch.Tensor | None"], nn.Module]


def default_maker(fmt: str = "nf4", blocksize: int = 64, double_quant: bool = True,
                  compute_dtype: torch.dtype | None = None, dtype: torch.dtype = torch.float32,
                  workers: int | None = None) -> MakeLinear:
    """make(name, weight view, bias in `dtype`) -> the layer that replaces the Linear: 4-bit formats through
    the chunked codec on `workers` threads (None: torch's thread count now), int8/ternary through
    `QuantLinear.from_weight` on a `dtype` copy of the weight."""
    workers = workers or torch.get_num_threads()

    def make(_name: str, w: torch.Tensor, b: torch.Tensor | None) -> nn.Module:
        if fmt in FORMATS_4BIT:
            return quant_linear_4bit(w, b, fmt, blocksize, double_quant, compute_dtype, workers)
        return QuantLinear.from_weight(w.to(dtype), b, fmt, blocksize, double_quant, compute_dtype)
    return make


def is_streamable(path: str | Path) -> bool:
    """A local folder with config.json and safetensors weights (single file or index + shards)."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and checkpoint_files(p) is not None


def skeleton(path: str | Path, dtype: torch.dtype) -> nn.Module:
    """The causal LM of `path`'s config.json with every parameter on the meta device (buffers on the CPU)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config = AutoConfig.from_pretrained(str(path))
    config._name_or_path = str(path)
    with init_empty_weights(include_buffers=False), no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def _set_param(module: nn.Module, attr: str, value: torch.Tensor, persistent_buffer: bool) -> None:
    if persistent_buffer:
        module._buffers[attr] = value
    else:
        module._parameters[attr] = nn.Parameter(value, requires_grad=value.is_floating_point())


def trim_heap() -> None:
    """Hand glibc's free heap pages back to the kernel (malloc_trim(0)): each chunk's quantization
    temporaries are freed between tensors that stay, and the holes they leave would otherwise stay
    resident (measured on the 82M test checkpoint: 133 MB of RssAnon for 64 MB of model, 66 MB with it)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _copy(view: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of its own (never a view of the map): floating ones in `dtype`."""
    if view.is_floating_point() and view.dtype != dtype:
        return view.to(dtype)
    return view.clone()


def stream_quantized(path: str | Path, make_linear: MakeLinear | None = None, *, dtype: torch.dtype = torch.float32,
                     skip: tuple[str, ...] = ("lm_head",), on_tensor: Callable[[str], None] | None = None,
                     bias_dtype: torch.dtype | None = None, int8_rows: bool = False) -> nn.Module:
    """Load the causal LM in `path` (config.json + safetensors) with every Linear not in `skip` replaced by
    `make_linear(name, weight_view, bias)` as its weight is read (default: NF4 + double quantization, the
    QLoRA base), every other tensor copied in `dtype`; returns the model in eval mode.

    `on_tensor(name)` is called after each checkpoint tensor is consumed (progress, memory probes).
    `bias_dtype`: the dtype of the replaced Linears' biases (None: `dtype`).
    `int8_rows`: the input embeddings and the (skipped or tied) output head become frozen int8 rows with
    an fp32 scale each (`quant.int8_rows`: V d + 4 V bytes instead of 4 V d), quantized from the view.

    Raises:
        TunelabError: the checkpoint lacks a tensor the model needs, or holds one it does not have.
    """
    make_linear = make_linear or default_maker(dtype=dtype)
    path = Path(path)
    model = skeleton(path, dtype)
    tie = bool(getattr(model.config, "tie_word_embeddings", False))
    out_emb = model.get_output_embeddings() if tie else None
    in_emb = model.get_input_embeddings() if int8_rows else None
    head = model.get_output_embeddings() if int8_rows else None
    with ShardReader(path) as reader, parallel_chunks():
        available = set(reader.names())
        _refuse_mismatch(model, available, tie, path)  # before anything is read
        used: set[str] = set()

        def read(name: str, what: torch.dtype | None) -> torch.Tensor:
            view = reader.tensor(name)
            t = _copy(view, what or view.dtype)
            del view
            reader.release(name)
            used.add(name)
            if on_tensor is not None:
                on_tensor(name)
            return t

        # int8 rows first, while the model is small: each needs its bf16 view mapped beside its codes
        for mname, mod in list(model.named_modules()) if int8_rows else []:
            if mod is in_emb or (mod is head and not tie):
                wname = mname + ".weight"
                view = reader.tensor(wname)
                layer = (Int8Embedding.from_weight(view, getattr(mod, "padding_idx", None), dtype) if mod is in_emb
                         else Int8Head.from_weight(view))
                del view
                reader.release(wname)
                used.add(wname)
                trim_heap()
                if on_tensor is not None:
                    on_tensor(wname)
                _replace(model, mname, layer)
        for mname, mod in list(model.named_modules()):
            prefix = mname + "." if mname else ""
            if type(mod) is nn.Linear and not is_skipped(mname, skip) and prefix + "weight" in available:
                bias = read(prefix + "bias", bias_dtype or dtype) if mod.bias is not None else None
                wname = prefix + "weight"
                view = reader.tensor(wname)
                layer = make_linear(mname, view, bias)
                del view
                reader.release(wname)
                used.add(wname)
                trim_heap()
                if on_tensor is not None:
                    on_tensor(wname)
                _replace(model, mname, layer)
                continue
            for attr, p in list(mod._parameters.items()):
                if p is None:
                    continue
                key = prefix + attr
                if key in available:
                    _set_param(mod, attr, read(key, dtype), False)
            for attr, b in list(mod._buffers.items()):
                key = prefix + attr
                if b is not None and attr not in mod._non_persistent_buffers_set and key in available:
                    _set_param(mod, attr, read(key, dtype if b.is_floating_point() else None), True)
    if int8_rows and tie:  # the head reads the int8 embeddings' buffers
        model.set_output_embeddings(Int8Head.tied(model.get_input_embeddings()))
    elif out_emb is not None and out_emb.weight.is_meta:  # tied head: the embeddings' tensor
        out_emb.weight = model.get_input_embeddings().weight
    unexpected = sorted(available - used - ({"lm_head.weight"} if tie else set()))
    missing = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if missing or unexpected:
        raise TunelabError(f"checkpoint does not match {type(model).__name__}: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}", where=str(path),
                           hint="a transformers safetensors checkpoint of this architecture is needed")
    model.config.dtype = dtype
    _load_generation_config(model, path)
    return model.eval()


def _replace(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)


class CheckpointMismatch(TunelabError):
    """The checkpoint's tensor names are not the model's state dict (e.g. legacy names transformers renames)."""


def _refuse_mismatch(model: nn.Module, available: set[str], tie: bool, path: Path) -> None:
    want = set(model.state_dict())
    if tie:
        want.discard("lm_head.weight")
    missing = sorted(want - available)
    unexpected = sorted(available - want - ({"lm_head.weight"} if tie else set()))
    if missing or unexpected:
        raise CheckpointMismatch(f"checkpoint does not match {type(model).__name__}: missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}", where=str(path),
                                 hint="a transformers safetensors checkpoint of this architecture is needed")


def _load_generation_config(model: nn.Module, path: Path) -> None:
    if (path / "generation_config.json").is_file():
        from transformers import GenerationConfig

        try:
            model.generation_config = GenerationConfig.from_pretrained(str(path))
        except (OSError, ValueError):
            pass


def load_quantized_causal_lm(name: str, *, dtype: str = "auto", quant_type: str = "nf4", double_quant: bool = True,
                             where: str = "model.name", int8_rows: bool = False):
    """(model, tokenizer, resolved) for the CPU QLoRA base of `name`, streamed; None when `name` does not
    resolve to a local safetensors folder (a hub id, a .bin checkpoint): the caller loads it whole.
    `int8_rows`: embeddings and head as frozen int8 rows (`stream_quantized`)."""
    from tunelab.models.load import load_tokenizer, pick_dtype
    from tunelab.models.registry import resolve

    quant_type = "nf4" if quant_type == "auto" else quant_type
    rm = resolve(name, where=where)
    if quant_type not in FORMATS_4BIT or rm.source == "hub" or not is_streamable(rm.path):
        return None
    dt = pick_dtype(dtype, torch.device("cpu"))
    tok = load_tokenizer(rm)
    try:
        model = stream_quantized(rm.path, default_maker(quant_type, 64, double_quant, None, dt), dtype=dt,
                                 int8_rows=int8_rows)
    except CheckpointMismatch:  # names transformers' loader would rename: load it whole instead
        return None
    return model, tok, rm


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's tensors (parameters and buffers), each storage counted once (tied weights)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.device.type == "meta":
            continue
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def largest_tensor_bytes(path: str | Path) -> int:
    """The largest tensor of a safetensors checkpoint, in bytes as stored."""
    with ShardReader(path) as r:
        return max(r.nbytes(n) for n in r.names())


def warm_up(path: str | Path, dtype: torch.dtype = torch.float32) -> None:
    """Import what a load imports and run its kernels once on small tensors, so that a measurement of the
    load that follows counts tensors, not modules and the first-touched code pages of torch (~5 MB RssFile)."""
    skeleton(path, dtype)
    w = torch.randn(2, CHUNK_WEIGHTS + 64).to(torch.bfloat16)
    with parallel_chunks() as workers:
        quantize_4bit_chunked(w, workers=workers)
        w.to(dtype)
        Int8Head(*quantize_rows(w[:, :64]), chunk=1)(torch.randn(1, 64))  # the int8 rows' kernels
    trim_heap()
