"""Training throughput: the widely copied Trainer+PEFT recipe vs tunelab, same model, data and examples.

    python benchmarks/train_throughput.py [--train 64] [--val 24] [--repeat 3]
        [--runs baseline,tunelab,tunelab-qlora,trl-same-lora] [--before-src DIR (adds the run tunelab-before)]

Model: the embedded SmolLM2-135M-Instruct. Data: Python FAQ question -> answer pairs from Debian's
python3.11-doc (fetched into ~/.cache/tunelab/datasets, see shared/DATA.md), split by seed.

Each run is a fresh subprocess (so peak RSS is its own) that trains one epoch over the same
`--train` examples and then scores the validation set with the same function,
`tunelab.losses.reply_nll` (mean NLL per reply token, the model's own chat template).

    baseline       transformers Trainer + PEFT LoRA (r=8, alpha=32, dropout 0.05, q_proj only), fp32,
                   DataCollatorForLanguageModeling (pad to the batch's longest), batch 4, accumulation 4,
                   max length 512, lr 2e-4, linear schedule (Trainer defaults)
    tunelab        tunelab's defaults: LoRA r=16 on all linear layers of the last 8 blocks (method.layers),
                   dropout 0, lr 4e-4, batch 8, length-grouped batches, loss and output head on reply
                   tokens only, precision auto (fp32 on CPUs without AVX-512-BF16), cosine, glibc keeps
                   freed buffers (train.keep_freed_memory); the batch's shared opening runs once
                   (ops/shared_prefix.py), block MLPs skip padding (ops/unpad.py), plain LoRA
                   Linears fold scale and sum into the matmuls (adapters/fused.py); the process
                   runs with glibc's tcache and fastbins off, as `tunelab train` re-executes itself
                   (runtime/allocator.py: training_env)
    trl-same-lora  TRL's SFTTrainer with exactly tunelab's defaults: PEFT LoRA r=16, alpha=32, dropout 0
                   on the same targets (all linear layers) of the last 8 blocks (`layers_to_transform`,
                   the LoraConfig tunelab builds: adapters/lora.py lora_config), lr 4e-4, batch 8,
                   accumulation 1, cosine with 5% warmup, no weight decay, clipping at 1.0, the same
                   precision (bf16 autocast only with AVX-512-BF16), length-grouped sampling, and the
                   same token ids (tunelab's tokenization, truncation and chat template) handed over
                   pre-tokenized with a completion mask, so the loss is on reply tokens only
                   (completion-only loss); padding-free batches (TRL's `padding_free`: the batch
                   concatenated into one row with position_ids; transformers' sdpa mask keeps each
                   sequence to itself on CPU, no flash-attention needed; max_length None: the ids
                   come truncated to --max-length by tunelab)
    tunelab-before `tunelab` run from the source tree given by --before-src (e.g. a copy of src/ taken
                   before a change): the same script, the same invocation, round-robin with the others
    tunelab-qlora  the same with method qlora (NF4 + double quantization, tunelab's CPU backend) and
                   gradient checkpointing (train.gradient_checkpointing auto: on for qlora), which keeps
                   the shared opening and the MLP unpadding (checkpoint replays them)

Trained tokens = non-padding tokens of the training sequences (prompt + reply), identical for all
runs; tokens/s = trained tokens / training wall seconds (model loading and evaluation excluded).
Peak RSS: the process's high-water mark reset after the model is loaded (and quantized), read from
/proc/self/status VmHWM at the end of training; plus the whole-process peak (ru_maxrss).

Prints one JSON object: per run tokens/s, s/example, step time, peak RSS, val loss, and the ratios.
With --repeat N each configuration runs N times, round-robin; a run reports its median-speed try
(with that try's other figures) and lists every try's tokens/s and val loss.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from tunelab.runtime.allocator import reset_peak_rss, status_mb, training_env

HERE = Path(__file__).resolve().parent
MODEL = "smollm2-135m-instruct"


def faq_pairs() -> list[dict]:
    """Python FAQ (question, answer) pairs: section titles ending in '?' and their section text."""
    sys.path.insert(0, str(HERE))
    from rag import fetch  # the python3.11-doc fetcher shared with the RAG benchmark

    from tunelab.rag.ingest import read_document

    src = fetch()
    if isinstance(src, str):
        raise SystemExit(f"Python docs unavailable: {src}")
    pairs: dict[tuple, list[str]] = {}
    for f in sorted((src / "faq").glob("*.rst.txt")):
        for b in read_document(f).blocks:
            if b.section.endswith("?"):
                pairs.setdefault((f.name, b.section), []).append(b.text)
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "\n\n".join(t)}]}
            for (_, q), t in sorted(pairs.items())]


def split(n_train: int, n_val: int, seed: int) -> tuple[list[dict], list[dict]]:
    recs = faq_pairs()
    random.Random(seed).shuffle(recs)
    if n_train + n_val > len(recs):
        raise SystemExit(f"only {len(recs)} FAQ pairs; ask for fewer")
    return recs[:n_train], recs[n_train:n_train + n_val]


def tokenized(records, tok, max_length: int):
    from tunelab.data.formats import ChatExample
    from tunelab.data.templates import build_template
    from tunelab.data.tokenize import tokenize_all

    template = build_template("auto", tok)
    exs = [ChatExample(r["messages"]) for r in records]
    out, _ = tokenize_all(exs, template, tok, max_length)
    return out


def run_baseline(train, val, args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from tunelab.losses import reply_nll
    from tunelab.models.load import load_causal_lm

    model, tok, _ = load_causal_lm(MODEL, dtype="fp32", device="cpu")
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in train]
    ds = Dataset.from_dict({"text": texts}).map(
        lambda b: tok(b["text"], truncation=True, max_length=args.max_length), batched=True, remove_columns=["text"])
    trained_tokens = sum(len(x) for x in ds["input_ids"])
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj"],
                                             task_type="CAUSAL_LM"))
    targs = TrainingArguments(output_dir=str(args.tmp / "baseline"), per_device_train_batch_size=4,
                              gradient_accumulation_steps=4, num_train_epochs=1, learning_rate=2e-4,
                              logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=args.seed,
                              dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, train_dataset=ds,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    reset_peak_rss()
    t0 = time.perf_counter()
    out = trainer.train()
    secs = time.perf_counter() - t0
    peak = status_mb("VmHWM")
    val_tok = tokenized(val, tok, args.max_length)
    v = reply_nll(model, val_tok, tok.pad_token_id, 8, None)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"train_seconds": secs, "trained_tokens": trained_tokens, "steps": out.global_step, "val_loss": v,
            "peak_rss_train_mb": peak, "trainable_params": trainable, "train_loss": out.training_loss}


def tunelab_model(method: str, max_length: int = 512, seed: int = 0, method_overrides: dict | None = None,
                  train_overrides: dict | None = None):
    """(model, tokenizer, run config, autocast dtype, checkpointing on?): the embedded model with
    `method` applied as `tunelab train` resolves its defaults (lr per method, gradient checkpointing
    auto, QLoRA's compute dtype)."""
    import torch

    from tunelab.adapters.lora import apply_lora
    from tunelab.adapters.qlora import quantize_base
    from tunelab.config import from_dict
    from tunelab.models.load import load_causal_lm
    from tunelab.train.activation_ckpt import enable as enable_checkpointing, wants_checkpointing
    from tunelab.runtime.precision import autocast_dtype

    model, tok, _ = load_causal_lm(MODEL, dtype="auto", device="cpu")
    run_cfg = from_dict({"model": {"name": MODEL}, "data": {"train": "faq.jsonl", "max_length": max_length},
                         "method": {"name": method, **(method_overrides or {})},
                         "train": {"epochs": 1, "seed": seed, "eval_every": "never", **(train_overrides or {})}})
    m = run_cfg.method
    amp = autocast_dtype(run_cfg.train.precision, torch.device("cpu"))
    if method == "qlora":
        quantize_base(model, m.quant_type, m.double_quant, compute_dtype=amp)
    model = apply_lora(model, m)
    checkpointing = wants_checkpointing(run_cfg, model)
    if checkpointing:
        enable_checkpointing(model)
    return model, tok, run_cfg, amp, checkpointing


def run_tunelab(train, val, args, method: str) -> dict:
    from tunelab.losses import reply_nll
    from tunelab.train.engine import train_loop

    model, tok, run_cfg, amp, checkpointing = tunelab_model(
        method, args.max_length, args.seed, json.loads(args.tunelab_method), json.loads(args.tunelab_train))
    cfg, m = run_cfg.train, run_cfg.method
    train_tok = tokenized(train, tok, args.max_length)
    val_tok = tokenized(val, tok, args.max_length)
    reset_peak_rss()
    res = train_loop(model, train_tok, [], cfg, tok.pad_token_id, quiet=True)
    peak = status_mb("VmHWM")
    v = reply_nll(model, val_tok, tok.pad_token_id, 8, amp)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"train_seconds": res.train_seconds, "trained_tokens": sum(len(t.input_ids) for t in train_tok),
            "reply_tokens": res.trained_tokens, "steps": res.steps, "val_loss": v, "peak_rss_train_mb": peak,
            "trainable_params": trainable, "precision": "bf16" if amp is not None else "fp32",
            "lr": cfg.lr, "layers": m.layers, "dropout": m.dropout, "gradient_checkpointing": checkpointing}


def run_trl_same_lora(train, val, args) -> dict:
    """TRL SFTTrainer + PEFT with tunelab's defaults (the module docstring, `trl-same-lora`)."""
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from trl import SFTConfig, SFTTrainer

    from tunelab.adapters.lora import lora_config
    from tunelab.config import from_dict
    from tunelab.data.tokenize import IGNORE
    from tunelab.losses import reply_nll
    from tunelab.models.load import load_causal_lm
    from tunelab.runtime.precision import autocast_dtype
    from tunelab.train.recipes.preference import warmup_args

    model, tok, _ = load_causal_lm(MODEL, dtype="auto", device="cpu")
    run_cfg = from_dict({"model": {"name": MODEL}, "data": {"train": "faq.jsonl", "max_length": args.max_length},
                         "method": {"name": "lora", **json.loads(args.tunelab_method)},
                         "train": {"epochs": 1, "seed": args.seed, "eval_every": "never",
                                   **json.loads(args.tunelab_train)}})
    t, m = run_cfg.train, run_cfg.method
    amp = autocast_dtype(t.precision, torch.device("cpu"))
    train_tok = tokenized(train, tok, args.max_length)
    val_tok = tokenized(val, tok, args.max_length)
    ds = Dataset.from_list([{"input_ids": x.input_ids, "completion_mask": [int(lbl != IGNORE) for lbl in x.labels]}
                            for x in train_tok])
    model = get_peft_model(model, lora_config(model, m))  # peft's own LoRA layers (tunelab's fused ones not registered)
    targs = SFTConfig(output_dir=str(args.tmp / "trl"), per_device_train_batch_size=t.batch_size,
                      gradient_accumulation_steps=t.grad_accum, num_train_epochs=1, learning_rate=t.lr,
                      lr_scheduler_type=t.scheduler, **warmup_args(t.warmup_ratio), weight_decay=t.weight_decay,
                      max_grad_norm=t.max_grad_norm, bf16=amp == torch.bfloat16, completion_only_loss=True,
                      padding_free=True, max_length=None, train_sampling_strategy="group_by_length",
                      logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=args.seed,
                      dataloader_num_workers=0, dataloader_pin_memory=False, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=targs, train_dataset=ds, processing_class=tok)
    reset_peak_rss()
    t0 = time.perf_counter()
    out = trainer.train()
    secs = time.perf_counter() - t0
    peak = status_mb("VmHWM")
    v = reply_nll(model, val_tok, tok.pad_token_id, 8, amp)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"train_seconds": secs, "trained_tokens": sum(len(x.input_ids) for x in train_tok), "steps": out.global_step,
            "val_loss": v, "peak_rss_train_mb": peak, "trainable_params": trainable, "train_loss": out.training_loss,
            "precision": "bf16" if amp is not None else "fp32", "lr": t.lr, "layers": m.layers,
            "padding_free": True}


def child(args) -> None:
    import torch

    torch.manual_seed(args.seed)
    train, val = split(args.train, args.val, args.seed)
    if args.one == "baseline":
        out = run_baseline(train, val, args)
    elif args.one == "trl-same-lora":
        out = run_trl_same_lora(train, val, args)
    else:
        out = run_tunelab(train, val, args, "qlora" if args.one == "tunelab-qlora" else "lora")
    import resource

    out["peak_rss_process_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["threads"] = torch.get_num_threads()
    out["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES", "")
    out["tokens_per_s"] = out["trained_tokens"] / out["train_seconds"]
    out["seconds_per_example"] = out["train_seconds"] / args.train
    out["seconds_per_step"] = out["train_seconds"] / max(out["steps"], 1)
    print("RESULT " + json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=64, help="training examples (one epoch)")
    ap.add_argument("--val", type=int, default=24, help="validation examples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--runs", default="baseline,tunelab,tunelab-qlora")
    ap.add_argument("--repeat", type=int, default=1, help="run each configuration N times (round-robin); "
                                                          "report the median by tokens/s")
    ap.add_argument("--tunelab-train", default="{}", help="JSON overrides of tunelab's TrainConfig")
    ap.add_argument("--tunelab-method", default="{}", help="JSON overrides of tunelab's MethodConfig")
    ap.add_argument("--before-src", help="a source tree (a copy of src/) to run as `tunelab-before`")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/tunelab-throughput"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return child(args)
    split(args.train, args.val, args.seed)  # fetch once, fail early
    passthrough = [a for a in sys.argv[1:]]
    for flag in ("--runs", "--repeat", "--before-src"):  # the child runs one configuration once
        if flag in passthrough:
            i = passthrough.index(flag)
            del passthrough[i:i + 2]
    tries: dict[str, list[dict]] = {}
    names = args.runs.split(",") + (["tunelab-before"] if args.before_src else [])
    for rep in range(args.repeat):  # round-robin, so a slow spell of the machine hits every run alike
        for name in names:
            env = training_env() if name.startswith("tunelab") else None  # as `tunelab train` runs
            one = name
            if name == "tunelab-before":  # the same `tunelab` run, importing tunelab from --before-src
                env, one = {**env, "PYTHONPATH": str(Path(args.before_src).resolve())}, "tunelab"
            p = subprocess.run([sys.executable, __file__, "--one", one] + passthrough, capture_output=True, text=True,
                               env=env)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                raise SystemExit(f"{name} failed:\n{p.stderr[-3000:]}")
            r = json.loads(line[-1][7:])
            tries.setdefault(name, []).append(r)
            print(f"[{rep + 1}/{args.repeat}] {name}: {r['tokens_per_s']:.1f} tok/s, val {r['val_loss']:.3f}",
                  file=sys.stderr)
    results = {}
    for name, rs in tries.items():  # the median run by tokens/s (its other figures with it); all speeds listed
        ordered = sorted(rs, key=lambda r: r["tokens_per_s"])
        results[name] = {**ordered[len(ordered) // 2], "tokens_per_s_all": [round(r["tokens_per_s"], 1) for r in rs],
                         "val_loss_all": [round(r["val_loss"], 4) for r in rs]}
    summary = {"model": MODEL, "train_examples": args.train, "val_examples": args.val, "seed": args.seed,
               "max_length": args.max_length, "runs": results}
    if "baseline" in results:
        b = results["baseline"]
        for name, r in results.items():
            if name != "baseline":
                summary[f"{name}_speedup_tokens_per_s"] = round(r["tokens_per_s"] / b["tokens_per_s"], 2)
                # the same ratio within each round (baseline and this run minutes apart, so a slow or
                # fast spell of the machine hits both), and its median over the rounds
                rounds = [round(x["tokens_per_s"] / y["tokens_per_s"], 2)
                          for x, y in zip(tries[name], tries["baseline"])]
                summary[f"{name}_speedup_per_round"] = rounds
                summary[f"{name}_speedup_median_of_rounds"] = sorted(rounds)[len(rounds) // 2]
                summary[f"{name}_val_loss_le_baseline"] = r["val_loss"] <= b["val_loss"]
    if "tunelab" in results and "trl-same-lora" in results:  # the peer with the same LoRA: engine vs engine
        t, p = results["tunelab"], results["trl-same-lora"]
        summary["tunelab_over_trl_same_lora_tokens_per_s"] = round(t["tokens_per_s"] / p["tokens_per_s"], 2)
        summary["tunelab_over_trl_same_lora_per_round"] = [
            round(x["tokens_per_s"] / y["tokens_per_s"], 2) for x, y in zip(tries["tunelab"], tries["trl-same-lora"])]
        summary["tunelab_val_loss_le_trl_same_lora"] = t["val_loss"] <= p["val_loss"]
    if "tunelab" in results and "tunelab-before" in results:  # the change under test against the tree before it
        t, b = results["tunelab"], results["tunelab-before"]
        summary["tunelab_over_before_tokens_per_s"] = round(t["tokens_per_s"] / b["tokens_per_s"], 2)
        summary["tunelab_over_before_per_round"] = [
            round(x["tokens_per_s"] / y["tokens_per_s"], 2) for x, y in zip(tries["tunelab"], tries["tunelab-before"])]
    if "tunelab" in results and "tunelab-qlora" in results:
        t, q = results["tunelab"], results["tunelab-qlora"]
        summary["qlora_step_time_ratio"] = round(q["seconds_per_step"] / t["seconds_per_step"], 2)
        summary["qlora_peak_rss_ratio"] = round(q["peak_rss_train_mb"] / t["peak_rss_train_mb"], 2)
        # the same ratio within each round (the two runs back to back, so a slow spell of the machine
        # hits both): steadier than median against median when the machine drifts between rounds
        rounds = [round(qr["seconds_per_step"] / tr["seconds_per_step"], 2)
                  for tr, qr in zip(tries["tunelab"], tries["tunelab-qlora"])]
        summary["qlora_step_time_ratio_per_round"] = rounds
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
