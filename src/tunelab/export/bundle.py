"""`export_run`: a finished run as files another runtime loads, one folder per export.

    hf         DIR/                        merged transformers folder (`merge_run`, dtype from --quant)
    gguf       DIR/<run>-<quant>.gguf      merged (fp32) into a scratch folder, then `write_gguf`
    lora-gguf  DIR/<run>-lora.gguf         the adapter alone (`write_lora_gguf`), for llama.cpp --lora
    ollama     DIR/<run>-<quant>.gguf + DIR/Modelfile (ollama.py), checked by reading it back

The default DIR is RUN/export/<to>-<quant> (RUN/export/lora-gguf). Every export is written into a
hidden sibling folder and renamed to DIR when complete, so an interrupted export leaves no folder
that looks finished; an existing non-empty DIR is replaced only with `overwrite`. What can be
refused cheaply (the run, --to, --quant, the Ollama template, DIR) is refused before any merging.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.export.gguf import GGUF_QUANTS
from tunelab.export.staging import check_out, publish, staging

TARGETS = ("hf", "gguf", "ollama", "lora-gguf")
HF_DTYPES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}  # --quant -> merge_run dtype


@dataclass
class ExportResult:
    to: str
    out: Path  # the folder written
    quant: str
    files: list[tuple[Path, int]] = field(default_factory=list)  # (path, bytes) of every file in `out`
    gguf: object | None = None  # GGUFInfo of the .gguf written
    merge: object | None = None  # MergeResult (hf)
    modelfile: str | None = None  # Modelfile text (ollama)
    template_format: str | None = None  # the prompt format the Modelfile TEMPLATE reproduces
    checked: int = 0  # probe conversations the TEMPLATE was verified on
    ollama_name: str | None = None  # suggested `ollama create` name
    notes: list[str] = field(default_factory=list)  # warnings worth printing


def default_quant(to: str) -> str:
    """f16 for GGUF files (llama.cpp's default conversion type), f32 for hf (the exact merge, as
    `tunelab merge`), f32 for lora-gguf (the adapter's own precision)."""
    return "f16" if to in ("gguf", "ollama") else "f32"


def check_quant(to: str, quant: str | None) -> str:
    """The --quant to use for target `to`; TunelabError for a target or quant that does not exist."""
    if to not in TARGETS:
        raise TunelabError(f"unknown export target '{to}'", where="--to", hint=f"one of: {', '.join(TARGETS)}")
    if quant is None:
        return default_quant(to)
    allowed = {"hf": tuple(HF_DTYPES), "lora-gguf": ("f32",)}.get(to, GGUF_QUANTS)
    if quant not in allowed:
        hint = ("the adapter GGUF is written in f32 (it is small); quantize the base GGUF instead"
                if to == "lora-gguf" else f"one of: {', '.join(allowed)}")
        raise TunelabError(f"--quant {quant} does not apply to --to {to}", where="--quant", hint=hint)
    return quant


def default_out(run: Path, to: str, quant: str) -> Path:
    return Path(run) / "export" / ("lora-gguf" if to == "lora-gguf" else f"{to}-{quant}")


def _listing(out: Path) -> list[tuple[Path, int]]:
    return [(p, p.stat().st_size) for p in sorted(out.rglob("*")) if p.is_file()]


def _model_context(model_dir: Path | None) -> int | None:
    from tunelab.export.ollama import context_length

    cfg_path = model_dir / "config.json" if model_dir else None
    if cfg_path is None or not cfg_path.is_file():
        return None
    return context_length(json.loads(cfg_path.read_text(encoding="utf-8")))


def _modelfile(rd, cfg: dict, ot, gguf_name: str, model_dir: Path | None, temperature: float) -> tuple[str, int]:
    """(Modelfile text, probe conversations verified on it)."""
    from tunelab.export.ollama import check_modelfile, choose_num_ctx, modelfile_text

    num_ctx = choose_num_ctx((cfg.get("data") or {}).get("max_length"), _model_context(model_dir))
    text = modelfile_text(gguf_name, ot, num_ctx, temperature, run_name=rd.path.name)
    return text, check_modelfile(text, ot.source)


def _adds_bos(gguf_path: Path) -> bool:
    """Does llama.cpp (so Ollama) put BOS before every prompt of this GGUF (tokenizer.ggml.add_bos_token)?"""
    from gguf import GGUFReader

    f = GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.add_bos_token")
    return bool(f is not None and f.data and f.parts[f.data[0]][0])


def export_run(run: str | Path, to: str, quant: str | None = None, out: str | Path | None = None,
               overwrite: bool = False, temperature: float = 0.0, check_only: bool = False) -> ExportResult:
    """Export the finished sft/pretrain/dpo run `run` as `to` (TARGETS) into `out` (default
    `default_out`). `check_only` (ollama): build and verify the Modelfile, write nothing.

    Raises:
        TunelabError: not a finished generative run, unknown target or quant, an `auto` template with no
            Ollama equivalent, `out` not empty without `overwrite`, or what merging / GGUF writing refuses.
    """
    from tunelab.data.templates import Template
    from tunelab.runs.kinds import GENERATIVE_TASKS, require_run

    rd, cfg = require_run(run, GENERATIVE_TASKS, "export")
    quant = check_quant(to, quant)
    out = Path(out) if out is not None else default_out(rd.path, to, quant)
    if out.resolve() == rd.path.resolve() or out.resolve() in rd.path.resolve().parents:
        raise TunelabError(f"--out {out} holds the run itself", where="--out",
                           hint="choose a folder outside the run, or leave --out out (RUN/export/...)")
    res = ExportResult(to, out, quant)
    ot = None
    if to == "ollama":
        from tunelab.export.ollama import ollama_name, ollama_template

        if not (rd.path / "template.json").is_file():
            raise TunelabError(f"run {rd.path} has no template.json", where="RUN",
                               hint="the run's prompt format is unknown: train it again")
        ot = ollama_template(Template.load(rd.path / "template.json"))
        res.template_format, res.ollama_name = ot.format, ollama_name(rd.path.name)
    if to == "lora-gguf" and not rd.has_adapter:
        raise TunelabError(f"run {rd.path} has no LoRA adapter", where="--to lora-gguf",
                           hint="a full or freeze run is a whole model: export it with --to gguf")
    if check_only:
        if ot is None:
            raise TunelabError("--check applies to --to ollama", where="--check", hint="add --to ollama")
        base = (cfg.get("versions") or {}).get("model_path")
        gguf_name = f"{rd.path.name}-{quant}.gguf"
        res.modelfile, res.checked = _modelfile(rd, cfg, ot, gguf_name, Path(base) if base else None, temperature)
        return res
    check_out(out, overwrite)
    if to == "hf":
        from tunelab.export.merge import merge_run

        res.merge = merge_run(rd.path, out, dtype=HF_DTYPES[quant], overwrite=overwrite)
        res.files = _listing(out)
        return res
    tmp = staging(out)
    try:
        if to == "lora-gguf":
            from tunelab.export.lora_gguf import write_lora_gguf

            res.gguf = write_lora_gguf(rd.path, tmp / f"{rd.path.name}-lora.gguf")
        else:
            from tunelab.export.gguf import write_gguf
            from tunelab.export.merge import merge_run

            merged = tmp / ".merged"
            merge_run(rd.path, merged, dtype="fp32")  # fp32: the GGUF rounds once, to `quant`
            gguf_name = f"{rd.path.name}-{quant}.gguf"
            res.gguf = write_gguf(merged, tmp / gguf_name, quant)
            if ot is not None:
                res.modelfile, res.checked = _modelfile(rd, cfg, ot, gguf_name, merged, temperature)
                (tmp / "Modelfile").write_text(res.modelfile, encoding="utf-8")
                if _adds_bos(tmp / gguf_name):  # training tokenized the template's text only (no automatic BOS)
                    res.notes.append("the GGUF says add_bos_token, so Ollama puts a BOS token before each prompt "
                                     "that training did not have (and a second one where the format writes BOS)")
            shutil.rmtree(merged)
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if res.gguf is not None:
        res.gguf.path = out / Path(res.gguf.path).name
    res.files = _listing(out)
    return res
