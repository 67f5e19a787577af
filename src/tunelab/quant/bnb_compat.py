"""Living with bitsandbytes: import it only where its backend is used, and decode around one CPU bug.

This module imports nothing heavy at import time (no torch, no bitsandbytes), so it can be
installed early.

1. Deferred import (`defer_bitsandbytes_import`). When bitsandbytes is installed, peft imports it
   although a plain LoRA run never touches it: `peft/helpers.py` at `import peft`
   (`try: import bitsandbytes`), and LoRA's layer dispatch in every `get_peft_model`
   (`if is_bnb_available(): from .bnb import ...`). That costs an import per run (measured in
   docs/quantization.md, "bitsandbytes compatibility") and, on CPUs with AVX-512-BF16, bitsandbytes 0.50 logs at import (bitsandbytes/backends/cpu/ops.py, when the
   optional `kernels` package cannot fetch its fused CPU kernel):

       Failed to load CPU gemm_4bit_forward from kernels-community: ... Please make sure you
       already `pip install kernels` and the kernels >= 0.11.1

   peft has no switch for either import, so a one-shot import hook (installed before peft is
   imported) does two things:
     - the module-level `import bitsandbytes` of peft/helpers.py fails with ImportError (only that
       statement: every other import and `find_spec` of bitsandbytes resolves as usual), so peft keeps
       `helpers.bnb = None`, which only `find_kappa_target_modules` reads (tunelab does not call it);
     - once `peft` is imported, its `is_bnb_available` / `is_bnb_4bit_available` answer True only
       while bitsandbytes is imported. No dispatch changes: peft's bitsandbytes LoRA layers wrap only
       `bnb.nn.Linear4bit` / `Linear8bitLt` modules, which exist only after someone imported
       bitsandbytes to build them (transformers' 4-bit loading does, for our bitsandbytes backend).

2. CPU decode routing (`route_unaligned_cpu_dequantize`). bitsandbytes 0.49/0.50 decodes a 4-bit
   weight on CPU with an AVX-512 kernel (csrc/cpu_ops.cpp, `dequantizeBlockwise4bitCpu`) that
   indexes the absmax of row r, column c as `absmax[r * (n // blocksize) + c // blocksize]`. That is
   right only when every row of [m, n] holds whole blocks (n % blocksize == 0, or m == 1); e.g. for
   [15, 96] and blocksize 64 every element from flat index 128 on is scaled by the wrong block
   (row 1 reuses block 1 for its columns 32..63, which belong to block 2). The scalar path (AVX2
   CPUs) and the ARM path (guarded by n % blocksize == 0) are right; see docs/quantization.md for
   the reproduction. Our bitsandbytes backend on CPU reaches that kernel through
   `bitsandbytes.functional.dequantize_4bit` (backward, peft merges) and `torch.ops.bitsandbytes.
   gemm_4bit` (forward, bnb >= 0.50). For weights whose rows are not whole blocks both are routed
   through tunelab's NF4/FP4 codec (`tunelab.quant.codecs`), which reads bitsandbytes' bytes and
   constants exactly (same packed layout, same code books, same double quantization); every other
   call goes to bitsandbytes unchanged.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys

_BNB = "bitsandbytes"
_PEFT_CHECKS = ("is_bnb_available", "is_bnb_4bit_available")


# ---- 1. deferred import ----------------------------------------------------------------------------------------
def bitsandbytes_loaded() -> bool:
    """True once bitsandbytes has been imported in this process (a None entry, which blocks it, is not)."""
    return sys.modules.get(_BNB) is not None


def _only_when_loaded(check):
    """peft's availability check, answering False while bitsandbytes is not imported."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        return bitsandbytes_loaded() and check(*args, **kwargs)

    wrapper.cache_clear = getattr(check, "cache_clear", lambda: None)
    wrapper._tunelab_deferred = True
    return wrapper


def _patch_peft_checks() -> int:
    """Wrap peft's bitsandbytes checks in every loaded peft module (modules imported later copy the
    wrapped function from peft.import_utils); returns how many names were wrapped."""
    n = 0
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name == "peft" or name.startswith("peft.")):
            continue
        for attr in _PEFT_CHECKS:
            f = getattr(mod, "__dict__", {}).get(attr)
            if callable(f) and not getattr(f, "_tunelab_deferred", False):
                setattr(mod, attr, _only_when_loaded(f))
                n += 1
    return n


def _imported_by_peft_helpers_body() -> bool:
    """True when the import being resolved is a statement at module level of peft/helpers.py (its
    `try: import bitsandbytes`): the first caller frame outside importlib's own."""
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename.startswith("<frozen importlib"):
        f = f.f_back
    return f is not None and f.f_code.co_name == "<module>" and f.f_globals.get("__name__") == "peft.helpers"


class _PeftImportHook(importlib.abc.MetaPathFinder):
    """Fails peft.helpers' module-level `import bitsandbytes` (it falls back to `bnb = None`), and wraps
    peft's execution to wrap its availability checks once it is imported. Every other import, and
    every `find_spec`, resolves as without the hook."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == _BNB:
            if _imported_by_peft_helpers_body():
                raise ModuleNotFoundError("bitsandbytes is imported where it is used (tunelab.quant.bnb_compat)",
                                          name=_BNB)
            return None
        if fullname != "peft":
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        loader = getattr(spec, "loader", None)
        # a file loader serves one module; wrapping another kind (zipimporter ...) could touch others.
        # (find_spec alone, e.g. transformers' is_peft_available, executes nothing: the spec is dropped)
        if not isinstance(loader, (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader)):
            return spec
        run = loader.exec_module

        def exec_module(module):
            try:
                run(module)
            finally:
                _remove_hook()
                _patch_peft_checks()

        loader.exec_module = exec_module
        return spec


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PeftImportHook)]


def defer_bitsandbytes_import() -> bool:
    """Keep peft from importing bitsandbytes until a bitsandbytes layer exists (see the module
    docstring). Call before peft is imported; idempotent. Returns True when the hook is in place
    or peft's checks were wrapped, False when peft had already imported bitsandbytes."""
    if "peft" in sys.modules:
        if bitsandbytes_loaded():
            return False
        _patch_peft_checks()  # peft without the import-time import: the dispatch checks still matter
        return True
    if not any(isinstance(f, _PeftImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _PeftImportHook())
    return True


# ---- 2. CPU decode routing -------------------------------------------------------------------------------------
def rows_of_whole_blocks(shape, blocksize: int) -> bool:
    """True when each row (last dimension) of `shape` is a whole number of `blocksize` blocks:
    the shapes bitsandbytes' AVX-512 CPU decoder gets right (every flat block is then a row block)."""
    shape = tuple(int(s) for s in shape)
    return len(shape) > 0 and shape[-1] % int(blocksize) == 0


def _as_bytes(A):
    import torch

    flat = A.reshape(-1)
    return flat if flat.dtype == torch.uint8 else flat.contiguous().view(torch.uint8)


def packed_from_parts(B, shape, absmax, blocksize: int, quant_type: str, absmax_8bit=None, absmax_code=None,
                      absmax_offset=None, absmax_blocksize: int = 256):
    """A tunelab `Packed4bit` holding bitsandbytes' packed weight and constants as they are (no
    copy of the codes); None when the layout is not one tunelab's codec reads (then let bitsandbytes
    decode). Nested (double-quantized) constants: `absmax_8bit` codes of `absmax_code` in blocks of
    `absmax_blocksize`, scaled by `absmax` and shifted by `absmax_offset`."""
    import torch

    from tunelab.quant import codecs

    if quant_type not in ("nf4", "fp4"):
        return None
    shape = tuple(int(s) for s in shape)
    packed = _as_bytes(B)
    if absmax_8bit is None:
        return codecs.Packed4bit(packed, absmax.float(), shape, quant_type, int(blocksize))
    if absmax_blocksize != codecs.DQ_BLOCKSIZE or absmax_code is None or not torch.equal(
            absmax_code.detach().to("cpu", torch.float32), codecs.dynamic_map()):
        return None
    return codecs.Packed4bit(packed, absmax_8bit, shape, quant_type, int(blocksize), absmax.float(),
                             torch.as_tensor(absmax_offset, dtype=torch.float32))


def packed_from_quant_state(A, quant_state):
    """`packed_from_parts` for a bitsandbytes QuantState (`Params4bit.quant_state`)."""
    qs = quant_state
    if qs.nested:
        return packed_from_parts(A, qs.shape, qs.state2.absmax, qs.blocksize, qs.quant_type, qs.absmax,
                                 qs.state2.code, qs.offset, qs.state2.blocksize)
    return packed_from_parts(A, qs.shape, qs.absmax, qs.blocksize, qs.quant_type)


_ROUTED: dict = {}  # what route_unaligned_cpu_dequantize installed (kept alive: the torch Library)


def route_unaligned_cpu_dequantize() -> bool:
    """Decode bitsandbytes 4-bit weights whose rows are not whole blocks with tunelab's codec on CPU
    (module docstring, part 2). Idempotent; process-wide once called (our bitsandbytes backend calls
    it). Returns False when bitsandbytes is not installed."""
    if _ROUTED:
        return True
    try:
        import bitsandbytes.functional as F
    except ImportError:
        return False
    import torch

    from tunelab.quant import codecs

    original = F.dequantize_4bit
    if not getattr(original, "_tunelab_routed", False):
        @functools.wraps(original)
        def dequantize_4bit(A, quant_state=None, absmax=None, out=None, blocksize=None, quant_type="fp4"):
            if (A.device.type == "cpu" and quant_state is not None and out is None
                    and not rows_of_whole_blocks(quant_state.shape, quant_state.blocksize)):
                p = packed_from_quant_state(A, quant_state)
                if p is not None:
                    w = codecs.dequantize_4bit(p, quant_state.dtype)
                    return w.t() if A.shape[0] == 1 else w  # bitsandbytes' shim for a transposed [1, n/2] A
            return original(A, quant_state, absmax, out, blocksize, quant_type)

        dequantize_4bit._tunelab_routed = True
        F.dequantize_4bit = dequantize_4bit
    _ROUTED["dequantize_4bit"] = F.dequantize_4bit

    # bitsandbytes >= 0.50 runs Linear4bit's forward through the gemm_4bit op, whose only kernel is the
    # device-independent default (dequantize_4bit op + F.linear): add a CPU kernel in front of it.
    default_impl = None
    try:
        torch.ops.bitsandbytes.gemm_4bit  # noqa: B018 (raises AttributeError when the op does not exist)
        from bitsandbytes.backends.default.ops import _gemm_4bit_default_impl as default_impl
    except (AttributeError, ImportError):
        pass
    if default_impl is not None and not torch._C._dispatch_has_kernel_for_dispatch_key("bitsandbytes::gemm_4bit",
                                                                                        "CPU"):
        def gemm_4bit_cpu(A, B, shapeB, absmax, blocksize, quant_type, bias=None, absmax_8bit=None,
                          absmax_code=None, absmax_offset=None):
            if not rows_of_whole_blocks(shapeB, blocksize):
                p = packed_from_parts(B, shapeB, absmax, blocksize, quant_type, absmax_8bit, absmax_code,
                                      absmax_offset)
                if p is not None:
                    return torch.nn.functional.linear(A, codecs.dequantize_4bit(p, A.dtype), bias)
            return default_impl(A, B, shapeB, absmax, blocksize, quant_type, bias=bias, absmax_8bit=absmax_8bit,
                                absmax_code=absmax_code, absmax_offset=absmax_offset)

        lib = torch.library.Library("bitsandbytes", "IMPL")
        lib.impl("gemm_4bit", gemm_4bit_cpu, "CPU")
        _ROUTED["gemm_4bit"] = (lib, gemm_4bit_cpu)
    return True
