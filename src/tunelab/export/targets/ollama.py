"""`--to ollama`: the GGUF of `--to gguf` plus a Modelfile (export/ollama.py), checked by reading it back.

    DIR/<run>-<quant>.gguf + DIR/Modelfile     quants and default (f16) as gguf

The run's template.json must have an Ollama TEMPLATE equivalent: that is refused in `start`, before
any merging. `--check` builds and verifies the Modelfile and writes nothing.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.export.targets.base import Export
from tunelab.export.targets.gguf import GgufResult, GgufTarget


@dataclass
class OllamaResult(GgufResult):
    modelfile: str | None = None  # Modelfile text
    template_format: str | None = None  # the prompt format the Modelfile TEMPLATE reproduces
    checked: int = 0  # probe conversations the TEMPLATE was verified on
    ollama_name: str | None = None  # suggested `ollama create` name
    template: object = field(default=None, repr=False)  # the OllamaTemplate (export/ollama.py)

    def summary(self) -> list[str]:
        return [f"Modelfile TEMPLATE: the run's {self.template_format} format, checked on {self.checked} "
                "conversations read back as Ollama reads them"] + super().summary()

    def usage(self) -> list[str]:
        return [f"next: ollama create {self.ollama_name} -f {shlex.quote(str(self.out / 'Modelfile'))}"
                f" && ollama run {self.ollama_name}"]

    def details(self) -> dict:
        return {"ollama_name": self.ollama_name}

    def checked_text(self) -> str:
        return self.modelfile or ""


def model_context(model_dir: Path | None) -> int | None:
    """The context length in `model_dir`'s config.json (None: no such file)."""
    from tunelab.export.ollama import context_length

    cfg_path = model_dir / "config.json" if model_dir else None
    if cfg_path is None or not cfg_path.is_file():
        return None
    return context_length(json.loads(cfg_path.read_text(encoding="utf-8")))


def adds_bos(gguf_path: Path) -> bool:
    """Does llama.cpp (so Ollama) put BOS before every prompt of this GGUF (tokenizer.ggml.add_bos_token)?"""
    from gguf import GGUFReader

    f = GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.add_bos_token")
    return bool(f is not None and f.data and f.parts[f.data[0]][0])


class OllamaTarget(GgufTarget):
    name = "ollama"
    label = "Ollama (GGUF + Modelfile)"
    about = "a GGUF + Modelfile"
    push_as = None
    can_check = True
    result_type = OllamaResult

    def start(self, job: Export) -> OllamaResult:
        """Refuses a run without template.json, or whose template Ollama cannot express."""
        from tunelab.data.templates import Template
        from tunelab.export.ollama import ollama_name, ollama_template

        rd = job.run
        if not rd.template_path.is_file():
            raise TunelabError(f"run {rd.path} has no template.json", where="RUN",
                               hint="the run's prompt format is unknown: train it again")
        res = super().start(job)
        res.template = ollama_template(Template.load(rd.template_path))
        res.template_format, res.ollama_name = res.template.format, ollama_name(rd.path.name)
        return res

    def modelfile(self, job: Export, res: OllamaResult, gguf_name: str, model_dir: Path | None) -> None:
        """Fill res.modelfile (the text) and res.checked (probe conversations verified on it)."""
        from tunelab.export.ollama import check_modelfile, choose_num_ctx, modelfile_text

        num_ctx = choose_num_ctx(job.run.config.data.max_length, model_context(model_dir))
        res.modelfile = modelfile_text(gguf_name, res.template, num_ctx, job.temperature, run_name=job.run.path.name)
        res.checked = check_modelfile(res.modelfile, res.template.source)

    def check_only(self, job: Export, res: OllamaResult) -> OllamaResult:
        base = job.run.versions.get("model_path")
        self.modelfile(job, res, self.gguf_name(job), Path(base) if base else None)
        return res

    def beside(self, job: Export, res: OllamaResult, tmp: Path, merged: Path) -> None:
        gguf_name = self.gguf_name(job)
        self.modelfile(job, res, gguf_name, merged)
        (tmp / "Modelfile").write_text(res.modelfile, encoding="utf-8")
        if adds_bos(tmp / gguf_name):  # training tokenized the template's text only (no automatic BOS)
            res.notes.append("the GGUF says add_bos_token, so Ollama puts a BOS token before each prompt "
                             "that training did not have (and a second one where the format writes BOS)")
