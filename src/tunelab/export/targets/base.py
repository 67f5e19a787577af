"""What every export target is: a name, its quants, a default quant, a default folder, a writer, a result.

A target is one `Target` subclass in its own module of export/targets/, listed once in
export/targets/__init__.py (REGISTRY). `export_run` (export/bundle.py) calls, in order:

    quant = target.check_quant(quant)              the quant, or a one-line TunelabError naming the choices
    out   = out or target.default_folder(run, quant)
    job   = Export(run, cfg, quant, out, ...)
    res   = target.start(job)                      cheap refusals (before any merging); the empty result
    target.check_only(job, res)                    (--check) verify without writing, else
    target.write(job, res)                         write `out` (a hidden sibling renamed when complete)

and each target's result (an `ExportResult` subclass) says what it wrote: `summary()` the lines
printed before the file list, `usage()` the command lines printed after it, `details()` the
target's own fields for the Studio's JSON, `checked_text()` what `--check` shows.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.export.staging import publish, staging


@dataclass
class Export:
    """One export's inputs: the finished run (RunDir) and its config dict, the checked quant, the folder
    to write, and the options (`overwrite` a non-empty folder; ollama's PARAMETER `temperature`)."""

    run: object
    cfg: dict
    quant: str
    out: Path
    overwrite: bool = False
    temperature: float = 0.0


@dataclass
class ExportResult:
    """What an export wrote: the target, the folder, the quant, every file in it as (path, bytes), and
    warnings worth printing. Targets subclass it with their own fields (GGUF info, merge result, ...)."""

    to: str
    out: Path  # the folder written
    quant: str
    files: list[tuple[Path, int]] = field(default_factory=list)  # (path, bytes) of every file in `out`
    notes: list[str] = field(default_factory=list)  # warnings worth printing

    def summary(self) -> list[str]:
        """Plain-text lines about what was made, printed before the file list."""
        return []

    def usage(self) -> list[str]:
        """Plain-text lines saying how to use what was written, printed after the file list."""
        return []

    def details(self) -> dict:
        """The target's own JSON-safe fields, added to the Studio's answer."""
        return {}

    def checked_text(self) -> str:
        """What `--check` shows (ollama: the Modelfile); "" for targets without `can_check`."""
        return ""


def listing(out: Path) -> list[tuple[Path, int]]:
    """(path, bytes) of every file under `out`, sorted."""
    return [(p, p.stat().st_size) for p in sorted(out.rglob("*")) if p.is_file()]


class Target:
    """One export target. Subclasses set the class attributes and implement `write_into` (or `write`).

    Attributes:
        name: the `--to` value.
        label: the Studio's button text.
        about: what it writes, in a few words (the CLI's help).
        quants: the `--quant` values this target accepts; `default_quant` is one of them.
        studio: offered by the Studio's Export buttons.
        push_as: the `tunelab push --what` value that uploads this target's folder (None: not pushable).
        quant_hint: the hint of a refused `--quant` (default: "one of: <quants>").
        can_check: `--check` applies (verify without writing).
    """

    name: str = ""
    label: str = ""
    about: str = ""
    quants: tuple[str, ...] = ()
    default_quant: str = ""
    studio: bool = False
    push_as: str | None = None
    quant_hint: str | None = None
    can_check: bool = False
    result_type: type[ExportResult] = ExportResult

    def check_quant(self, quant: str | None) -> str:
        """`quant`, or `default_quant` when None. Raises TunelabError (one line naming the choices)
        for a quant this target does not write."""
        if quant is None:
            return self.default_quant
        if quant not in self.quants:
            raise TunelabError(f"--quant {quant} does not apply to --to {self.name}", where="--quant",
                               hint=self.quant_hint or f"one of: {', '.join(self.quants)}")
        return quant

    def default_folder(self, run: Path, quant: str) -> Path:
        """RUN/export/<name>-<quant>."""
        from tunelab.runs.rundir import RunDir

        return RunDir(run).export_dir / f"{self.name}-{quant}"

    def start(self, job: Export) -> ExportResult:
        """Refuse what can be refused cheaply (before any merging) and return the empty result."""
        return self.result_type(self.name, job.out, job.quant)

    def check_only(self, job: Export, res: ExportResult) -> ExportResult:
        """`--check`: verify without writing (targets with `can_check`)."""
        raise NotImplementedError

    def write(self, job: Export, res: ExportResult) -> ExportResult:
        """Write `job.out`: into a hidden sibling (`staging`) by `write_into`, renamed to `out` when
        complete (`publish`); on any failure the sibling is removed and a previous `out` is kept."""
        tmp = staging(job.out)
        try:
            self.write_into(job, res, tmp)
            publish(tmp, job.out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.published(res)
        res.files = listing(job.out)
        return res

    def write_into(self, job: Export, res: ExportResult, tmp: Path) -> None:
        """Write the export's files into the empty folder `tmp`, filling `res`."""
        raise NotImplementedError

    def published(self, res: ExportResult) -> None:
        """Fix up `res` once the folder has its final name (paths recorded while writing into tmp)."""
