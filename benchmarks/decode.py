"""Decode speed: transformers' `generate` (the baseline) against tunelab's decode engine, on the same
prompts, in one run; llama.cpp too when `llama_cpp` is importable and `--gguf` names a file.

    python benchmarks/decode.py [--model smollm2-135m-instruct] [--tokens 128] [--prompts 3]
                                [--threads 2] [--batch 1,4,8] [--run runs/quickstart] [--gguf FILE]

Per engine, batch 1, greedy, EOS ignored so every engine decodes the same number of tokens:
    prefill tok/s = prompt tokens / time to the first new token
    decode tok/s  = (tokens - 1) / (time for the rest)
    speedup_vs_hf_generate = tunelab fp32 decode tok/s / transformers decode tok/s
    (speedup_<setting>_vs_hf_generate for bf16, int8 and int4: infer/int4.py, run where the CPU has bf16;
    int4_dense: int4 with its bf16 copy for products of more than DENSE_ROWS rows x parts, which prefill and
    validation_ppl's whole-text passes take, so its ppl is the copy's and int4's is the codes')
    validation_ppl         = exp(mean next-token NLL), the quickstart's validation conversations
    fastest_within_1pct_ppl = the fastest setting whose validation_ppl <= 1.01 x the fp32 engine's
    weight_mb_per_token    = weight bytes one step reads; share_of_memory_bandwidth = those bytes x
                             tok/s / memory_gb_s (a plain sum over 256 MB, measured in the same run)
`same_tokens_fp32` compares the first 64 greedy tokens of the fp32 engine with transformers'.
Batched rows (fp32 and int4_dense) report aggregate decode tok/s (B x tokens / decode time). With `--run`, the run's
adapter is decoded unmerged (A, B kept apart) and merged, and unmerged over int4 base weights.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

PROMPTS = [
    "Explain what LoRA fine-tuning is in two sentences.",
    "Write a short haiku about gradient descent.",
    "Give three tips for writing clear Python code.",
    "What is the difference between a list and a tuple?",
]


def _hf_time(model, ids: torch.Tensor, n: int) -> tuple[list[int], float, float]:
    """(tokens, seconds to the first token, seconds for all n) of greedy `generate`."""
    kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
    with torch.no_grad():
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw)
        t1 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, **kw)
        t2 = time.perf_counter()
    return out[0, ids.shape[1]:].tolist(), t1 - t0, t2 - t1


def _engine_time(eng, prompts: list[list[int]], n: int) -> tuple[list[list[int]], float, float]:
    """(tokens per row, seconds to the first token, seconds for all n) on the decode engine."""
    out: list[list[int]] = [[] for _ in prompts]
    t0 = time.perf_counter()
    first = None
    for step in eng.steps(prompts, n):
        if first is None:
            first = time.perf_counter() - t0
        for r, tok in enumerate(step):
            out[r].append(tok)
    return out, first, time.perf_counter() - t0


def _rates(prompt_len: int, n: int, b: int, first: float, total: float) -> dict:
    return {"prefill_tok_s": round(b * prompt_len / first, 1),
            "decode_tok_s": round(b * (n - 1) / max(total - first, 1e-9), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", default="4,8")
    ap.add_argument("--run", default=None, help="a LoRA run: decode its adapter unmerged and merged")
    ap.add_argument("--gguf", default=None, help="a .gguf for llama.cpp (when llama_cpp is importable)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from tunelab.cli.main import quiet_libraries
    from tunelab.infer.decode import DecodeEngine, Unsupported
    from tunelab.infer.engine_choice import int4_fits
    from tunelab.models.load import load_causal_lm

    quiet_libraries()
    model, tok, _ = load_causal_lm(args.model, dtype="fp32", device="cpu")
    model.eval()
    model.generation_config.eos_token_id = None  # the same number of tokens from every engine
    n = args.tokens
    prompts = []
    for text in PROMPTS[: args.prompts]:
        ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      return_dict=True)["input_ids"]
        prompts.append(list(ids))
    res: dict = {"model": args.model, "tokens": n, "prompts": len(prompts), "threads": torch.get_num_threads(),
                 "prompt_tokens": [len(p) for p in prompts]}

    def per_prompt(fn) -> dict:
        fn(prompts[0], 8)  # warm-up
        rows = [fn(p, n) for p in prompts]
        lens = [len(p) for p in prompts]
        first, total = sum(r[1] for r in rows), sum(r[2] for r in rows)
        return {"tokens": [r[0] for r in rows], **_rates(sum(lens) / len(lens), n, 1, first / len(rows),
                                                         total / len(rows))}

    hf = per_prompt(lambda p, k: _hf_time(model, torch.tensor([p]), k))
    res["hf_generate"] = {k: v for k, v in hf.items() if k != "tokens"}
    texts = _validation_texts(tok)
    res["memory_gb_s"] = _bandwidth()
    settings = [("tunelab_fp32", torch.float32, "dense", False), ("tunelab_bf16", torch.bfloat16, "dense", False),
                ("tunelab_int8", torch.float32, "int8", False)]
    if int4_fits("cpu"):
        settings += [("tunelab_int4", torch.bfloat16, "int4", False), ("tunelab_int4_dense", torch.bfloat16, "int4", True)]
    else:
        res["tunelab_int4"] = "not run: this CPU has no native bf16 (or torch no CPU int4 kernel)"
    for name, dtype, weights, dense in settings:
        t0 = time.perf_counter()
        try:
            eng = DecodeEngine.from_model(model, dtype=dtype, weights=weights, dense_batches=dense)
        except Unsupported as e:
            res[name] = f"not run: {e}"
            continue
        build = time.perf_counter() - t0
        r = per_prompt(lambda p, k: (lambda o: (o[0][0], o[1], o[2]))(_engine_time(eng, [p], k)))
        toks = r.pop("tokens")
        same = [a[:64] == b[:64] for a, b in zip(toks, hf["tokens"])]
        agree = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a)) for a, b in zip(toks, hf["tokens"])]
        bytes_tok = _weight_bytes(eng.w)
        res[name] = {**r, "build_s": round(build, 2), "same_first_64_as_hf": sum(same), "of": len(same),
                     "tokens_before_first_difference": agree, "validation_ppl": _ppl(eng, texts),
                     "weight_mb_per_token": round(bytes_tok / 1e6, 1),
                     "share_of_memory_bandwidth": round(bytes_tok * r["decode_tok_s"] / 1e9 / res["memory_gb_s"], 3)}
        if name == "tunelab_fp32":
            res["same_tokens_fp32"] = all(same)
        if name in ("tunelab_fp32", "tunelab_int4_dense"):
            for b in [int(x) for x in args.batch.split(",") if x]:
                rows = [prompts[i % len(prompts)] for i in range(b)]
                _, first, total = _engine_time(eng, rows, n)
                res[f"{name}_batch{b}"] = _rates(sum(map(len, rows)) / b, n, b, first, total)
        del eng
    res["speedup_vs_hf_generate"] = round(res["tunelab_fp32"]["decode_tok_s"] / res["hf_generate"]["decode_tok_s"], 2)
    hf_rate, ppl32 = res["hf_generate"]["decode_tok_s"], res["tunelab_fp32"]["validation_ppl"]
    for name in ("bf16", "int8", "int4", "int4_dense"):
        if isinstance(res.get(f"tunelab_{name}"), dict):
            res[f"speedup_{name}_vs_hf_generate"] = round(res[f"tunelab_{name}"]["decode_tok_s"] / hf_rate, 2)
    kept = {k: v for k, v in res.items() if k.startswith("tunelab_") and isinstance(v, dict)
            and "validation_ppl" in v and v["validation_ppl"] <= 1.01 * ppl32}  # quality kept: perplexity within +1% of fp32's
    best = max(kept, key=lambda k: kept[k]["decode_tok_s"])
    res["fastest_within_1pct_ppl"] = {"setting": best, "speedup_vs_hf_generate":
                                      round(kept[best]["decode_tok_s"] / hf_rate, 2)}
    if args.run:
        from tunelab.runs.load import load_run_model

        peft_model, _, _ = load_run_model(args.run, with_adapter=True, device="cpu")
        peft_model.eval()
        runs = [("lora_merged", torch.float32, True, "dense"), ("lora_unmerged", torch.float32, False, "dense")]
        if int4_fits("cpu"):
            runs.append(("lora_int4_unmerged", torch.bfloat16, False, "int4"))
        for name, dtype, merge, weights in runs:
            try:
                eng = DecodeEngine.from_model(peft_model, dtype=dtype, merge=merge, weights=weights)
            except Unsupported as e:
                res[name] = f"not run: {e}"
                continue
            r = per_prompt(lambda p, k: (lambda o: (o[0][0], o[1], o[2]))(_engine_time(eng, [p], k)))
            res[name] = {**{k: v for k, v in r.items() if k != "tokens"}, "validation_ppl": _ppl(eng, texts)}
    res["llama_cpp"] = _llama_cpp(args.gguf, prompts, n)
    print(json.dumps(res, indent=2))


def _bandwidth() -> float:
    """GB/s of a plain sum over 256 MB (fp32): the memory ceiling the weights are read against."""
    big = torch.ones(64 * 2**20)
    big.sum()
    t0 = time.perf_counter()
    for _ in range(10):
        big.sum()
    return round(big.numel() * 4 * 10 / (time.perf_counter() - t0) / 1e9, 1)


def _weight_bytes(w) -> int:
    """Bytes of weights one decode step reads: every block matrix and the head (int4 codes and their
    scales, int8 one byte a weight, else the dense tensor); the embedding row is negligible."""
    n = 0
    for p in [m for b in w.blocks for m in (b.qkv, b.o, b.gate_up, b.down)] + [w.head]:
        if p.int4 is not None:
            n += p.int4.nbytes
        elif p.packed is not None:
            n += torch.ops.quantized.linear_unpack(p.packed)[0].numel()
        else:
            n += p.w.numel() * p.w.element_size()
        n += sum(lo.at.numel() * lo.at.element_size() + lo.bt.numel() * lo.bt.element_size() for lo in p.loras)
    return n


def _validation_texts(tok, path: str = "examples/data/tunebot/validation.jsonl") -> list[list[int]]:
    """The quickstart's validation conversations as token ids (the model's chat template)."""
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    return [list(tok.apply_chat_template(r["messages"], return_dict=True)["input_ids"]) for r in rows]


def _ppl(eng, texts: list[list[int]]) -> float:
    """exp(mean next-token NLL) over every token of the texts, teacher-forced on the engine."""
    nll, n = 0.0, 0
    for ids in texts:
        logits = eng.logits(ids)[:-1].float()
        nll += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
        n += len(ids) - 1
    return round(float(torch.exp(torch.tensor(nll / n))), 4)


def _llama_cpp(gguf: str | None, prompts: list[list[int]], n: int) -> dict | str:
    try:
        import llama_cpp
    except ImportError:
        return "not installed (pip install llama-cpp-python builds it from source, ~13 min here)"
    if not gguf:
        return "pass --gguf FILE (tunelab export RUN --to gguf)"
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=2048, n_threads=torch.get_num_threads(), verbose=False)
    first = total = 0.0
    for p in prompts:
        llm.reset()
        t0 = time.perf_counter()
        k = 0
        for _ in llm.generate(p, top_k=1, temp=0.0):
            k += 1
            if k == 1:
                first += time.perf_counter() - t0
            if k == n:
                break
        total += time.perf_counter() - t0
    return _rates(sum(map(len, prompts)) / len(prompts), n, 1, first / len(prompts), total / len(prompts))


if __name__ == "__main__":
    main()
