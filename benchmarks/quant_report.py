"""Ternary (BitNet b1.58) on a real model: PTQ alone vs a short BitNet fine-tune; prints JSON.

    python benchmarks/quant_report.py --model smollm2-135m-instruct \
        --train DOCS/_sources/library --eval DOCS/_sources/tutorial --steps 40

DOCS = the extracted python3.11-doc package (see /work/shared/DATA.md). Held-out perplexity
(the same windows as `tunelab quantize inspect`) for: bf16 weights, ternary PTQ (absmean, 8-bit
activations, no training), and after `--steps` AdamW steps of BitNet fine-tuning (`to_bitnet`,
straight-through estimators) on the separate --train text. The fine-tuned model is then exported
with `convert_qat` (packed ternary QuantLinear) and evaluated again: it must match.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from tunelab.models.load import load_causal_lm
from tunelab.quant import report
from tunelab.quant.qat import convert_qat, finetune_lm, perplexity, to_bitnet


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
    held_out = report.token_batches(tok, report.load_eval_text(args.eval), args.seq_len, args.max_tokens)
    train_text = report.load_eval_text(args.train, max_chars=400_000)
    train = report.token_batches(tok, train_text, args.train_seq_len, 10 ** 9, batch=args.batch)
    out = {"model": args.model, "steps": args.steps, "lr": args.lr, "batch": [args.batch, args.train_seq_len],
           "held_out_tokens": sum(b.numel() for b in held_out)}
    bf16 = copy.deepcopy(base)
    for p in bf16.parameters():
        p.data = p.data.to(torch.bfloat16).float()
    out["ppl_bf16"] = perplexity(bf16, held_out)
    del bf16
    model = to_bitnet(base)
    out["ppl_ternary_ptq"] = perplexity(model, held_out)
    print(f"bf16 {out['ppl_bf16']:.3f}  ternary PTQ {out['ppl_ternary_ptq']:.1f}", flush=True)
    t_train = time.time()
    log = lambda s, loss: print(f"step {s + 1}/{args.steps} loss {loss:.3f} ({time.time() - t_train:.0f} s)",  # noqa: E731
                                flush=True)
    losses = finetune_lm(model, train, args.steps, lr=args.lr, warmup_lambda_steps=args.warmup_lambda, log=log)
    out["train_loss_first_last"] = [round(losses[0], 3), round(losses[-1], 3)]
    out["ppl_bitnet_finetuned"] = perplexity(model, held_out)
    convert_qat(model)
    out["ppl_bitnet_exported_packed"] = perplexity(model, held_out)
    # recovery in nats of mean NLL: log(ppl_ptq) - log(ppl_finetuned) over log(ppl_ptq) - log(ppl_bf16)
    import math

    gap = math.log(out["ppl_ternary_ptq"]) - math.log(out["ppl_bf16"])
    out["recovered_fraction_of_nll_gap"] = (math.log(out["ppl_ternary_ptq"]) - math.log(out["ppl_bitnet_finetuned"])) / gap
    out["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
