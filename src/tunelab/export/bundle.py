"""`export_run`: a finished run as files another runtime loads, one folder per export.

The targets (what `--to` names) are objects of export/targets/, one module each, listed in
`tunelab.export.targets.REGISTRY`:

    gguf       DIR/<run>-<quant>.gguf      merged (fp32) into a scratch folder, then `write_gguf`
    ollama     DIR/<run>-<quant>.gguf + DIR/Modelfile (ollama.py), checked by reading it back
    hf         DIR/                        merged transformers folder (`merge_run`, dtype from --quant)
    lora-gguf  DIR/<run>-lora.gguf         the adapter alone (`write_lora_gguf`), for llama.cpp --lora

The default DIR is the target's `default_folder` (RUN/export/<to>-<quant>, RUN/export/lora-gguf). Every
export is written into a hidden sibling folder and renamed to DIR when complete, so an interrupted
export leaves no folder that looks finished; an existing non-empty DIR is replaced only with
`overwrite`. What can be refused cheaply (the run, --to, --quant, the Ollama template, DIR) is refused
before any merging.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.export.staging import check_out
from tunelab.export.targets import Export, ExportResult, names, target

__all__ = ["ExportResult", "export_run"]


def export_run(run: str | Path, to: str, quant: str | None = None, out: str | Path | None = None,
               overwrite: bool = False, temperature: float = 0.0, check_only: bool = False) -> ExportResult:
    """Export the finished sft/pretrain/dpo run `run` as the target `to` (export.targets.names()) into
    `out` (default: the target's `default_folder`). `check_only` (targets with `can_check`, ollama):
    build and verify without writing. Returns the target's own `ExportResult` subclass.

    Raises:
        TunelabError: not a finished generative run, unknown target or quant, an `auto` template with no
            Ollama equivalent, `out` not empty without `overwrite`, or what merging / GGUF writing refuses.
    """
    from tunelab.runs.kinds import GENERATIVE_TASKS, require_run

    rd, cfg = require_run(run, GENERATIVE_TASKS, "export")
    t = target(to)
    quant = t.check_quant(quant)
    out = Path(out) if out is not None else t.default_folder(rd.path, quant)
    if out.resolve() == rd.path.resolve() or out.resolve() in rd.path.resolve().parents:
        raise TunelabError(f"--out {out} holds the run itself", where="--out",
                           hint="choose a folder outside the run, or leave --out out (RUN/export/...)")
    job = Export(rd, cfg, quant, out, overwrite, temperature)
    res = t.start(job)
    if check_only:
        if not t.can_check:
            checkable = " | ".join(n for n in names() if target(n).can_check)
            raise TunelabError(f"--check applies to --to {checkable}", where="--check", hint=f"add --to {checkable}")
        return t.check_only(job, res)
    check_out(out, overwrite)
    return t.write(job, res)
