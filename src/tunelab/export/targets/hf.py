"""`--to hf`: the run merged into a plain transformers folder (`merge_run`), dtype from --quant.

    DIR/                        config.json, model.safetensors, the tokenizer with the run's chat template
                                quants f32 (default: the exact merge, as `tunelab merge`) | f16 | bf16
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.export.targets.base import Export, ExportResult, Target, listing

DTYPES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}  # --quant -> merge_run dtype


@dataclass
class HfResult(ExportResult):
    merge: object | None = None  # MergeResult

    def summary(self) -> list[str]:
        m = self.merge
        return [f"{m.method} run merged: {m.params:,} params in {m.dtype}"] if m is not None else []


class HfTarget(Target):
    name = "hf"
    label = "Merged (transformers)"
    about = "a merged transformers folder"
    quants = tuple(DTYPES)
    default_quant = "f32"
    studio = True
    push_as = "merged"
    result_type = HfResult

    def write(self, job: Export, res: HfResult) -> HfResult:
        """`merge_run` stages and publishes the folder itself."""
        from tunelab.export.merge import merge_run

        res.merge = merge_run(job.run.path, job.out, dtype=DTYPES[job.quant], overwrite=job.overwrite)
        res.files = listing(job.out)
        return res
