"""Measured training peak vs `tunelab memory`'s estimate, per method, on the embedded model.

    python benchmarks/memory_peak.py [--methods full,lora,qlora] [--batch 4] [--seq 256] [--steps 2]

Each method runs in a fresh process: read RSS, load SmolLM2-135M-Instruct (fp32 on CPU), apply
the method with tunelab's defaults (lora/qlora: last 8 blocks, qlora: NF4+DQ and gradient
checkpointing auto), train `--steps` optimizer steps of `--batch` random sequences of `--seq`
tokens (the last 40% of each sequence is the reply, as `target_fraction` tells the estimate)
through tunelab's own training loop, then read the process's peak RSS (VmHWM).

    measured = VmHWM - RSS before the model was loaded   (the Python process and libraries excluded)
    estimate = tunelab.train.memory.estimate(...).total    (fp32, no autocast: this CPU has no AVX-512-BF16)

Prints JSON: per method measured MB, estimated MB and estimate / measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

MODEL = "smollm2-135m-instruct"
REPLY = 0.4


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(method: str, batch: int, seq: int, steps: int) -> dict:
    import torch

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    before = rss_mb("VmRSS")
    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import quantize_base
    from tunelab.config import from_dict
    from tunelab.data.tokenize import IGNORE, TokenizedExample
    from tunelab.models.load import load_causal_lm
    from tunelab.train.checkpointing import enable, wants_checkpointing
    from tunelab.train.engine import train_loop
    from tunelab.train.memory import estimate

    cfg = from_dict({"model": {"name": MODEL}, "data": {"train": "x.jsonl", "max_length": seq},
                     "method": {"name": method},
                     "train": {"batch_size": batch, "max_steps": steps, "eval_every": "never", "warmup_ratio": 0}})
    model, tok, rm = load_causal_lm(MODEL, dtype="fp32", device="cpu")
    if method == "qlora":
        quantize_base(model, cfg.method.quant_type, cfg.method.double_quant)
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
    train_loop(model, examples, [], cfg.train, tok.pad_token_id, quiet=True)
    measured = rss_mb("VmHWM") - before
    e = estimate(str(rm.path), method, batch=batch, seq=seq, grad_checkpointing=ckpt, r=cfg.method.r,
                 device="cpu", detect=False, autocast=False, lora_dropout=cfg.method.dropout,
                 target_fraction=(seq - n_prompt) / seq, layers=cfg.method.layers)
    return {"measured_mb": round(measured), "estimated_mb": round(e.total / 2**20),
            "ratio": round(e.total / 2**20 / measured, 3), "gradient_checkpointing": ckpt,
            "rows_mb": {name: round(b / 2**20) for name, b, _ in e.rows}}


def measure(methods: list[str], batch: int = 4, seq: int = 256, steps: int = 2) -> dict:
    out = {}
    for m in methods:
        p = subprocess.run([sys.executable, __file__, "--one", m, "--batch", str(batch), "--seq", str(seq),
                            "--steps", str(steps)], capture_output=True, text=True)
        line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode != 0 or not line:
            raise RuntimeError(f"{m} failed:\n{p.stderr[-3000:]}")
        out[m] = json.loads(line[-1][7:])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="full,lora,qlora")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(child(a.one, a.batch, a.seq, a.steps)))
        return
    res = measure(a.methods.split(","), a.batch, a.seq, a.steps)
    print(json.dumps({"model": MODEL, "batch": a.batch, "seq": a.seq, "steps": a.steps, "methods": res}, indent=2))


if __name__ == "__main__":
    main()
