"""Codec throughput: tunelab.quant vs bitsandbytes' CPU functions, in the same run; prints JSON.

    python benchmarks/quant_codecs.py [--rows 2048 --cols 2048 --repeat 5 --threads 2]

GB/s counts fp32 weight bytes (4 * n) per second: read by quantize, written by dequantize.
A second section times one LoRA training step (forward + backward, bf16 autocast) through a
576 -> 1536 layer (SmolLM2-135M's MLP shape, 4 x 256 tokens): frozen bf16 Linear vs QuantLinear
(nf4 + double quant), the ratio being the QLoRA overhead on this CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch import nn

from tunelab.quant import codecs, integer
from tunelab.quant.nn import QuantLinear


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def codec_rows(w: torch.Tensor, repeat: int) -> list[dict]:
    gb = w.numel() * 4 / 1e9
    rows = []

    def add(lib, codec, q_fn, dq_fn):
        q_s = best_of(q_fn, repeat)
        state = q_fn()
        dq_s = best_of(lambda: dq_fn(state), repeat)
        rows.append({"library": lib, "codec": codec, "quantize_gb_s": round(gb / q_s, 3),
                     "dequantize_gb_s": round(gb / dq_s, 3), "quantize_ms": round(q_s * 1e3, 2),
                     "dequantize_ms": round(dq_s * 1e3, 2)})

    for fmt in ("nf4", "fp4", "int4"):
        for dq in (False, True):
            add("tunelab", fmt + ("+dq" if dq else ""), lambda fmt=fmt, dq=dq: codecs.quantize_4bit(w, fmt, 64, dq),
                codecs.dequantize_4bit)
    add("tunelab", "int8 (per-row absmax)", lambda: integer.quantize_symmetric(w, 8, "channel"), integer.dequantize_int)
    add("tunelab", "uint8 asym (block 64)", lambda: integer.quantize_asymmetric(w, 8, "block", 64), integer.dequantize_int)
    add("tunelab", "ternary (2-bit)", lambda: integer.quantize_ternary(w), integer.dequantize_ternary)
    add("torch", "bf16 cast", lambda: w.to(torch.bfloat16), lambda t: t.float())
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data = w
    ql = QuantLinear.from_linear(lin, "nf4", double_quant=True)
    dq_s = best_of(lambda: ql._decode(torch.bfloat16), repeat)
    rows.append({"library": "tunelab", "codec": "QuantLinear nf4+dq forward decode -> bf16", "quantize_gb_s": None,
                 "dequantize_gb_s": round(gb / dq_s, 3), "quantize_ms": None, "dequantize_ms": round(dq_s * 1e3, 2)})
    try:
        import bitsandbytes.functional as F
    except ImportError:
        return rows
    for fmt in ("nf4", "fp4"):
        for dq in (False, True):
            add("bitsandbytes", fmt + ("+dq" if dq else ""),
                lambda fmt=fmt, dq=dq: F.quantize_4bit(w, blocksize=64, quant_type=fmt, compress_statistics=dq),
                lambda s: F.dequantize_4bit(*s))
    add("bitsandbytes", "8-bit dynamic blockwise (4096)", lambda: F.quantize_blockwise(w), lambda s: F.dequantize_blockwise(*s))
    return rows


def lora_step(base: nn.Module, x: torch.Tensor, rank: int = 16):
    """One LoRA forward + backward through `base` (frozen) under bf16 autocast."""
    a = nn.Linear(base.in_features, rank, bias=False)
    b = nn.Linear(rank, base.out_features, bias=False)
    nn.init.normal_(b.weight, std=0.01)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = base(x) + b(a(x)) * 2.0
        y.float().pow(2).mean().backward()
        a.weight.grad = b.weight.grad = None

    return step


def step_rows(repeat: int) -> dict:
    torch.manual_seed(0)
    lin = nn.Linear(576, 1536, bias=False)
    frozen = nn.Linear(576, 1536, bias=False).to(torch.bfloat16)
    frozen.weight.data = lin.weight.data.to(torch.bfloat16)
    frozen.weight.requires_grad_(False)
    q = QuantLinear.from_linear(lin, "nf4", double_quant=True)
    x = torch.randn(4, 256, 576, requires_grad=True)
    steps = {"bf16": lora_step(frozen, x), "nf4dq": lora_step(q, x)}
    times = {k: [] for k in steps}
    for fn in steps.values():
        fn()  # warm-up
    for _ in range(repeat):  # interleaved, so load from other processes hits both alike
        for k, fn in steps.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    t_bf16, t_q = min(times["bf16"]), min(times["nf4dq"])
    return {"shape": "x[4,256,576] -> 1536, LoRA r=16", "bf16_lora_ms": round(t_bf16 * 1e3, 2),
            "nf4dq_qlora_ms": round(t_q * 1e3, 2), "qlora_over_lora": round(t_q / t_bf16, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--cols", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    w = torch.randn(args.rows, args.cols) * 0.02
    out = {"tensor": [args.rows, args.cols], "threads": torch.get_num_threads(), "torch": torch.__version__,
           "machine": platform.machine(), "codecs": codec_rows(w, args.repeat), "lora_step": step_rows(args.repeat)}
    try:
        import bitsandbytes

        out["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        out["bitsandbytes"] = None
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
