"""Load a resolved model and its tokenizer on the chosen device and dtype.

`load_causal_lm(name)` is the one way every command opens a chat/causal model. Quantized bases
(QLoRA) are built by `tunelab.adapters.qlora` on top of what this returns.
"""

from __future__ import annotations

import os

import torch

from tunelab.errors import TunelabError
from tunelab.models.registry import ResolvedModel, resolve

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def pick_device(pref: str = "auto") -> torch.device:
    """auto -> cuda if available, else mps, else cpu. Under a launcher (torchrun, accelerate launch,
    `tunelab train --nproc`) each process takes its own GPU: "auto" and a bare "cuda" mean
    cuda:LOCAL_RANK (e.g. 4 processes on one machine: cuda:0 .. cuda:3); "cuda:1" stays cuda:1."""
    local = os.environ.get("LOCAL_RANK")
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(local)) if local is not None else torch.device("cuda")
    if pref != "auto":
        return torch.device(pref)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(pref: str, device: torch.device) -> torch.dtype:
    """Weights dtype. auto -> bf16 on CUDA with bf16 support, fp16 on MPS, fp32 on CPU
    (CPU training keeps fp32 master weights and uses bf16 autocast for the matmuls)."""
    if pref != "auto":
        if pref not in DTYPES:
            raise TunelabError(f"unknown dtype '{pref}'", where="model.dtype", hint=f"one of: auto, {', '.join(DTYPES)}")
        return DTYPES[pref]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def _hub_error(rm: ResolvedModel, err: Exception, where: str = "model.name") -> TunelabError:
    return TunelabError(
        f"could not load '{rm.name}' from the Hugging Face Hub ({type(err).__name__})",
        where=where,
        hint="no network or hub access here: use an alias (`tunelab models`), a local model folder or a .gguf file",
    )


def load_with_tokenizer(auto_class, name: str, *, where: str, what: str, hint: str, dtype=None):
    """(tokenizer, model) of the alias, folder or hub id `name` through transformers' `auto_class` (an
    encoder, a reranker, a SetFit body: models the causal-LM loader does not take). A hub id that
    cannot be fetched, or a model that cannot load, is one TunelabError at `where`."""
    from transformers import AutoTokenizer

    rm = resolve(name, where=where)
    try:
        kw = {} if dtype is None else {"dtype": dtype}
        return AutoTokenizer.from_pretrained(str(rm.path)), auto_class.from_pretrained(str(rm.path), **kw)
    except (OSError, ValueError) as e:
        if rm.source == "hub":
            raise _hub_error(rm, e, where) from e
        raise TunelabError(f"cannot load {name!r} as {what} ({e})", where=where, hint=hint) from e


def load_tokenizer(rm: ResolvedModel):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(rm.path)
    except OSError as e:
        if rm.source == "hub":
            raise _hub_error(rm, e) from e
        raise TunelabError(f"cannot load tokenizer from {rm.path}: {e}", where="model.name") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name: str, *, dtype: str = "auto", device: str = "auto", where: str = "model.name"):
    """Return (model, tokenizer, resolved) for an alias, folder, .gguf or hub id."""
    from transformers import AutoModelForCausalLM

    rm = resolve(name, where=where)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    tok = load_tokenizer(rm)
    try:
        model = AutoModelForCausalLM.from_pretrained(rm.path, dtype=dt)
    except OSError as e:
        if rm.source == "hub":
            raise _hub_error(rm, e) from e
        raise TunelabError(f"cannot load model from {rm.path}: {e}", where=where) from e
    model.to(dev)
    return model, tok, rm
