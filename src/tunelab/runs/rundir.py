"""The run directory: the one artifact every later command reads.

    runs/<name>/
      config.yaml      resolved config + library versions
      template.json    the prompt template used in training (inference reuses it)
      adapter/         PEFT adapter (adapter_config.json + adapter_model.safetensors), loads in plain peft,
                       + the tokenizer with the trained chat template (tokenizer_config.json, ...)
      model/           full weights (methods full / freeze) + the same tokenizer files
      quantized/       packed quantized weights + manifest.json (methods qat / bitnet)
      checkpoints/step-N/  resumable training state (train/state.py)
      metrics.jsonl    one JSON object per log step / eval
      report.md, loss.png
      export/          what `tunelab export` wrote
      DONE             written last: a run without it is incomplete

The names are joined here only (`RunDir`'s accessors); `runs.open(path)` (runs/run.py) reads a finished
run back as a typed `Run`. Commands that read a run check it first, in one place:
`require_run(path, tasks, command)` (the folder is a run, of a task the command serves, and finished)
and `run_or_model` for the commands that also take a model name (generate, chat, synth --teacher).
`run_task(path)` names a folder's task.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from tunelab.errors import TunelabError


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("tunelab", "torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


# ---- the layout: these names are joined here and nowhere else (tests/test_run_layout.py) -----------------------
CONFIG = "config.yaml"
TEMPLATE = "template.json"
ADAPTER = "adapter"
MODEL = "model"
QUANTIZED = "quantized"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
REPORT = "report.md"
EXPORT = "export"
DONE = "DONE"
ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER = "tokenizer"
LABELS = "labels.json"


class RunDir:
    """A run folder, finished or not: where each part of it lives, and the atomic writes of training.
    The accessors only name paths; they do not check that the part exists."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def template_path(self) -> Path:
        return self.path / TEMPLATE

    @property
    def adapter_dir(self) -> Path:
        """adapter/: the PEFT adapter of a lora / qlora run (+ tokenizer files)."""
        return self.path / ADAPTER

    @property
    def has_adapter(self) -> bool:
        """adapter/ holds a PEFT adapter (its adapter_config.json)."""
        return (self.adapter_dir / ADAPTER_CONFIG).is_file()

    @property
    def model_dir(self) -> Path:
        """model/: the whole model of a full / freeze run (and classify's non-lora run)."""
        return self.path / MODEL

    @property
    def tokenizer_dir(self) -> Path:
        """tokenizer/: where runs of earlier versions saved their tokenizer (now beside the weights)."""
        return self.path / TOKENIZER

    @property
    def labels_path(self) -> Path:
        """labels.json: a classify run's labels, in the head's order."""
        return self.path / LABELS

    @property
    def quantized_dir(self) -> Path:
        """quantized/: the packed quantized model of a qat / bitnet run."""
        return self.path / QUANTIZED

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint(self, step: int) -> Path:
        """checkpoints/step-N/ (train/state.py writes and lists them)."""
        return self.checkpoints_dir / f"step-{int(step)}"

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def report_path(self) -> Path:
        return self.path / REPORT

    @property
    def export_dir(self) -> Path:
        """export/: where `tunelab export` writes, one folder per target and quant."""
        return self.path / EXPORT

    @property
    def done_path(self) -> Path:
        return self.path / DONE

    @property
    def done(self) -> bool:
        return self.done_path.exists()

    def refuse_if_done(self, overwrite: bool = False) -> None:
        """TunelabError when this run is finished and `overwrite` is not set."""
        if self.done and not overwrite:
            raise TunelabError(f"run {self.path} is already finished", where="output.name",
                               hint="pick another output.name, or pass --overwrite")

    def prepare(self, overwrite: bool = False) -> None:
        """Create the folder; refuse to replace a finished run unless `overwrite`; clear an unfinished one."""
        self.refuse_if_done(overwrite)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)

    def write_text(self, name: str, text: str) -> Path:
        p = self.path / name
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
        return p

    def log(self, record: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Drop metric rows logged after `step` (a resumed run logs them again)."""
        rows = [r for r in self.metrics() if r.get("step", 0) <= step]
        self.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def metrics(self) -> list[dict]:
        p = self.metrics_path
        if not p.exists():
            return []
        return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]

    def mark_done(self) -> None:
        self.write_text(DONE, time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")

    def begin(self, cfg, model_path: str, template=None, resume_step: int | None = None, console=None) -> None:
        """Start a fresh run (folder, config.yaml with library versions, template.json) or, when
        `resume_step` is given, keep the folder and drop metrics logged after that step."""
        from tunelab.config import dump_config

        if resume_step is None:
            self.prepare(cfg.output.overwrite)
            self.write_text(CONFIG, dump_config(cfg, {**library_versions(), "model_path": model_path}))
            if template is not None:
                template.save(self.template_path)
        else:
            self.truncate_metrics(resume_step)
            if console is not None:
                console.print(f"resuming {self.path} from step {resume_step}")

    def save_weights(self, model, method, tokenizer=None, source: str = "") -> None:
        """The weights where the method saves them (`Method.saves`, written by `Method.save`): lora /
        qlora -> adapter/ (plain PEFT); qat / bitnet -> quantized/ (packed, with the tokenizer); any
        other method -> model/. `method`: a name or a `Method`; `source`: the base model's name.

        The tokenizer, when given, is saved beside the weights with `chat_template` set to the run's
        template (template.json, rendered by `chat_template_jinja`), so transformers, vLLM and Ollama
        format prompts the way the run was trained. The caller's tokenizer object is left unchanged."""
        from tunelab.methods import Saved, method_of

        m = method_of(method)
        out = {Saved.ADAPTER: self.adapter_dir, Saved.MODEL: self.model_dir, Saved.QUANTIZED: self.quantized_dir}[m.saves]
        m.save(model, out, tokenizer=tokenizer, source=source)
        if tokenizer is not None and not m.save_writes_tokenizer:
            save_tokenizer_with_template(tokenizer, out, self.template_path)


def save_tokenizer_with_template(tokenizer, out: Path, template_path: Path) -> None:
    """`tokenizer.save_pretrained(out)` with `chat_template` = the Jinja equivalent of the tunelab template
    saved at `template_path` (kept as the tokenizer's own when that file is absent or has no Jinja form)."""
    from tunelab.data.templates import Template, chat_template_jinja

    jinja = chat_template_jinja(Template.load(template_path)) if Path(template_path).exists() else None
    if jinja is None:
        tokenizer.save_pretrained(str(out))
        return
    before = getattr(tokenizer, "chat_template", None)
    tokenizer.chat_template = jinja
    try:
        tokenizer.save_pretrained(str(out))
    finally:
        tokenizer.chat_template = before


