"""One LoRA Linear, forward + backward: peft's five operations vs tunelab's folded `lora_linear`.

    python benchmarks/lora_linear.py [--rows 2400] [--r 16] [--repeat 6]

Shapes are SmolLM2-135M's projections (576 -> 576 / 192 / 1536, 1536 -> 576); x is a batch of 8
sequences (8 x rows/8 x d, as in training) and needs a gradient, as in every adapted block above the
first. glibc keeps freed buffers, as training does (runtime/allocator.py). Prints JSON: per shape the best-of-N milliseconds of both,
the speedup and the largest relative difference of the output and gradients (float32).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from tunelab.ops.lora_linear import lora_linear
from tunelab.runtime.allocator import keep_freed_memory

SHAPES = [(576, 1536), (1536, 576), (576, 576), (576, 192)]


def peft_like(x, w, bias, a, b, s):
    """peft's vanilla LoRA forward: base(x) + lora_B(lora_A(x)) * s."""
    return F.linear(x, w, bias) + F.linear(F.linear(x, a), b) * s


def run(f, x, w, a, b, dy, repeat: int):
    times, out = [], None
    for _ in range(repeat + 1):  # the first call warms up
        xi, ai, bi = x.detach().requires_grad_(), a.detach().requires_grad_(), b.detach().requires_grad_()
        t = time.perf_counter()
        y = f(xi, w, None, ai, bi, 2.0)
        y.backward(dy)
        times.append(time.perf_counter() - t)
        out = (y.detach(), xi.grad, ai.grad, bi.grad)
    return min(times[1:]), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2400, help="M = batch x sequence rows")
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=6)
    args = ap.parse_args()
    keep_freed_memory()
    torch.manual_seed(0)
    rows = []
    for d_in, d_out in SHAPES:
        w = torch.randn(d_out, d_in) * 0.02
        a, b = torch.randn(args.r, d_in) * 0.02, torch.randn(d_out, args.r) * 0.02
        x, dy = torch.randn(8, args.rows // 8, d_in), torch.randn(8, args.rows // 8, d_out)
        t_ref, ref = run(peft_like, x, w, a, b, dy, args.repeat)
        t_new, new = run(lora_linear, x, w, a, b, dy, args.repeat)
        diff = max(float((u - v).abs().max() / v.abs().max()) for u, v in zip(new, ref))
        rows.append({"shape": f"{d_in}->{d_out}", "peft_ms": round(t_ref * 1e3, 1), "tunelab_ms": round(t_new * 1e3, 1),
                     "speedup": round(t_ref / t_new, 2), "max_rel_diff": diff})
    total_ref = sum(r["peft_ms"] for r in rows)
    total_new = sum(r["tunelab_ms"] for r in rows)
    print(json.dumps({"rows": args.rows, "r": args.r, "threads": torch.get_num_threads(), "shapes": rows,
                      "sum_speedup": round(total_ref / total_new, 2)}, indent=2))


if __name__ == "__main__":
    main()
