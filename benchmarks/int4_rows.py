"""Where the int4 kernel stops paying: one product of M rows by each of SmolLM2-135M's matrix shapes,
on the exact 4-bit codes (infer/int4.py) against the same matrix dense in bf16 and in fp32, in one run.

    python benchmarks/int4_rows.py [--rows 1,2,4,8,12,16,32,64] [--threads 2] [--repeat 50]

Random codes and weights of the real shapes (the kernel's time does not depend on the values):
qkv 960x576, o 576x576, gate_up 3072x576, down 576x1536, and the head 49152x576 as two 4-bit parts
(an 8-bit grid, as the Q8_0 head is). Per rows M: microseconds per product, the median of `--repeat`
timed calls after 5 warm-up calls, summed over one block's four matrices (`block_us`) and for the
head (`head_us`). `crossover_rows` = the smallest M where bf16 dense is faster than the codes, for
the block and for the head (two parts); infer/int4.py's DENSE_ROWS (rows x parts) sits just under it. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

SHAPES = {"qkv": (960, 576), "o": (576, 576), "gate_up": (3072, 576), "down": (576, 1536)}
HEAD = (49152, 576)


def _time(fn, repeat: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def _matrix(out: int, n: int, parts: int):
    from tunelab.infer.int4 import GROUP, Int4Weight, _part

    g = torch.Generator().manual_seed(out + n)
    packed = []
    for _ in range(parts):
        codes = torch.randint(0, 16, (out, n), generator=g, dtype=torch.int32)
        s = torch.rand(out, n // GROUP, generator=g) * 0.01 + 1e-3
        packed.append(_part(codes, s, -8 * s))
    w = torch.randn(out, n, generator=g) * 0.02
    return Int4Weight(packed, out), w.bfloat16(), w.t().contiguous()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1,2,4,8,12,16,32,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=50)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = [int(r) for r in a.rows.split(",")]
    mats = {name: _matrix(o, n, 1) for name, (o, n) in SHAPES.items()}
    head = _matrix(*HEAD, 2)
    out = {"threads": a.threads, "repeat": a.repeat, "rows": {}}
    with torch.inference_mode():
        for m in rows:
            row = {}
            for kind in ("int4", "bf16", "fp32"):
                def one(mat, kind=kind):
                    codes, wb, wt = mat
                    x = torch.randn(m, wt.shape[0])
                    if kind == "int4":
                        xb = x.bfloat16()
                        return lambda: codes.matmul(xb)
                    if kind == "bf16":
                        xb = x.bfloat16()
                        return lambda: torch.nn.functional.linear(xb, wb)
                    return lambda: x @ wt
                row[f"block_us_{kind}"] = round(sum(_time(one(mat), a.repeat) for mat in mats.values()), 1)
                row[f"head_us_{kind}"] = round(_time(one(head), max(5, a.repeat // 10)), 1)
            out["rows"][m] = row
    for part in ("block", "head"):
        faster = [m for m in rows if out["rows"][m][f"{part}_us_bf16"] < out["rows"][m][f"{part}_us_int4"]]
        out[f"crossover_rows_{part}"] = min(faster) if faster else None
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
