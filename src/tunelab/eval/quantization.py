"""`tunelab quantize inspect`: what each quantization format does to one model, measured.

For every format the Linear weights (all but `skip`) are quantized and dequantized; all math stays
fp32, so each row isolates the weight error. Per row:

    bits/param   stored bits per quantized weight, constants included (8 * bytes / params)
    weight MSE   mean (W - W')^2 over all quantized weights
    SQNR (dB)    10 log10( sum W^2 / sum (W - W')^2 )   (+6.02 dB per extra bit for uniform codes)
    size (MB)    quantized Linears + every other tensor in bf16 (as `tunelab quantize` saves it;
                 the fp32 row keeps everything fp32)
    perplexity   exp(mean NLL) on held-out text, windows of `seq_len` tokens (`held_out_perplexity`:
                 tunelab.losses.reply_nll with every token a target, eval.metrics.perplexity)
    delta        perplexity - perplexity(bf16)
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from tunelab.data.tokenize import TokenizedExample
from tunelab.errors import TunelabError
from tunelab.eval.metrics import perplexity
from tunelab.losses import reply_nll
from tunelab.quant.nn import QuantLinear, is_skipped, quantize_model

DEFAULT_FORMATS = ("fp32", "bf16", "fp16", "int8", "nf4", "nf4+dq", "fp4", "fp4+dq", "int4", "ternary")
CAST_FORMATS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Row:
    format: str
    bits_per_param: float
    weight_mse: float
    sqnr_db: float
    size_mb: float
    perplexity: float
    delta_vs_bf16: float = float("nan")
    seconds: float = 0.0


def parse_format(spec: str) -> tuple[str, bool]:
    """'nf4+dq' -> ('nf4', True); 'int8' -> ('int8', False)."""
    fmt, _, dq = spec.partition("+")
    valid = set(CAST_FORMATS) | {"nf4", "fp4", "int4", "int8", "ternary"}
    if fmt not in valid or dq not in ("", "dq") or (dq and fmt not in ("nf4", "fp4", "int4")):
        raise TunelabError(f"unknown format '{spec}'", where="--formats",
                           hint=f"one of: {', '.join(DEFAULT_FORMATS)} (+dq for nf4, fp4, int4)")
    return fmt, dq == "dq"


def load_eval_text(path: str | Path, max_chars: int = 200_000) -> str:
    """A text file, or every *.txt/*.md/*.rst file under a folder (sorted), up to max_chars."""
    p = Path(path).expanduser()
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".txt", ".md", ".rst"))
    else:
        raise TunelabError(f"no such file or folder: {path}", where="--eval")
    text = ""
    for f in files:
        text += f.read_text(encoding="utf-8", errors="replace") + "\n"
        if len(text) >= max_chars:
            break
    if not text.strip():
        raise TunelabError(f"no text found in {path}", where="--eval")
    return text[:max_chars]


def token_windows(tokenizer, text: str, seq_len: int = 256, max_tokens: int = 4096) -> list[TokenizedExample]:
    """Non-overlapping windows of seq_len tokens of `text` (at most max_tokens in all, a shorter
    remainder dropped), every token a target (labels = input_ids, as in pretraining blocks)."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    n = min(ids.numel(), max_tokens) // seq_len
    if n == 0:
        raise TunelabError(f"eval text has {ids.numel()} tokens, fewer than one window of {seq_len}",
                           where="--eval", hint="give more text or a smaller --seq-len")
    windows = ids[: n * seq_len].view(n, seq_len).tolist()
    return [TokenizedExample(w, list(w), f"window {i}") for i, w in enumerate(windows)]


def held_out_perplexity(model: nn.Module, windows: list[TokenizedExample], batch_size: int = 4) -> float:
    """exp(mean next-token NLL) over `windows` (every position but each window's first is scored),
    fp32, no autocast. Windows of one length need no padding, so the pad id does not matter."""
    return perplexity(reply_nll(model, windows, pad_id=0, batch_size=batch_size))


def _targets(model: nn.Module, skip) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() for n, m in model.named_modules() if isinstance(m, nn.Linear) and not is_skipped(n, skip)}


def _rest_params(model: nn.Module, skip) -> int:
    """Parameters outside the quantized Linears (embeddings, norms, skipped layers), tied ones once."""
    quantized = {id(m.weight) for n, m in model.named_modules() if isinstance(m, nn.Linear) and not is_skipped(n, skip)}
    return sum(p.numel() for p in model.parameters() if id(p) not in quantized)  # parameters() dedupes ties


def evaluate_format(base: nn.Module, spec: str, windows: list[TokenizedExample], skip=("lm_head",),
                    blocksize: int = 64) -> Row:
    """Quantize a copy of `base` (fp32) in `spec`, measure weight error, size and perplexity."""
    t0 = time.perf_counter()
    fmt, dq = parse_format(spec)
    originals = _targets(base, skip)
    params = sum(w.numel() for w in originals.values())
    model = copy.deepcopy(base)
    if fmt in CAST_FORMATS:
        for name, w in originals.items():
            model.get_submodule(name).weight.data = w.to(CAST_FORMATS[fmt]).float()
        deq = {name: model.get_submodule(name).weight.detach() for name in originals}
        bits = torch.finfo(CAST_FORMATS[fmt]).bits  # 32 or 16
        qbytes = params * bits / 8
    else:
        quantize_model(model, fmt, skip=skip, blocksize=blocksize, double_quant=dq)
        qmods = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
        deq = {name: qmods[name].dequantize_weight() for name in originals}
        qbytes = sum(m.nbytes() for m in qmods.values())
        bits = 8 * qbytes / params
    err = sum((deq[n] - w).double().pow(2).sum().item() for n, w in originals.items())
    sig = sum(w.double().pow(2).sum().item() for w in originals.values())
    rest_bytes = _rest_params(base, skip) * (4 if fmt == "fp32" else 2)
    ppl = held_out_perplexity(model, windows)
    return Row(spec, bits, err / params, 10 * math.log10(sig / err) if err > 0 else float("inf"),
               (qbytes + rest_bytes) / 1e6, ppl, seconds=time.perf_counter() - t0)


def inspect_model(model: nn.Module, tokenizer, text: str, formats=DEFAULT_FORMATS, skip=("lm_head",),
                  seq_len: int = 256, max_tokens: int = 4096, log=None) -> list[Row]:
    """One Row per format; `model` must be fp32 (it is not modified)."""
    specs = list(formats)
    for s in specs:
        parse_format(s)
    windows = token_windows(tokenizer, text, seq_len, max_tokens)
    rows = []
    for spec in specs:
        row = evaluate_format(model, spec, windows, skip)
        rows.append(row)
        if log:
            log(row)
    ref = next((r.perplexity for r in rows if r.format == "bf16"), None)
    if ref is not None:
        for r in rows:
            r.delta_vs_bf16 = r.perplexity - ref
    return rows


def to_markdown(rows: list[Row], title: str = "") -> str:
    lines = [f"### {title}", ""] if title else []
    lines += ["| format | bits/param | weight MSE | SQNR (dB) | size (MB) | perplexity | Δ vs bf16 |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.format} | {r.bits_per_param:.3f} | {r.weight_mse:.3e} | {r.sqnr_db:.1f} | "
                     f"{r.size_mb:.1f} | {r.perplexity:.3f} | {r.delta_vs_bf16:+.3f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: str | Path, title: str = "") -> Path:
    """Perplexity vs bits/param (log y), one labelled point per format."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        ax.scatter(r.bits_per_param, r.perplexity)
        ax.annotate(r.format, (r.bits_per_param, r.perplexity), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("bits / param (constants included)")
    ax.set_ylabel("held-out perplexity")
    ax.set_yscale("log")
    ax.set_title(title or "quantization formats")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def rows_as_dicts(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]
