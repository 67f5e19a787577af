"""What the per-call savings and the allocator settings buy one training step, each measured
against the same step without it, in the same invocation.

    python benchmarks/train_savings.py [--method lora|qlora] [--rounds 6] [--tries 2]

Model: the embedded SmolLM2-135M-Instruct with the method's tunelab defaults (LoRA r=16 on the
last 8 blocks; qlora: NF4 + double quantization, gradient checkpointing as `auto` decides).
Data: the Python-FAQ training pairs of benchmarks/train_throughput.py (seed 0), tokenized with the
model's chat template.

time    one process; one micro-batch of 8 examples (the 8 around the middle length); a step is the
        forward and backward of `tunelab.losses.reply_loss_sum`. Four variants, interleaved
        `--rounds` times after one warm-up each: all savings on; `share_opening` off (the batch's
        common opening, the template's system turn, runs in every row: ops/shared_prefix.py);
        `skip_padding` off (block MLPs run on padding too: ops/unpad.py); both off. Reports the
        median step time of each, its ratio to all-on, and the largest difference of its loss and
        of its gradients from all-on (the savings are exact: float rounding only).
memory  fresh processes, alternating `--tries` times: glibc's tcache and fastbins off, as
        `tunelab train` runs (runtime/allocator.py: training_env), vs glibc's defaults. Each loads
        the model, resets the peak (start_peak_rss), and runs 3 optimizer steps on the 3 batches of
        longest examples (8 rows each, up to 512 tokens). Reports the peak RSS of those steps
        (VmHWM), and after them glibc's in-use bytes and the heap it holds (malloc_mb: the gap is
        freed memory it could not reuse), and the time of the steps.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = {"all_on": (True, True), "share_opening_off": (False, True), "skip_padding_off": (True, False),
            "both_off": (False, False)}


def setup(method: str):
    """(model, tokenized training examples sorted by length, pad id, autocast dtype), built as the
    throughput benchmark's tunelab runs are (benchmarks/train_throughput.py: tunelab_model)."""
    sys.path.insert(0, str(HERE))
    import train_throughput as tt

    from tunelab.runtime.allocator import keep_freed_memory

    keep_freed_memory()  # as train_loop does
    model, tok, _, amp, _ = tt.tunelab_model(method)
    model.train()
    train, _ = tt.split(64, 24, 0)
    toks = sorted(tt.tokenized(train, tok, 512), key=lambda t: len(t.input_ids))
    return model, toks, tok.pad_token_id, amp


def backward_step(model, batch: dict, amp, **savings) -> float:
    """Forward (under autocast when `amp`, as train_loop runs it) and backward of reply_loss_sum's
    mean over the batch's targets; returns that mean."""
    import torch

    from tunelab.losses import reply_loss_sum

    with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        loss, n = reply_loss_sum(model, batch["input_ids"], batch["attention_mask"], batch["labels"], **savings)
    (loss / n).backward()
    return float(loss.detach()) / n


def time_part(args) -> dict:
    from tunelab.data.tokenize import collate

    model, toks, pad, amp = setup(args.method)
    mid = len(toks) // 2
    batch = collate(toks[mid - 4:mid + 4], pad)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(name):
        share, skip = VARIANTS[name]
        model.zero_grad(set_to_none=True)
        t = time.perf_counter()
        loss = backward_step(model, batch, amp, share_opening=share, skip_padding=skip)
        dt = time.perf_counter() - t
        return dt, loss, [p.grad.clone() for p in params]

    ref = {name: step(name)[1:] for name in VARIANTS}  # warm-up, and each variant's loss and gradients
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            times[name].append(step(name)[0])
    on = statistics.median(times["all_on"])
    out = {"batch": list(batch["input_ids"].shape), "real_tokens": int(batch["attention_mask"].sum())}
    for name in VARIANTS:
        med = statistics.median(times[name])
        loss, grads = ref[name]
        out[name] = {"step_s": round(med, 3), "steps_s": [round(x, 3) for x in times[name]],
                     "vs_all_on": round(med / on, 3),
                     "loss_diff": abs(loss - ref["all_on"][0]),
                     "grad_max_diff": max(float((a - b).abs().max()) for a, b in zip(grads, ref["all_on"][1]))}
    return out


def memory_child(args) -> dict:
    import torch

    from tunelab.data.tokenize import collate
    from tunelab.runtime.allocator import malloc_mb, start_peak_rss, status_mb, training_tunables_active

    model, toks, pad, amp = setup(args.method)
    batches = [collate(toks[-8 * (i + 1):len(toks) - 8 * i], pad) for i in range(3)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    start_peak_rss()
    t = time.perf_counter()
    for b in batches:
        backward_step(model, b, amp)
        opt.step()
        opt.zero_grad(set_to_none=True)
    secs = time.perf_counter() - t
    heap = malloc_mb() or {}
    return {"tunables": training_tunables_active(), "shapes": [list(b["input_ids"].shape) for b in batches],
            "peak_rss_mb": status_mb("VmHWM"), "in_use_mb": heap.get("in_use"), "heap_mb": heap.get("heap"),
            "steps_s": round(secs, 2)}


def memory_part(args) -> dict:
    from tunelab.runtime.allocator import training_env

    plain = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    tries: dict[str, list[dict]] = {"tunables": [], "glibc_defaults": []}
    for _ in range(args.tries):  # alternating, so a slow spell of the machine hits both
        for name, env in (("tunables", training_env(plain)), ("glibc_defaults", plain)):
            p = subprocess.run([sys.executable, __file__, "--memory-child", "--method", args.method],
                               capture_output=True, text=True, env=env)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                raise SystemExit(f"memory run ({name}) failed:\n{p.stderr[-3000:]}")
            tries[name].append(json.loads(line[-1][7:]))
    out = {}
    for name, rs in tries.items():
        out[name] = {k: [r[k] for r in rs] for k in ("peak_rss_mb", "in_use_mb", "heap_mb", "steps_s")}
        out[name]["shapes"] = rs[0]["shapes"]
    worst = max(out["tunables"]["peak_rss_mb"])
    best_default = min(out["glibc_defaults"]["peak_rss_mb"])
    out["peak_rss_ratio_worst_vs_best"] = round(worst / best_default, 3)  # < 1: the tunables always win
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="qlora", choices=["lora", "qlora"])
    ap.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds")
    ap.add_argument("--tries", type=int, default=2, help="fresh processes per allocator setting")
    ap.add_argument("--parts", default="time,memory")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        print("RESULT " + json.dumps(memory_child(args)))
        return
    out = {"method": args.method}
    parts = args.parts.split(",")
    if "time" in parts:
        out["time"] = time_part(args)
    if "memory" in parts:
        out["memory"] = memory_part(args)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
