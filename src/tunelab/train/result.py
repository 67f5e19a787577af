"""What a training run reports: `TrainResult` (steps, time, tokens, validation history) and `Progress`
(the live bar). Tokens/s has one definition, `TrainResult.tokens_per_s`: the tokens this process's
steps trained on over this process's training time; the bar, metrics.jsonl and the summary show it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainResult:
    steps: int = 0  # the run's optimizer steps, those before a resume included
    train_seconds: float = 0.0  # wall time of this process's training (steps, validation, checkpoints)
    trained_tokens: int = 0  # the run's, those before a resume included
    steps_run: int = 0  # the steps this process trained (= steps unless resumed)
    tokens_run: int = 0  # the tokens this process's steps trained on
    best_val: float = float("nan")
    best_epoch: int = -1
    val_history: list = field(default_factory=list)  # (epoch, val_nll)
    stopped_early: str | None = None
    resumed_from: int | None = None  # the step a resumed run continued from
    peak_rss_mb: float = 0.0  # peak resident memory (MiB) while training (runtime/allocator.py: peak_rss_mb)

    @property
    def tokens_per_s(self) -> float:
        """The one tokens/s: tokens this process trained / this process's training time (the progress
        bar, metrics.jsonl and the summary all show it; a resumed run counts only its own steps)."""
        return self.tokens_run / self.train_seconds if self.train_seconds else 0.0

    def speed_line(self) -> str:
        """"30 steps, 41s, 812 trained tokens/s" (+ where a resumed run started), for summaries."""
        line = f"{self.steps_run} steps, {self.train_seconds:.0f}s, {self.tokens_per_s:,.0f} trained tokens/s"
        if self.resumed_from:
            line += f" (resumed at step {self.resumed_from}: {self.steps} steps in all)"
        return line


class Progress:
    """A rich progress bar showing loss, lr, tokens/s and ETA (or nothing when quiet)."""

    def __init__(self, total: int, quiet: bool, done: int = 0):
        self.quiet = quiet
        if quiet:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RP

        self.p = RP(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TextColumn("eta"), TimeRemainingColumn())
        self.p.start()
        self.task = self.p.add_task("train", total=total, info="", completed=done)

    def update(self, info: str, advance: int = 1) -> None:
        if not self.quiet:
            self.p.update(self.task, advance=advance, info=info)

    def close(self) -> None:
        if not self.quiet:
            self.p.stop()
