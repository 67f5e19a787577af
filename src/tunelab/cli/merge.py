"""`tunelab merge RUN --out DIR` and `tunelab memory MODEL --method ...`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tunelab.cli.app import app
from tunelab.config import MethodConfig


@app.command("merge")
def merge_cmd(
    run: Path = typer.Argument(..., help="A finished run folder (runs/<name>)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the merged model (plain transformers)."),
    dtype: str = typer.Option("fp32", "--dtype", help="Weights dtype of the export: fp32 | bf16 | fp16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
) -> None:
    """Merge a LoRA/QLoRA adapter into its base (QLoRA: dequantized first) and save a model that loads
    with AutoModelForCausalLM.from_pretrained(DIR), without tunelab."""
    from tunelab.export.merge import merge_run
    from tunelab.methods import Merge, method_of
    from tunelab.runs.kinds import GENERATIVE_TASKS, require_run

    require_run(run, GENERATIVE_TASKS, "merge")
    c = Console()
    res = merge_run(run, out, dtype=dtype, overwrite=overwrite)
    how = {Merge.DEQUANTIZED_ADAPTER: f"{res.dequantized} NF4 layers dequantized, then {res.merged} adapters merged",
           Merge.ADAPTER: f"{res.merged} adapters merged"}.get(method_of(res.method).merge, "whole model exported")
    c.print(f"{res.method} run -> {how}; {res.params:,} params in {res.dtype}")
    c.print(f"saved to [bold]{res.out}[/bold] (AutoModelForCausalLM.from_pretrained loads it)")


def _autocast(precision: str, device: str) -> bool:
    """Would training use bf16 autocast on `device` (auto: the detected one) at this precision?"""
    if precision != "auto":
        return precision == "bf16"
    import torch

    from tunelab.runtime.precision import autocast_dtype

    dev = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    return autocast_dtype("auto", torch.device(dev)) is not None


def _gb(n: float) -> str:
    """Binary units: GiB from 1 GiB up, else MiB."""
    return f"{n / 1024**3:,.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:,.1f} MiB"


def _grpo_memory(path: str) -> None:
    """`tunelab memory <config.yaml>` for a task-grpo config: memory/grpo.py's terms and the process peak."""
    from tunelab.config import load_config
    from tunelab.errors import TunelabError
    from tunelab.memory.grpo import estimate_grpo
    from tunelab.train.grpo_config import grpo_settings

    cfg = load_config(path)
    if cfg.task != "grpo":
        raise TunelabError(f"a config of task {cfg.task}: give its model instead", where="MODEL",
                           hint="tunelab memory <model> --batch B --seq S (a config is read for task grpo)")
    g = grpo_settings(cfg.grpo)
    m = estimate_grpo(cfg, g.num_generations, g.prompts_per_step, g.max_completion_length)
    t = Table(title=f"{cfg.model.name}: grpo, {cfg.method.name}, N = G x P = {m.rows} rows of "
                    f"{m.prompt_tokens} + {m.completion_tokens} tokens")
    for col in ("component", "memory", "how"):
        t.add_column(col, justify="right" if col == "memory" else "left")
    for name, n, how in m.parts:
        t.add_row(name, _gb(n), how)
    t.add_row("[bold]peak[/bold]", f"[bold]{_gb(m.total)}[/bold]", "resident + engine copy + max(training step, KV cache)")
    c = Console()
    c.print(t)
    c.print(f"process peak: {_gb(m.rss)} = tensors {_gb(m.total)} + {_gb(m.policy.process)} for the interpreter "
            f"and libraries (what RSS shows)")


@app.command("memory")
def memory_cmd(
    model: str = typer.Argument(..., help="Alias, model folder or config.json (weights are not loaded)."),
    method: str = typer.Option("lora", "--method", help="full | lora | qlora"),
    batch: int = typer.Option(1, "--batch", help="Sequences per step (B)."),
    seq: int = typer.Option(512, "--seq", help="Tokens per sequence (S)."),
    grad_checkpointing: bool = typer.Option(False, "--grad-checkpointing", help="Recompute blocks in backward."),
    r: int = typer.Option(16, "--r", help="LoRA rank."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw | adamw8bit"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda: the memory compared with."),
    layers: str = typer.Option(str(MethodConfig.model_fields["layers"].default), "--layers",
                               help="lora/qlora: adapt the last N blocks, or 'all' (tunelab train's default: "
                                    "method.layers)."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimizer step."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto | fp32 | bf16: as train.precision (auto: bf16 autocast on CUDA and "
                                       "AVX-512-BF16 CPUs, else fp32)."),
) -> None:
    """Estimate training memory from the model's config (computed, not measured)."""
    from tunelab.errors import TunelabError
    from tunelab.memory.estimator import estimate
    from tunelab.runs.kinds import refuse_run

    if model.endswith((".yaml", ".yml")):  # a run config: task grpo is estimated as a whole run
        return _grpo_memory(model)
    refuse_run(model, "memory")
    if layers != "all" and not (layers.isdigit() and int(layers) >= 1):
        raise TunelabError(f"--layers {layers!r} is not 'all' or a number >= 1", where="--layers",
                           hint="e.g. --layers 8 or --layers all")
    if precision not in ("auto", "fp32", "bf16"):
        raise TunelabError(f"--precision {precision!r} is not auto, fp32 or bf16", where="--precision")
    e = estimate(model, method, batch, seq, grad_checkpointing, r, optimizer, device,
                 layers=layers if layers == "all" else int(layers), grad_accum=grad_accum,
                 autocast=_autocast(precision, device))
    c = Console()
    t = Table(title=f"{e.model}: {e.method}, B={e.batch} S={e.seq}"
                    f"{' grad-checkpointing' if e.grad_checkpointing else ''}, {e.optimizer}, {e.device}")
    t.add_column("component")
    t.add_column("memory", justify="right")
    t.add_column("how")
    for name, n, how in e.rows:
        t.add_row(name, _gb(n), how)
    t.add_row("[bold]peak[/bold]", f"[bold]{_gb(e.total)}[/bold]",
              f"resident + max(forward {_gb(e.forward_phase)}, update {_gb(e.update_phase)})"
              if e.grad_accum == 1 else f"resident + forward {_gb(e.forward_phase)} + update {_gb(e.update_phase)}"
              f" (gradients accumulate)")
    c.print(t)
    c.print(f"{e.params:,} params, {e.trainable:,} trainable")
    c.print(e.block_text)
    c.print(f"per param (no activations): {e.bytes_per_param_text}")
    if e.process:
        c.print(f"process peak: {_gb(e.rss)} = tensors {_gb(e.total)} + {_gb(e.process)} for the interpreter and "
                f"libraries (what RSS shows)")
    if e.available is None:
        c.print(f"{e.device} memory: unknown")
    else:
        verdict = "[green]fits[/green]" if e.fits else "[red]does not fit[/red]"
        c.print(f"{e.device}: {_gb(e.available)} available of {_gb(e.device_total or 0)} -> {verdict} "
                f"({e.rss / e.available:.0%} of available)")
        from tunelab.memory.ladder import largest_fitting

        best = largest_fitting(e.available, batch=batch, seq=seq, grad_checkpointing=grad_checkpointing, r=r,
                               optimizer=optimizer, device=e.device, autocast=_autocast(precision, device),
                               layers=layers if layers == "all" else int(layers), grad_accum=grad_accum)
        c.print(f"largest that fits in {_gb(e.available)} at these settings: "
                + ", ".join(f"{m} {label or 'none'}" for m, label in best.items()))
