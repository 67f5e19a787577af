"""Ternary (BitNet b1.58) on a real model: PTQ alone vs a short BitNet fine-tune; prints JSON.

    python benchmarks/quant_report.py --model smollm2-135m-instruct \
        --train DOCS/_sources/library --eval DOCS/_sources/tutorial --steps 40

DOCS = the extracted python3.11-doc package (see /work/shared/DATA.md). Held-out perplexity
(the same windows and measure as `tunelab quantize inspect`: `eval.quantization.held_out_perplexity`)
for: bf16 weights, ternary PTQ (absmean, 8-bit activations, no training), and after `--steps` AdamW
steps of BitNet fine-tuning (`to_bitnet`, straight-through estimators) on the separate --train text,
trained by the training engine (`train_loop`, causal-LM loss on windows of --train-seq-len tokens,
constant lr, bf16 autocast; `--warmup-lambda N`: the `LambdaWarmup(N)` before-step hook). The
fine-tuned model is then exported with `convert_qat` (packed ternary QuantLinear) and evaluated
again: it must match.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from tunelab.config import TrainConfig
from tunelab.eval.quantization import held_out_perplexity, load_eval_text, token_windows
from tunelab.models.load import load_causal_lm
from tunelab.quant.qat import LambdaWarmup, convert_qat, to_bitnet
from tunelab.train.engine import train_loop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--train", required=True, help="training text: file or folder")
    ap.add_argument("--eval", required=True, help="held-out text: file or folder")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--train-seq-len", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--warmup-lambda", type=int, default=0, help="steps to ramp quantization from 0 to 1")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.time()
    base, tok, _ = load_causal_lm(args.model, dtype="fp32", device="cpu")
    held_out = token_windows(tok, load_eval_text(args.eval), args.seq_len, args.max_tokens)
    train_text = load_eval_text(args.train, max_chars=400_000)
    train = token_windows(tok, train_text, args.train_seq_len, 10 ** 9)
    out = {"model": args.model, "steps": args.steps, "lr": args.lr, "batch": [args.batch, args.train_seq_len],
           "held_out_tokens": sum(len(w.input_ids) for w in held_out)}
    bf16 = copy.deepcopy(base)
    for p in bf16.parameters():
        p.data = p.data.to(torch.bfloat16).float()
    out["ppl_bf16"] = held_out_perplexity(bf16, held_out)
    del bf16
    model = to_bitnet(base)
    out["ppl_ternary_ptq"] = held_out_perplexity(model, held_out)
    print(f"bf16 {out['ppl_bf16']:.3f}  ternary PTQ {out['ppl_ternary_ptq']:.1f}", flush=True)
    t_train = time.time()
    losses = []

    def log(rec):
        if "loss" in rec:
            losses.append(rec["loss"])
            print(f"step {rec['step']}/{args.steps} loss {rec['loss']:.3f} ({time.time() - t_train:.0f} s)", flush=True)

    cfg = TrainConfig(lr=args.lr, max_steps=args.steps, batch_size=args.batch, warmup_ratio=0.0, scheduler="constant",
                      weight_decay=0.0, max_grad_norm=1.0, precision="bf16", eval_every="never", seed=0)
    train_loop(model, train, [], cfg, pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0, log=log,
               quiet=True, before_step=LambdaWarmup(args.warmup_lambda) if args.warmup_lambda else None)
    out["train_loss_first_last"] = [round(losses[0], 3), round(losses[-1], 3)]
    out["ppl_bitnet_finetuned"] = held_out_perplexity(model, held_out)
    convert_qat(model)
    out["ppl_bitnet_exported_packed"] = held_out_perplexity(model, held_out)
    # recovery in nats of mean NLL: log(ppl_ptq) - log(ppl_finetuned) over log(ppl_ptq) - log(ppl_bf16)
    import math

    gap = math.log(out["ppl_ternary_ptq"]) - math.log(out["ppl_bf16"])
    out["recovered_fraction_of_nll_gap"] = (math.log(out["ppl_ternary_ptq"]) - math.log(out["ppl_bitnet_finetuned"])) / gap
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
