"""The exported GGUF files run by llama.cpp itself (llama-cpp-python) vs the merged transformers model;
prints JSON. Needs `llama_cpp` importable next to tunelab (pip install llama-cpp-python builds it).

    tunelab merge runs/quickstart --out /tmp/qs-merged
    python benchmarks/export_parity.py /tmp/qs-merged --out-dir /tmp/qs-gguf      # the .gguf files
    python benchmarks/export_llama_cpp.py runs/quickstart /tmp/qs-merged --gguf-dir /tmp/qs-gguf

Per file (and for the run's base as f16 + its LoRA adapter through `--lora`, the way llama.cpp
applies `tunelab export --to lora-gguf`), on the fixed prompts of export_parity.py:

  tokenize_same      prompts llama.cpp tokenizes (special tokens on, no BOS added) to transformers' ids
  last_logits_max    max |logit| difference at the last prompt position, llama.cpp vs transformers fp32
  last_argmax_same   prompts with the same next token there
  gen_same           prompts whose greedy continuation (32 tokens or up to EOS) is identical
  gen_common_prefix  per prompt, how many leading generated tokens agree
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_parity import PROMPTS


def reference(merged: Path, n_new: int = 32) -> dict:
    """Prompt texts/ids, transformers' greedy continuations and last-position logits (fp32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.data.templates import Template

    tok = AutoTokenizer.from_pretrained(str(merged))
    template = Template.load(merged / "tunelab_template.json")
    texts = [template.prompt_text([{"role": "user", "content": p}]) for p in PROMPTS]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    eos = tok.eos_token_id
    gen, last = [], []
    for i in ids:
        x = torch.tensor([i])
        gen.append(model.generate(x, max_new_tokens=n_new, do_sample=False, eos_token_id=eos,
                                  pad_token_id=eos)[0, len(i):].tolist())
        with torch.no_grad():
            last.append(model(input_ids=x).logits[0, -1].numpy())
    return {"texts": texts, "ids": ids, "gen": gen, "last": np.stack(last)}


def run_llama(ref: dict, model: Path, lora: Path | None = None, n_new: int = 32) -> dict:
    import llama_cpp

    kw = {"lora_path": str(lora)} if lora else {}
    llm = llama_cpp.Llama(model_path=str(model), n_ctx=512, logits_all=True, verbose=False, **kw)
    eos = llm.token_eos()
    tok_same, gen, last = 0, [], []
    for text, ids in zip(ref["texts"], ref["ids"]):
        tok_same += llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        llm.reset()
        llm.eval(ids)
        last.append(np.array(llm.scores[len(ids) - 1]))
        g = []
        for t in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            g.append(t)
            if t == eos or len(g) == n_new:
                break
        gen.append(g)
    last = np.stack(last)
    prefix = [next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
              for a, b in zip(gen, ref["gen"])]
    return {"tokenize_same": f"{tok_same}/{len(gen)}",
            "last_logits_max": round(float(np.abs(last - ref["last"]).max()), 4),
            "last_argmax_same": f"{int((last.argmax(1) == ref['last'].argmax(1)).sum())}/{len(gen)}",
            "gen_same": f"{sum(a == b for a, b in zip(gen, ref['gen']))}/{len(gen)}",
            "gen_common_prefix": prefix}


def main() -> None:
    from tunelab.export.gguf import write_gguf
    from tunelab.export.lora_gguf import write_lora_gguf
    from tunelab.models.registry import resolve
    from tunelab.runs.load import load_run

    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("merged", type=Path, help="`tunelab merge RUN` output")
    ap.add_argument("--gguf-dir", type=Path, required=True, help="where export_parity.py wrote <merged>-<quant>.gguf")
    ap.add_argument("--quants", nargs="*", default=["f32", "f16", "q8_0", "q4_0"])
    args = ap.parse_args()
    ref = reference(args.merged)
    out = {}
    for q in args.quants:
        out[q] = run_llama(ref, args.gguf_dir / f"{args.merged.name}-{q}.gguf")
        print(q, json.dumps(out[q]), flush=True)
    _, cfg = load_run(args.run)
    base = write_gguf(resolve(cfg["model"]["name"]).path, args.gguf_dir / "base-f16.gguf", "f16").path
    lora = write_lora_gguf(args.run, args.gguf_dir / f"{args.run.name}-lora.gguf").path
    out["base f16 + lora"] = run_llama(ref, base, lora)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
