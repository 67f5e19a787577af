"""One LoRA training step in fp32 vs bf16 autocast on this CPU, same batch, same run.

    python benchmarks/cpu_precision.py [--model smollm2-135m-instruct] [--steps 2] [--threads 0]

Prints JSON: seconds per step for each precision and the ratio bf16/fp32. Decides whether
`train.precision: auto` should use bf16 on a CPU (it does only when oneDNN reports native bf16).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tunelab.adapters.lora import apply_lora
from tunelab.config import from_dict
from tunelab.data.dataset import load_splits
from tunelab.data.templates import build_template
from tunelab.data.tokenize import collate, tokenize_all
from tunelab.losses import reply_loss_sum
from tunelab.models.load import load_causal_lm
from tunelab.runtime.precision import cpu_has_bf16


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = from_dict({"model": {"name": a.model}, "data": {"train": "examples/data/tunebot/train.jsonl"}})
    model, tok, _ = load_causal_lm(a.model, dtype="fp32")
    train, _ = load_splits(cfg)
    examples, _ = tokenize_all(train, build_template("auto", tok), tok, 256)
    model = apply_lora(model, cfg.method)
    batch = collate(examples[: a.batch], tok.pad_token_id)
    out = {"model": a.model, "batch_shape": list(batch["input_ids"].shape), "threads": torch.get_num_threads(),
           "cpu_native_bf16": cpu_has_bf16()}
    for name, amp in (("fp32", None), ("bf16_autocast", torch.bfloat16)):
        times = []
        for _ in range(a.steps + 1):  # the first step warms up
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
                loss, n = reply_loss_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
            (loss / n).backward()
            model.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t)
        out[f"{name}_s_per_step"] = round(min(times[1:]), 3)
    out["bf16_over_fp32"] = round(out["bf16_autocast_s_per_step"] / out["fp32_s_per_step"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
