"""One QLoRA optimizer step of a 7B-class (or 1B) Llama on the CPU, from a streamed NF4 load.

    python benchmarks/big_model.py --params 7b [--dir /tmp/big] [--keep]

1. a synthetic bf16 checkpoint (`tunelab.models.synthetic`, random init, written in a subprocess so its
   memory is not this process's), unless one is there already;
2. the streamed quantized load (`tunelab.quant.stream_load`): every block Linear to NF4 + double quant
   as it is read, embeddings and head as frozen int8 rows (`--embed-quant int8`, the default here;
   `none`: fp32), norms in fp32 (this CPU's compute dtype);
3. LoRA r=16 on all 7 projections of every block, gradient checkpointing, one step of batch 1 x 256
   tokens (every position a target) and AdamW, as tunelab's trainer runs it (glibc tunables of
   `tunelab train`, `keep_freed_memory`).

Prints one JSON object: params, disk_gb, load_seconds, load_peak_gb (VmHWM during the load, above the
RSS before it) against load_bound_gb = 1.15 x model bytes + the largest tensor, peak_rss_gb (the
process's VmHWM, everything included), estimate_gb (`tunelab memory` for this config) and their ratio,
seconds_per_step, tokens_per_s, the matmul floor (6 x params x tokens FLOP at the GFLOP/s measured
here on a [256, h] x [h, I] fp32 matmul) and the fraction of it reached, and the seconds spent
decoding NF4 in the step. The checkpoint is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tunelab.runtime.allocator import reexec_with_training_tunables

reexec_with_training_tunables()  # the same malloc tunables `tunelab train` runs with

import torch

from tunelab.runtime.allocator import keep_freed_memory, reset_peak_rss, status_mb

GB = 1e9


def write_checkpoint(folder: Path, preset: str) -> float:
    """Write the synthetic checkpoint in a child process; seconds (0 when it was there)."""
    if (folder / "DONE").exists():
        return 0.0
    t = time.perf_counter()
    code = (f"from tunelab.models.synthetic import write_synthetic_llama; "
            f"write_synthetic_llama({str(folder)!r}, {preset!r}, max_shard_bytes=2 * 1024**3)")
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t


def matmul_gflops(h: int, i: int, tokens: int, reps: int = 5) -> float:
    """fp32 GFLOP/s of x [tokens, h] @ W [i, h]^T (2 tokens h i FLOP), best of `reps`."""
    x, w = torch.randn(tokens, h), torch.randn(i, h)
    torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - t)
    return 2 * tokens * h * i / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", choices=("7b", "1b", "100m"), default="1b")
    ap.add_argument("--dir", default="/tmp/big")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint folder")
    ap.add_argument("--embed-quant", choices=("int8", "none"), default="int8",
                    help="embeddings and head as frozen int8 rows (quant.int8_rows) or in fp32")
    args = ap.parse_args()

    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import freeze_quantized_base
    from tunelab.config import MethodConfig
    from tunelab.losses import reply_loss_sum
    from tunelab.models.synthetic import llama_config, param_count
    from tunelab.quant import stream_load
    from tunelab.quant.nn import QuantLinear
    from tunelab.runtime.precision import autocast_dtype
    from tunelab.train.activation_ckpt import enable as enable_checkpointing

    folder = Path(args.dir) / args.params
    write_s = write_checkpoint(folder, args.params)
    cfg = llama_config(args.params)
    params = param_count(cfg)
    disk = sum(f.stat().st_size for f in folder.iterdir() if f.suffix == ".safetensors")
    gflops = matmul_gflops(cfg["hidden_size"], cfg["intermediate_size"], args.seq)

    stream_load.warm_up(folder)  # imports, the model class and kernels' code pages: outside the load's span
    rss0 = status_mb("VmRSS")
    reset_peak_rss()
    t = time.perf_counter()
    model = stream_load.stream_quantized(folder, int8_rows=args.embed_quant == "int8")
    load_s = time.perf_counter() - t
    load_peak = (status_mb("VmHWM") - rss0) * 2**20
    mbytes = stream_load.model_bytes(model)
    bound = 1.15 * mbytes + stream_load.largest_tensor_bytes(folder)

    amp = autocast_dtype("auto", torch.device("cpu"))
    freeze_quantized_base(model, compute_dtype=amp)
    method = MethodConfig(name="qlora", r=args.r, layers="all", target_modules="all-linear")
    model = apply_lora(model, method)
    enable_checkpointing(model)
    model.train()
    keep_freed_memory()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    decode_s = [0.0]
    original = QuantLinear._decode

    def timed_decode(self, dtype):
        t0 = time.perf_counter()
        try:
            return original(self, dtype)
        finally:
            decode_s[0] += time.perf_counter() - t0

    QuantLinear._decode = timed_decode
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg["vocab_size"], (1, args.seq), generator=gen)
    mask = torch.ones_like(ids)
    t = time.perf_counter()
    with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        loss_sum, n = reply_loss_sum(model, ids, mask, ids.clone())
    (loss_sum / n).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    step_s = time.perf_counter() - t
    QuantLinear._decode = original
    peak = status_mb("VmHWM") * 2**20  # since reset_peak_rss before the load: the process's RSS then + its growth

    # imported last: the estimate is computed after the step
    from tunelab.memory.estimator import estimate

    est = estimate(str(folder / "config.json"), "qlora", batch=1, seq=args.seq, grad_checkpointing=True, r=args.r,
                   device="cpu", autocast=amp is not None, layers="all", detect=False,
                   embed_quant=args.embed_quant)
    floor_s = 6 * params * args.seq / (gflops * 1e9)
    out = {
        "params": params, "preset": args.params, "embed_quant": args.embed_quant, "disk_gb": round(disk / GB, 3), "write_seconds": round(write_s, 1),
        "load_seconds": round(load_s, 1), "load_peak_gb": round(load_peak / GB, 3),
        "load_bound_gb": round(bound / GB, 3), "model_gb": round(mbytes / GB, 3),
        "peak_rss_gb": round(peak / GB, 3), "estimate_gb": round(getattr(est, "rss", est.total) / GB, 3),
        "estimate_ratio": round(getattr(est, "rss", est.total) / peak, 3), "estimate_tensors_gb": round(est.total / GB, 3), "rss_before_load_gb": round(rss0 * 2**20 / GB, 3),
        "loss": round(float(loss_sum.detach() / n), 4), "seconds_per_step": round(step_s, 1),
        "tokens_per_s": round(args.seq / step_s, 2), "matmul_gflops": round(gflops, 1),
        "matmul_floor_seconds": round(floor_s, 1), "floor_fraction": round(floor_s / step_s, 3),
        "nf4_decode_seconds": round(decode_s[0], 1), "threads": torch.get_num_threads(),
    }
    print(json.dumps(out))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
