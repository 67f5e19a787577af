"""`tunelab train CONFIG [key=value ...]` and `tunelab quickstart`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tunelab.cli.app import app
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
    try:
        return run_task(cfg, quiet=quiet, console=console)
    except KeyboardInterrupt as e:  # Ctrl-C: one line (what is saved, how to go on), exit 130 as shells expect
        print(_interrupted_line(e, cfg), file=sys.stderr)
        raise SystemExit(130) from None


def _interrupted_line(e: KeyboardInterrupt, cfg) -> str:
    """The engine's line (`Interrupted`: a checkpoint was just saved), or, for a Ctrl-C anywhere else
    (loading, a second Ctrl-C during the save, the final evaluation), what is on disk now."""
    from tunelab.errors import Interrupted
    from tunelab.runs.rundir import RunDir
    from tunelab.train.recipes._common import interrupted

    return str(e) if isinstance(e, Interrupted) else str(interrupted(RunDir(cfg.run_dir())))


def _summary(out) -> None:
    """What every task's outcome has to say: its table of samples (if any), then its summary lines."""
    c = Console()
    table = out.samples_table()
    if table is not None:
        title, rows = table
        t = Table(title=title, show_lines=True)
        t.add_column("prompt", ratio=2)
        t.add_column("base", ratio=3)
        t.add_column("tuned", ratio=3)
        for row in rows:
            t.add_row(*row)
        c.print(t)
    for line in out.summary_lines():
        c.print(line)


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="YAML run config (see examples/configs/)."),
    overrides: list[str] = typer.Argument(None, help="key.sub=value overrides, e.g. train.lr=1e-4"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run of the same name."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or status lines."),
    resume: bool = typer.Option(False, "--resume", help="Continue an unfinished run from its last checkpoint."),
    nproc: int = typer.Option(1, "--nproc", min=1,
                              help="Train on N local processes (torch.distributed: gloo on CPU, nccl on CUDA, "
                                   "one GPU each); see docs/distributed.md."),
) -> None:
    """Fine-tune a model as described by CONFIG; writes runs/<name>/."""
    from tunelab.train import distributed

    if nproc > 1 and distributed.world_size() == 1:  # the launcher: N copies of this command, without --nproc
        argv = ["train", str(config), *(overrides or [])]
        argv += [flag for flag, on in (("--overwrite", overwrite), ("--quiet", quiet), ("--resume", resume)) if on]
        code = distributed.launch_local(nproc, (["--debug"] if "--debug" in sys.argv else []) + argv)
        raise typer.Exit(code)
    distributed.die_with_launcher()
    out = _train(config, overrides or [], overwrite, quiet, resume)
    if distributed.is_main():
        _summary(out)


@app.command("quickstart")
def quickstart_cmd(
    overrides: list[str] = typer.Argument(None, help="key.sub=value overrides for the quickstart config"),
    overwrite: bool = typer.Option(True, "--overwrite/--keep", help="Replace runs/quickstart if it exists."),
) -> None:
    """LoRA-tune the embedded SmolLM2-135M-Instruct into the TuneBot persona, then compare base vs tuned."""
    config = examples_dir() / "configs" / "quickstart.yaml"
    out = _train(config, overrides or [], overwrite, quiet=False)
    _summary(out)
