"""Whether a Generator decodes on the tunelab engine or on transformers' `generate`.

The engine keeps its own copy of the weights (transposed, q/k/v and gate/up fused, a 4-bit base
decoded), so it is used when

    copy bytes = (parameters of the decoder and head) x (bytes per element of the engine dtype)
               <= half of the memory available now

and the model is one it computes exactly (infer/weights.py). `weights="auto"` picks

    int4   on a CPU with bf16 (avx512_bf16 or AMX), when every block matrix is on a 4- or 8-bit grid
           (a model converted from a Q4/Q8 GGUF: infer/int4.py keeps its exact codes) and no LoRA
           is on it: a LoRA would have to stay apart (merged, the base leaves its grid), and its
           two extra products per projection cost what the int4 base saves (docs/inference.md);
           with a bf16 copy of every matrix beside the codes for prompts and batches of more than
           int4.DENSE_ROWS rows x parts, when that copy (2 bytes a parameter) fits the same half of memory
    else   bf16 when the generator runs under bf16 autocast, else the dtype of the model's parameters

`weights` "fp32" (transformers' exact greedy tokens), "bf16", "int4" or "int8" (fbgemm, activations
quantized per tensor; never chosen automatically) ask for one. docs/inference.md measures what each
costs in tokens and perplexity.
"""

from __future__ import annotations

import torch

WEIGHTS = ("auto", "fp32", "bf16", "int4", "int8")
# the engine dtype each asked-for setting decodes in (int8 keeps fp32 activations, int4 bf16 ones)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32, "int4": torch.bfloat16}


def _copy_bytes(model, dtype: torch.dtype) -> int:
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    for b in model.buffers():  # a 4-bit base holds its weights as uint8 buffers: 2 weights a byte
        if b.dtype == torch.uint8:
            n += 2 * b.numel()
    return n * torch.empty((), dtype=dtype).element_size()


def engine_dtype(model, autocast_dtype: torch.dtype | None) -> torch.dtype:
    if autocast_dtype is not None:
        return autocast_dtype
    for p in model.parameters():
        if p.is_floating_point() and not p.requires_grad:
            return p.dtype
    return torch.float32


def int4_fits(device) -> bool:
    """int4 weights are worth trying here: a CPU whose bf16 is native, and torch's int4 kernel."""
    from tunelab.runtime import precision

    return torch.device(device).type == "cpu" and precision.cpu_int4_decode()


def _room_for(model, dtype: torch.dtype) -> bool:
    """A copy of `model`'s weights in `dtype` fits half of the memory available now (unknown: yes)."""
    from tunelab.memory.available import detect_memory

    device = next(model.parameters()).device
    _, _, avail = detect_memory("cuda" if device.type == "cuda" else "cpu")
    return avail is None or _copy_bytes(model, dtype) <= avail // 2


def _int4_engine(model, required: bool):
    """The engine on `model`'s exact int4 codes, a LoRA kept apart, and a bf16 copy for many rows where it
    fits (`_room_for`); None when a matrix is off the grid (Unsupported raised instead when `required`)."""
    from tunelab.infer.decode import DecodeEngine, Unsupported

    try:
        return DecodeEngine.from_model(model, dtype=torch.bfloat16, merge=False, weights="int4",
                                       dense_batches=_room_for(model, torch.bfloat16))
    except Unsupported:
        if required:
            raise
        return None


def build_engine(model, autocast_dtype: torch.dtype | None = None, required: bool = False,
                 weights: str = "auto"):
    """(DecodeEngine, "") or (None, the reason transformers' generate is used). With `required`, a model
    the engine cannot run raises TunelabError instead."""
    from tunelab.errors import TunelabError
    from tunelab.infer.decode import DecodeEngine, Unsupported

    device = next(model.parameters()).device
    if weights == "auto" and int4_fits(device) and not hasattr(model, "get_base_model"):
        eng = _int4_engine(model, required=False)
        if eng is not None:
            return eng, ""
    dtype = _DTYPES.get(weights) or engine_dtype(model, autocast_dtype)
    copy_dtype = torch.int8 if weights in ("int8", "int4") else dtype
    try:
        if not _room_for(model, copy_dtype):
            need = _copy_bytes(model, copy_dtype)
            raise Unsupported(f"its copy of the weights ({need / 2**30:.1f} GiB) is over half the free memory")
        if weights in ("int8", "int4") and device.type != "cpu":
            raise Unsupported(f"{weights} weights run on the CPU")
        if weights == "int4":  # asked for: a LoRA kept apart, the bf16 copy where it fits
            return _int4_engine(model, required=True), ""
        kind = "int8" if weights == "int8" else "dense"
        return DecodeEngine.from_model(model, dtype=dtype, weights=kind), ""
    except Unsupported as e:
        if required:
            raise TunelabError(f"the decode engine cannot run this model: {e}", where="engine",
                               hint="use engine='auto' or 'hf' (transformers' generate)") from None
        return None, str(e)


SERVE_WEIGHTS = ("auto", "fp32", "bf16", "int4")


def serving_engine(model, weights: str = "auto"):
    """The server's engine over a base (its adapters are attached apart, per row): `auto` is int4 where
    `int4_fits` and the base is on a grid, else the base's dtype; fp32, bf16 and int4 ask for one.
    Unsupported when the engine cannot run the base in that setting."""
    from tunelab.infer.decode import DecodeEngine

    if weights not in SERVE_WEIGHTS:
        raise ValueError(f"weights must be one of {SERVE_WEIGHTS}")
    if weights == "int4" or (weights == "auto" and int4_fits(next(model.parameters()).device)):
        eng = _int4_engine(model, required=weights == "int4")
        if eng is not None:
            return eng
    dtype = _DTYPES.get(weights) or next(model.parameters()).dtype
    return DecodeEngine.from_model(model, dtype=dtype, merge=True)
