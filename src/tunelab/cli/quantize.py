"""`tunelab quantize`: post-training quantization to a packed checkpoint, and a per-format report.

    tunelab quantize MODEL --format nf4 [--double-quant] [--skip lm_head] [--calibrate mse] --out DIR
    tunelab quantize run MODEL ...            (the same, spelled out)
    tunelab quantize inspect MODEL --eval FILE_OR_DIR [--formats bf16,int8,nf4,...] [--out DIR]

`quantize` is a group whose default command is `run`: a first argument that is not a sub-command
name (`run`, `inspect`) is taken as MODEL. A model folder literally named `inspect` or `run` must be
written `./inspect`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperGroup


class _DefaultRunGroup(TyperGroup):
    """A group that treats `quantize MODEL ...` as `quantize run MODEL ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_DefaultRunGroup, no_args_is_help=True,
                  help="Quantize a model to a packed checkpoint (`tunelab quantize MODEL --format nf4 --out DIR`, "
                       "same as `quantize run`), or compare formats (`quantize inspect`).")


def _skip_list(skip: Optional[List[str]]) -> tuple[str, ...]:
    return tuple(skip) if skip else ("lm_head",)


def _quantized(model: str, fmt: str, double_quant: bool, skip: tuple[str, ...], blocksize: int,
               calibrate: str | None, rest_dtype):
    """(quantized model, tokenizer): streamed from a local safetensors folder (one weight in memory at a
    time, `ptq.stream_quantize`), else loaded whole in fp32 and quantized (a hub id, a .bin checkpoint)."""
    from tunelab.models.load import load_causal_lm, load_tokenizer
    from tunelab.models.registry import resolve
    from tunelab.quant import ptq
    from tunelab.quant.stream_load import is_streamable

    rm = resolve(model)
    if rm.source != "hub" and is_streamable(rm.path):
        return ptq.stream_quantize(rm.path, fmt, double_quant, skip, blocksize, calibrate, rest_dtype), load_tokenizer(rm)
    m, tok, _ = load_causal_lm(model, dtype="fp32", device="cpu")
    return ptq.quantize(m, fmt, double_quant, skip, blocksize, calibrate, rest_dtype), tok


@app.command("run")
def run_cmd(
    model: str = typer.Argument(..., help="Model alias, local folder or .gguf."),
    fmt: str = typer.Option(..., "--format", "-f", help="nf4 | fp4 | int4 | int8 | ternary"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created)."),
    double_quant: bool = typer.Option(False, "--double-quant", help="8-bit absmax constants (nf4/fp4/int4): 4.5 -> 4.127 bits/param."),
    skip: Optional[List[str]] = typer.Option(None, "--skip", help="Layer name (or name component) to keep in full precision; repeatable. Default: lm_head."),
    calibrate: Optional[str] = typer.Option(None, "--calibrate", help="int8 clipping per row: minmax | percentile | mse."),
    blocksize: int = typer.Option(64, "--blocksize", help="Weights per absmax constant (4-bit formats)."),
    rest_dtype: str = typer.Option("bf16", "--rest-dtype", help="dtype of the tensors left unquantized: bf16 | fp32 | fp16."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
):
    """Quantize every Linear layer of MODEL and save a packed safetensors checkpoint + manifest.json."""
    from tunelab.models.load import DTYPES
    from tunelab.quant import ptq
    from tunelab.runs.kinds import refuse_run

    refuse_run(model, "quantize")
    ptq.check_options(fmt, rest_dtype, blocksize, out, where=("--format", "--rest-dtype", "--blocksize", "--out"))
    m, tok = _quantized(model, fmt, double_quant, _skip_list(skip), blocksize, calibrate, DTYPES[rest_dtype])
    manifest = ptq.save(m, out, tok, source=model,
                        extra={"format": fmt, "double_quant": double_quant, "skip": list(_skip_list(skip)),
                               "calibrate": calibrate, "blocksize": blocksize, "rest_dtype": rest_dtype})
    if as_json:
        typer.echo(json.dumps({k: v for k, v in manifest.items() if k != "layers"}, indent=1))
        return
    typer.echo(f"{model} -> {out}: {len(manifest['layers'])} Linear layers in {fmt}"
               f"{' + double quant' if double_quant else ''}, {manifest['bits_per_quantized_param']:.3f} bits/param, "
               f"{manifest['bytes_on_disk'] / 1e6:.1f} MB on disk")
    typer.echo(f"reload: tunelab.quant.load('{out}')")


@app.command("inspect")
def inspect_cmd(
    model: str = typer.Argument(..., help="Model alias, local folder or .gguf."),
    eval_path: Path = typer.Option(..., "--eval", help="Held-out text: a file, or a folder of .txt/.md/.rst."),
    formats: str = typer.Option(",".join(("fp32", "bf16", "fp16", "int8", "nf4", "nf4+dq", "fp4", "fp4+dq", "int4", "ternary")),
                                "--formats", help="Comma-separated formats (+dq = double quantization)."),
    skip: Optional[List[str]] = typer.Option(None, "--skip", help="Layers kept in full precision (default lm_head)."),
    seq_len: int = typer.Option(256, "--seq-len", help="Tokens per perplexity window."),
    max_tokens: int = typer.Option(4096, "--max-tokens", help="Held-out tokens scored."),
    max_chars: int = typer.Option(200_000, "--max-chars", help="Characters read from --eval."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write report.md, report.json and report.png here."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Per-format table: bits/param, weight MSE, SQNR, size, held-out perplexity and delta to bf16."""
    from tunelab.models.load import load_causal_lm
    from tunelab.eval import quantization
    from tunelab.runs.kinds import refuse_run

    refuse_run(model, "quantize inspect")
    specs = [s.strip() for s in formats.split(",") if s.strip()]
    for s in specs:
        quantization.parse_format(s)
    text = quantization.load_eval_text(eval_path, max_chars)
    m, tok, _ = load_causal_lm(model, dtype="fp32", device="cpu")
    log = None if as_json else (lambda r: typer.echo(
        f"  {r.format:8s} {r.bits_per_param:6.3f} bits  SQNR {r.sqnr_db:5.1f} dB  ppl {r.perplexity:10.3f}  ({r.seconds:.0f} s)"))
    rows = quantization.inspect_model(m, tok, text, specs, _skip_list(skip), seq_len, max_tokens, log=log)
    title = f"{model} on {eval_path.name} ({min(max_tokens, 10**9)} tokens max, windows of {seq_len})"
    md = quantization.to_markdown(rows, title)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(md)
        (out / "report.json").write_text(json.dumps(quantization.rows_as_dicts(rows), indent=1) + "\n")
        quantization.plot(rows, out / "report.png", title=model)
    if as_json:
        typer.echo(json.dumps(quantization.rows_as_dicts(rows), indent=1))
    else:
        typer.echo(md)
        if out is not None:
            typer.echo(f"wrote {out / 'report.md'}, {out / 'report.png'}")
