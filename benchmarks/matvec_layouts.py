"""One decode step's matrix products without the model: SmolLM2-135M's 121 matrices
(30 x {qkv 576->960, o 576->576, gate_up 576->3072, down 1536->576} + the head 576->49152), random
fp32 weights, an M-row input, every matrix read once per pass (no reuse in cache).

    python benchmarks/matvec_layouts.py [--threads 2] [--rows 1,2,5,8]

Prints JSON: ms per pass for fp32 `F.linear(x, W)` (transformers' layout), fp32 `x @ W.T.contiguous()`
(the engine's fp32 layout), bf16 `F.linear`, and fbgemm's int8 dynamic-quantized linear; and the
bandwidth of a plain `W.sum()` over 113 MB as the memory ceiling.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch
import torch.nn.functional as F

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30 + [(49152, 576)]


def _pass_ms(fn, weights, rows: int, reps: int = 3) -> float:
    xs = {i: torch.randn(rows, i) for i in (576, 1536)}
    for w in weights[:5]:
        fn(xs, w)
    t0 = time.perf_counter()
    for _ in range(reps):
        for w in weights:
            fn(xs, w)
    return round((time.perf_counter() - t0) / reps * 1e3, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="1,2,5,8")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    ws = [torch.randn(o, i) * 0.02 for o, i in SHAPES]
    wt = [w.t().contiguous() for w in ws]
    wb = [w.bfloat16() for w in ws]
    packed = []
    for w in ws:
        q = torch.quantize_per_channel(w, (w.abs().amax(1) / 127).double(), torch.zeros(w.shape[0], dtype=torch.long),
                                       0, torch.qint8)
        packed.append((torch.ops.quantized.linear_prepack(q, None), w.shape[1]))
    big = ws[-1]
    t0 = time.perf_counter()
    for _ in range(20):
        big.sum()
    sum_gbs = big.numel() * 4 * 20 / (time.perf_counter() - t0) / 1e9
    res = {"threads": args.threads, "fp32_bytes_per_pass": sum(w.numel() for w in ws) * 4,
           "sum_gb_s": round(sum_gbs, 1), "ms_per_pass": {}}
    for m in [int(r) for r in args.rows.split(",")]:
        res["ms_per_pass"][m] = {
            "fp32_linear": _pass_ms(lambda xs, w: F.linear(xs[w.shape[1]], w), ws, m),
            "fp32_x_at_wt": _pass_ms(lambda xs, w: xs[w.shape[0]] @ w, wt, m),
            "bf16_linear": _pass_ms(lambda xs, w: F.linear(xs[w.shape[1]].bfloat16(), w), wb, m),
            "int8_dynamic": _pass_ms(lambda xs, p: torch.ops.quantized.linear_dynamic(xs[p[1]], p[0], True), packed, m),
        }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
