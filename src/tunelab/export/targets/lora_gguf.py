"""`--to lora-gguf`: the run's LoRA adapter alone (`write_lora_gguf`), for llama.cpp --lora.

    DIR/<run>-lora.gguf         f32 only (the adapter is small); default DIR RUN/export/lora-gguf
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.export.targets.base import Export, Target
from tunelab.export.targets.gguf import GgufResult


@dataclass
class LoraGgufResult(GgufResult):
    def usage(self) -> list[str]:
        return [f"use: llama-cli -m BASE.gguf --lora {shlex.quote(str(self.gguf.path))} "
                "(BASE.gguf: the run's base model as GGUF, unquantized or q8_0)"]


class LoraGgufTarget(Target):
    name = "lora-gguf"
    label = "LoRA GGUF (llama.cpp --lora)"
    about = "the adapter alone, for llama.cpp --lora"
    quants = ("f32",)
    default_quant = "f32"  # the adapter's own precision
    quant_hint = "the adapter GGUF is written in f32 (it is small); quantize the base GGUF instead"
    result_type = LoraGgufResult

    def default_folder(self, run: Path, quant: str) -> Path:
        from tunelab.runs.rundir import RunDir

        return RunDir(run).export_dir / "lora-gguf"

    def start(self, job: Export) -> LoraGgufResult:
        """Refuses a run without a LoRA adapter (full, freeze: a whole model)."""
        rd = job.run
        if not rd.has_adapter:
            raise TunelabError(f"run {rd.path} has no LoRA adapter", where="--to lora-gguf",
                               hint="a full or freeze run is a whole model: export it with --to gguf")
        return super().start(job)

    def write_into(self, job: Export, res: LoraGgufResult, tmp: Path) -> None:
        from tunelab.export.lora_gguf import write_lora_gguf

        res.gguf = write_lora_gguf(job.run.path, tmp / f"{job.run.path.name}-lora.gguf")

    def published(self, res: LoraGgufResult) -> None:
        res.gguf.path = res.out / Path(res.gguf.path).name
