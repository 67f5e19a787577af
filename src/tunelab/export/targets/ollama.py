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


def _fields(gguf_path: Path) -> dict:
    from gguf import GGUFReader

    return GGUFReader(str(gguf_path)).fields


def _adds_bos(fields: dict) -> bool:
    f = fields.get("tokenizer.ggml.add_bos_token")
    return bool(f is not None and f.data and f.parts[f.data[0]][0])


def adds_bos(gguf_path: Path) -> bool:
    """Does llama.cpp (so Ollama) put BOS before every prompt of this GGUF (tokenizer.ggml.add_bos_token)?"""
    return _adds_bos(_fields(gguf_path))


def runtime_bos(gguf_path: Path) -> str:
    """The text of the BOS token llama.cpp (so Ollama) puts before every prompt of this GGUF; "" when it
    puts none (add_bos_token false or absent). The file's metadata is read once."""
    fields = _fields(gguf_path)
    bos, tokens = fields.get("tokenizer.ggml.bos_token_id"), fields.get("tokenizer.ggml.tokens")
    if not _adds_bos(fields) or bos is None or tokens is None:
        return ""
    i = int(bos.parts[bos.data[0]][0])
    return bytes(tokens.parts[tokens.data[i]]).decode("utf-8", errors="replace")


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

    def modelfile(self, job: Export, res: OllamaResult, gguf_name: str, model_dir: Path | None,
                  bos: str = "") -> None:
        """Fill res.modelfile (the text) and res.checked (probe conversations verified on it). With `bos`
        (the text of the BOS token the GGUF's add_bos_token puts first), a TEMPLATE that writes it leaves it
        to Ollama when BOS + that TEMPLATE still renders every probe as the run (leave_bos_to_runtime)."""
        from tunelab.errors import TunelabError
        from tunelab.export.ollama import check_modelfile, choose_num_ctx, leave_bos_to_runtime, modelfile_text

        num_ctx = choose_num_ctx(job.run.config.data.max_length, model_context(model_dir))
        lean = leave_bos_to_runtime(res.template, bos)
        if lean is not None:
            text = modelfile_text(gguf_name, lean, num_ctx, job.temperature, run_name=job.run.path.name)
            try:
                res.checked = check_modelfile(text, lean.source, prefix=lean.runtime_bos)
                res.template, res.modelfile = lean, text
                return
            except TunelabError:  # the BOS text is not only the first turn's: keep the TEMPLATE whole
                pass
        res.modelfile = modelfile_text(gguf_name, res.template, num_ctx, job.temperature, run_name=job.run.path.name)
        res.checked = check_modelfile(res.modelfile, res.template.source)

    def check_only(self, job: Export, res: OllamaResult) -> OllamaResult:
        base = job.run.versions.get("model_path")
        self.modelfile(job, res, self.gguf_name(job), Path(base) if base else None)
        return res

    def beside(self, job: Export, res: OllamaResult, tmp: Path, merged: Path) -> None:
        gguf_name = self.gguf_name(job)
        bos = runtime_bos(tmp / gguf_name)
        self.modelfile(job, res, gguf_name, merged, bos)
        (tmp / "Modelfile").write_text(res.modelfile, encoding="utf-8")
        if bos and not res.template.runtime_bos:  # training tokenized the template's text only
            res.notes.append(f"the GGUF says add_bos_token, so Ollama puts {bos} before each prompt " + (
                "besides the one the TEMPLATE writes" if bos in res.template.text
                else "that training did not have (the run's format writes no BOS)"))
