"""`tunelab train CONFIG [key=value ...]` and `tunelab quickstart`."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tunelab.cli.main import app
from tunelab.config import load_config
from tunelab.errors import TunelabError


def examples_dir() -> Path:
    """examples/ in the current folder, else next to the source tree (an editable install)."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (base / "examples" / "configs").is_dir():
            return base / "examples"
    raise TunelabError("cannot find the examples/ folder", hint="run from the tunelab repository root")


def _train(config: Path, overrides: list[str], overwrite: bool, quiet: bool, resume: bool = False):
    from tunelab.train.recipes import run_task

    cfg = load_config(config, overrides)
    if overwrite:
        cfg.output.overwrite = True
    if resume:
        cfg.train.resume = "yes"
    console = Console(stderr=True, quiet=quiet)
    out = run_task(cfg, quiet=quiet, console=console)
    return cfg, out


def _summary(cfg, out) -> None:
    c = Console()
    if cfg.task != "sft":
        for line in out.summary_lines():
            c.print(line)
        return
    if out.samples:
        t = Table(title="held-out prompts: base vs tuned", show_lines=True)
        t.add_column("prompt", ratio=2)
        t.add_column("base", ratio=3)
        t.add_column("tuned", ratio=3)
        for s in out.samples:
            t.add_row(s["prompt"], s["base"], s["tuned"])
        c.print(t)
    from tunelab.runs.report import suffix_rate

    suffix = cfg.eval.expect_suffix
    if suffix and out.samples:
        b = suffix_rate([s["base"] for s in out.samples], suffix)
        a = suffix_rate([s["tuned"] for s in out.samples], suffix)
        c.print(f"replies ending with {suffix!r}: base {b:.0%} -> tuned {a:.0%}")
    if not math.isnan(out.val_before):
        c.print(f"validation loss (reply tokens): base {out.val_before:.3f} -> tuned {out.val_after:.3f}")
    r = out.result
    c.print(f"{r.steps} steps, {r.train_seconds:.0f}s, {r.tokens_per_s:,.0f} trained tokens/s")
    c.print(f"run saved to [bold]{out.run_dir}[/bold] (report.md, loss.png, adapter/)")


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="YAML run config (see examples/configs/)."),
    overrides: list[str] = typer.Argument(None, help="key.sub=value overrides, e.g. train.lr=1e-4"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run of the same name."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or status lines."),
    resume: bool = typer.Option(False, "--resume", help="Continue an unfinished run from its last checkpoint."),
) -> None:
    """Fine-tune a model as described by CONFIG; writes runs/<name>/."""
    cfg, out = _train(config, overrides or [], overwrite, quiet, resume)
    _summary(cfg, out)


@app.command("quickstart")
def quickstart_cmd(
    overrides: list[str] = typer.Argument(None, help="key.sub=value overrides for the quickstart config"),
    overwrite: bool = typer.Option(True, "--overwrite/--keep", help="Replace runs/quickstart if it exists."),
) -> None:
    """LoRA-tune the embedded SmolLM2-135M-Instruct into the TuneBot persona, then compare base vs tuned."""
    config = examples_dir() / "configs" / "quickstart.yaml"
    cfg, out = _train(config, overrides or [], overwrite, quiet=False)
    _summary(cfg, out)
