"""The quickstart's persona on the real model: how many held-out replies end with the signature, base vs tuned.

    python benchmarks/quickstart_persona.py [--precision auto|fp32|bf16] [--emulate-bf16] [key=value ...]

Trains examples/configs/quickstart.yaml (overrides as for `tunelab train`) into a temporary folder and
prints one JSON object: signature rate of the base (the baseline, same run) and of the tuned model on
the 20 held-out comments, validation loss before/after, steps and seconds.

--emulate-bf16 (with --precision bf16) is for CPUs without native bf16 (AVX2), where oneDNN's bf16
GEMM is ~19x slower: each bf16 GEMM (mm, addmm, bmm, baddbmm, linear, matmul) runs as an fp32 GEMM of
the bf16 inputs and is rounded to bf16, which is what a native bf16 GEMM with fp32 accumulation
returns up to summation order; every other op runs in real bf16 autocast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
aten = torch.ops.aten
GEMMS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default, aten.linear.default,
         aten.matmul.default, aten.addmm_.default}


def _up(x):
    return x.float() if isinstance(x, torch.Tensor) and x.dtype == torch.bfloat16 else x


class EmulatedBf16Gemm(TorchDispatchMode):
    """bf16 GEMMs as fp32 GEMMs of the bf16 inputs, rounded to bf16 (in-place addmm_ written back)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in GEMMS and any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            up_args, up_kwargs = [_up(a) for a in args], {k: _up(v) for k, v in kwargs.items()}
            if func is aten.addmm_.default:
                return args[0].copy_(aten.addmm.default(*up_args, **up_kwargs))
            return func(*up_args, **up_kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--emulate-bf16", action="store_true")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.emulate_bf16 and args.precision != "bf16":
        sys.exit("--emulate-bf16 needs --precision bf16")
    from tunelab.config import load_config
    from tunelab.runs.report import suffix_rate
    from tunelab.train.recipes.sft import run_sft

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "examples/configs/quickstart.yaml",
                          [f"output.dir={tmp}", f"train.precision={args.precision}", *args.overrides])
        t0 = time.perf_counter()
        with EmulatedBf16Gemm() if args.emulate_bf16 else contextlib.nullcontext():
            out = run_sft(cfg, quiet=True)
        suffix = cfg.eval.expect_suffix
        print(json.dumps({
            "precision": args.precision, "emulated_bf16_gemm": args.emulate_bf16, "overrides": args.overrides,
            "base_signature_rate": suffix_rate([s["base"] for s in out.samples], suffix),
            "tuned_signature_rate": suffix_rate([s["tuned"] for s in out.samples], suffix),
            "prompts": len(out.samples), "val_loss_before": round(out.val_before, 4),
            "val_loss_after": round(out.val_after, 4), "steps": out.result.steps,
            "train_seconds": round(out.result.train_seconds, 1), "total_seconds": round(time.perf_counter() - t0, 1),
            "unsigned_tuned": [s["tuned"] for s in out.samples if not s["tuned"].rstrip().endswith(suffix)],
        }, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
