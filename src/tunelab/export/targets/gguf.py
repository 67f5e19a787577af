"""`--to gguf`: the run merged (fp32) into a scratch folder, then one `<run>-<quant>.gguf` (`write_gguf`).

    DIR/<run>-<quant>.gguf      quants: export.gguf.GGUF_QUANTS, default f16 (llama.cpp's conversion type)

A run saved as a packed quantized model (qat, bitnet: `Saved.QUANTIZED`) is not merged: its layers are decoded
into the scratch folder (export/quantized_run.py). The ternary quants (tq1_0, tq2_0) take only such a run.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.export.gguf import GGUF_QUANTS
from tunelab.export.gguf_quants import gguf_quant
from tunelab.export.targets.base import Export, ExportResult, Target


@dataclass
class GgufResult(ExportResult):
    gguf: object | None = None  # GGUFInfo of the .gguf written

    def summary(self) -> list[str]:
        g = self.gguf
        if g is None:
            return []
        fb = f", {len(g.f16_fallback)} tensors kept in f16" if getattr(g, "f16_fallback", ()) else ""
        mix = ", ".join(f"{n} {t}" for t, n in getattr(g, "types", ()))
        return [f"GGUF {g.quant} ({g.arch}): {g.tensors} tensors{fb}" + (f" ({mix})" if mix else "")] + [
            f"note: {n}" for n in getattr(g, "notes", ())]

    def usage(self) -> list[str]:
        return [f"use: llama-cli -m {shlex.quote(str(self.gguf.path))} -cnv"] if self.gguf is not None else []


class GgufTarget(Target):
    """A merged model as one GGUF file. Subclasses add files beside it (`beside`)."""

    name = "gguf"
    label = "GGUF (llama.cpp)"
    about = "one .gguf file, for llama.cpp"
    quants = GGUF_QUANTS
    default_quant = "f16"
    studio = True
    push_as = "gguf"
    result_type = GgufResult

    def gguf_name(self, job: Export) -> str:
        return f"{job.run.path.name}-{job.quant}.gguf"

    def start(self, job: Export) -> GgufResult:
        """Refuses a ternary quant for a run that is not a packed quantized model (bitnet)."""
        if gguf_quant(job.quant).ternary and not _packed(job.run):
            raise TunelabError(f"--quant {job.quant} stores ternary weights, and run {job.run.path} is a "
                               f"{job.run.config.method.name} run", where="--quant",
                               hint="tq1_0 / tq2_0 are for a bitnet run; use q4_k_m, q5_k_m or q8_0")
        return super().start(job)

    def write_into(self, job: Export, res: GgufResult, tmp: Path) -> None:
        from tunelab.export.gguf import write_gguf

        merged = tmp / ".merged"
        if _packed(job.run):  # qat / bitnet: the packed layers decoded, nothing to merge
            from tunelab.export.quantized_run import write_decoded

            write_decoded(job.run, merged)
        else:
            from tunelab.export.merge import merge_run

            merge_run(job.run.path, merged, dtype="fp32")  # fp32: the GGUF rounds once, to `quant`
        res.gguf = write_gguf(merged, tmp / self.gguf_name(job), job.quant)
        self.beside(job, res, tmp, merged)
        shutil.rmtree(merged)

    def beside(self, job: Export, res: GgufResult, tmp: Path, merged: Path) -> None:
        """More files next to the GGUF in `tmp`, written while the merged folder `merged` exists."""

    def published(self, res: GgufResult) -> None:
        if res.gguf is not None:
            res.gguf.path = res.out / Path(res.gguf.path).name


def _packed(run) -> bool:
    """Is the run saved as a packed quantized model (its method's `saves`)?"""
    from tunelab.methods import Saved, method_of

    return method_of(run.config.method).saves is Saved.QUANTIZED
