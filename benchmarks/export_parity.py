"""GGUF export parity on a merged run: every quant vs the merged transformers model; prints JSON.

    tunelab merge runs/quickstart --out /tmp/qs-merged
    python benchmarks/export_parity.py /tmp/qs-merged --out-dir /tmp/qs-gguf

For each quant, `tunelab.export.gguf.write_gguf` writes the file, transformers' GGUF loader reads
it back (dequantized to fp32), and both models run in fp32 on the CPU:

  size_mb            the .gguf file size (10^6 bytes)
  logits_max_abs     max |logit_gguf - logit_hf| over every position of the fixed prompts
                     (PROMPTS, rendered with the run's template + generation prompt)
  greedy_agree       share of those positions where argmax (the greedy next token) is the same
  last_token_agree   prompts whose next token after the generation prompt is the same
  val_ppl            validation perplexity on the reply tokens (the training's validation metric:
                     tunelab.losses.reply_nll over the run's template segments) of --val
  val_ppl_rel        val_ppl / merged val_ppl - 1
  format_ppl         the same perplexity of the merged model with each weight rounded through the
                     quant's encoder and decoder in place (gguf.quants, the type `choose_type`
                     picks): what the format alone costs; val_ppl equal to it = the export adds nothing
  tokenizer_same     validation conversations the reloaded GGUF tokenizer encodes to the same ids
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

PROMPTS = [
    "Great video, but how do I pick the learning rate for LoRA?",
    "What is the difference between perplexity and loss?",
    "The audio was too quiet in the second half.",
    "Can you do a video on quantization to 4 bits?",
]


def _messages(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def _reply_ppl(model, template, tok, convs: list[list[dict]]) -> float:
    from tunelab.data.tokenize import TokenizedExample, encode_segments
    from tunelab.losses import reply_nll

    examples = [TokenizedExample(*encode_segments(tok, template.segments(c))) for c in convs]
    return math.exp(reply_nll(model, examples, tok.pad_token_id or 0, batch_size=4))


def format_ppl(merged: Path, quant: str, template, tok, convs) -> float:
    """Reply perplexity of the merged model with its weights rounded through `quant` in place (each tensor's
    type from the quant's rules, `choose_type`; its encoder and gguf-py's decoder, export/gguf_quants.py)."""
    from transformers import AutoModelForCausalLM

    from tunelab.export.gguf import arch_of, choose_type, read_config, tensor_name_map
    from tunelab.export.gguf_quants import decode, encode, gguf_quant
    from tunelab.export.gguf_tensors import Bound

    cfg = read_config(merged)
    tied = bool(cfg.get("tie_word_embeddings"))
    n_layers = cfg["num_hidden_layers"]
    names = tensor_name_map(arch_of(cfg), n_layers)
    bound = Bound(gguf_quant(quant), n_layers)
    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied: lm_head is embed_tokens, listed once
            qtype, _ = choose_type(names.get_name(name, try_suffixes=(".weight", ".bias")), tuple(p.shape), bound, tied)
            a = p.detach().numpy()  # q/k rows: the file permutes them, a row-wise format rounds the same
            p.copy_(torch.from_numpy(decode(encode(a, qtype), qtype, a.shape)))
    return _reply_ppl(model, template, tok, convs)


def info_params(path: Path) -> int:
    """Weights in a GGUF file (every tensor's element count)."""
    from gguf import GGUFReader

    return sum(int(t.n_elements) for t in GGUFReader(str(path)).tensors)


def measure(merged: Path, out_dir: Path, val: Path, quants=None) -> dict:
    """The table above as {"merged": {...}, "quants": {quant: {...}}}."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.data.templates import Template
    from tunelab.export.gguf import GGUF_QUANTS, write_gguf

    quants = quants or GGUF_QUANTS
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(merged))
    tpath = merged / "tunelab_template.json"  # written by `tunelab merge`; else the tokenizer's own
    template = Template.load(tpath) if tpath.exists() else Template("auto", jinja=tok.chat_template,
                                                                       eos=tok.eos_token or "")
    convs = _messages(val)
    prompts = [tok(template.prompt_text([{"role": "user", "content": p}]), add_special_tokens=False)["input_ids"]
               for p in PROMPTS]
    hf = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    ref = [_logits(hf, ids) for ids in prompts]
    merged_ppl = _reply_ppl(hf, template, tok, convs)
    del hf
    texts = ["".join(t for t, _ in template.segments(c)) for c in convs]
    ref_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    result = {"merged": {"dir": str(merged), "val_ppl": merged_ppl, "val_conversations": len(convs),
                         "prompt_positions": sum(len(p) for p in prompts)}, "quants": {}}
    for q in quants:
        t0 = time.time()
        info = write_gguf(merged, out_dir / f"{merged.name}-{q}.gguf", q)
        export_s = time.time() - t0
        model = AutoModelForCausalLM.from_pretrained(str(out_dir), gguf_file=info.path.name,
                                                     dtype=torch.float32).eval()
        got = [_logits(model, ids) for ids in prompts]
        diff = max((a - b).abs().max().item() for a, b in zip(ref, got))
        agree = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(ref, got))
        last = sum(int(a[-1].argmax() == b[-1].argmax()) for a, b in zip(ref, got))
        ppl = _reply_ppl(model, template, tok, convs)
        gtok = AutoTokenizer.from_pretrained(str(out_dir), gguf_file=info.path.name)
        same = sum(gtok(t, add_special_tokens=False)["input_ids"] == ids for t, ids in zip(texts, ref_ids))
        result["quants"][q] = {
            "size_mb": round(info.bytes / 1e6, 1), "export_s": round(export_s, 1),
            "logits_max_abs": round(diff, 4),
            "greedy_agree": round(agree / result["merged"]["prompt_positions"], 4),
            "last_token_agree": f"{last}/{len(prompts)}",
            "val_ppl": round(ppl, 4), "val_ppl_rel": round(ppl / merged_ppl - 1, 4),
            "format_ppl": round(format_ppl(merged, q, template, tok, convs), 4),
            "tokenizer_same": f"{same}/{len(texts)}", "f16_fallback": list(info.f16_fallback),
            "types": dict(info.types), "bits_per_weight": round(8 * info.bytes / info_params(info.path), 3),
        }
        print(q, json.dumps(result["quants"][q]), flush=True)
        del model
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("merged", type=Path, help="a folder written by `tunelab merge`")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/gguf-parity"))
    ap.add_argument("--val", type=Path, default=Path("examples/data/tunebot/validation.jsonl"))
    ap.add_argument("--quants", nargs="*", default=None)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    print(json.dumps(measure(args.merged, args.out_dir, args.val, args.quants), indent=2))


if __name__ == "__main__":
    main()
