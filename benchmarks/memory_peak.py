"""Measured training peak vs `tunelab memory`'s estimate, per method, on the embedded model.

    python benchmarks/memory_peak.py [--methods full,lora,qlora] [--batch 4] [--seq 256] [--steps 2]
                                     [--precision auto|fp32|bf16]

Each method runs in fresh processes: load SmolLM2-135M-Instruct (fp32 on CPU), apply the method with
tunelab's defaults (lora/qlora: last 8 blocks, qlora: NF4+DQ and gradient checkpointing auto), train
`--steps` optimizer steps of `--batch` random sequences of `--seq` tokens (the last 40% of each
sequence is the reply, as `target_fraction` tells the estimate) through tunelab's own training loop.
Two measurements, each in its own process:

    tensors  = peak of live tensor bytes over the training loop, from torch.profiler's memory
               timeline (profile_memory=True): what the estimate computes
    rss      = the run's recorded peak RSS (TrainResult.peak_rss_mb: VmHWM, reset when training
               starts) - RSS before the model was loaded: tensors plus the allocator's free lists
               (glibc keeps freed buffers: train.keep_freed_memory) and the mapped model file
    estimate = tunelab.memory.estimator.estimate(..., autocast=...).total, for the precision the run used

`--precision` is `train.precision`: auto (bf16 autocast where the CPU has AVX-512-BF16, else plain
fp32), or fp32 / bf16 forced on any CPU (bf16 autocast runs on an AVX2 CPU too, ~19x slower per
matmul). QLoRA's 4-bit layers decode in the autocast dtype, as `tunelab train` sets them up.

Prints JSON: per method the estimate, both measurements in MiB, and estimate / measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

MODEL = "smollm2-135m-instruct"
REPLY = 0.4


def peak_tensor_mb(prof) -> float:
    """Highest sum of live CPU tensor bytes in a profile (all categories: parameters, gradients, ...)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    return max(sum(row) for row in sizes) / 2**20


def child(method: str, batch: int, seq: int, steps: int, what: str, precision: str = "auto") -> dict:
    import torch

    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import quantize_base
    from tunelab.config import from_dict
    from tunelab.data.tokenize import IGNORE, TokenizedExample
    from tunelab.models.load import load_causal_lm
    from tunelab.train.activation_ckpt import enable, wants_checkpointing
    from tunelab.runtime.precision import autocast_dtype
    from tunelab.train.engine import train_loop
    from tunelab.memory.estimator import estimate

    from tunelab.runtime.allocator import status_mb

    before = status_mb("VmRSS")  # the Python process with torch and tunelab imported
    cfg = from_dict({"model": {"name": MODEL}, "data": {"train": "x.jsonl", "max_length": seq},
                     "method": {"name": method},
                     "train": {"batch_size": batch, "max_steps": steps, "eval_every": "never", "warmup_ratio": 0,
                               "precision": precision}})
    amp = autocast_dtype(cfg.train.precision, torch.device("cpu"))  # what train_loop will use
    model, tok, rm = load_causal_lm(MODEL, dtype="fp32", device="cpu")
    if method == "qlora":  # as the sft recipe: the 4-bit layers compute in the autocast dtype
        quantize_base(model, cfg.method.quant_type, cfg.method.double_quant, compute_dtype=amp)
    if method in ("lora", "qlora"):
        model = apply_lora(model, cfg.method)
    ckpt = wants_checkpointing(cfg, model)
    if ckpt:
        enable(model)
    g = torch.Generator().manual_seed(0)
    n_prompt = int(seq * (1 - REPLY))
    examples = []
    for _ in range(batch * steps):
        ids = torch.randint(10, 40000, (seq,), generator=g).tolist()
        examples.append(TokenizedExample(ids, [IGNORE] * n_prompt + ids[n_prompt:]))
    out = {"gradient_checkpointing": ckpt, "precision": "bf16" if amp is not None else "fp32"}
    if what == "tensors":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            train_loop(model, examples, [], cfg.train, tok.pad_token_id, quiet=True)
        out["tensors_mb"] = round(peak_tensor_mb(prof))
    else:
        res = train_loop(model, examples, [], cfg.train, tok.pad_token_id, quiet=True)
        out["rss_mb"] = round(res.peak_rss_mb - before)
    e = estimate(str(rm.path), method, batch=batch, seq=seq, grad_checkpointing=ckpt, r=cfg.method.r,
                 device="cpu", detect=False, autocast=amp is not None, lora_dropout=cfg.method.dropout,
                 target_fraction=(seq - n_prompt) / seq, layers=cfg.method.layers, grad_accum=cfg.train.grad_accum)
    out["estimated_mb"] = round(e.total / 2**20)
    out["rows_mb"] = {name: round(b / 2**20) for name, b, _ in e.rows}
    return out


def run_child(method: str, batch: int, seq: int, steps: int, what: str, precision: str = "auto") -> dict:
    p = subprocess.run([sys.executable, __file__, "--one", method, "--what", what, "--batch", str(batch),
                        "--seq", str(seq), "--steps", str(steps), "--precision", precision],
                       capture_output=True, text=True)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode != 0 or not line:
        raise RuntimeError(f"{method} ({what}) failed:\n{p.stderr[-3000:]}")
    return json.loads(line[-1][7:])


def measure(methods: list[str], batch: int = 4, seq: int = 256, steps: int = 2,
            what: tuple[str, ...] = ("tensors", "rss"), precision: str = "auto") -> dict:
    """Per method: estimated_mb, and for each of `what` the measured MiB and estimate / measured.
    `precision`: train.precision of the runs (auto | fp32 | bf16), the estimate computed for the same."""
    out = {}
    for m in methods:
        r: dict = {}
        for w in what:
            r.update(run_child(m, batch, seq, steps, w, precision))
            r[f"ratio_{w}"] = round(r["estimated_mb"] / r[f"{w}_mb"], 3)
        out[m] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="full,lora,qlora")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--what", default="tensors,rss", help="tensors,rss: which measurements")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="train.precision (auto: bf16 autocast on AVX-512-BF16 CPUs, else fp32)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(child(a.one, a.batch, a.seq, a.steps, a.what, a.precision)))
        return
    res = measure(a.methods.split(","), a.batch, a.seq, a.steps, tuple(a.what.split(",")), a.precision)
    print(json.dumps({"model": MODEL, "batch": a.batch, "seq": a.seq, "steps": a.steps, "precision": a.precision,
                      "methods": res}, indent=2))


if __name__ == "__main__":
    main()
