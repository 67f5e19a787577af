"""The run directory: the one artifact every later command reads.

    runs/<name>/
      config.yaml      resolved config + library versions
      template.json    the prompt template used in training (inference reuses it)
      adapter/         PEFT adapter (adapter_config.json + adapter_model.safetensors), loads in plain peft,
                       + the tokenizer with the trained chat template (tokenizer_config.json, ...)
      model/           full weights (methods full / freeze) + the same tokenizer files
      quantized/       packed quantized weights + manifest.json (methods qat / bitnet)
      metrics.jsonl    one JSON object per log step / eval
      report.md, loss.png
      DONE             written last: a run without it is incomplete

Commands that read a run check it first, in one place: `require_run(path, tasks, command)` (the
folder is a run, of a task the command serves, and finished) and `run_or_model` for the commands
that also take a model name (generate, chat, synth --teacher). `run_task(path)` names a folder's task.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import yaml

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


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def done(self) -> bool:
        return (self.path / "DONE").exists()

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
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Drop metric rows logged after `step` (a resumed run logs them again)."""
        rows = [r for r in self.metrics() if r.get("step", 0) <= step]
        self.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]

    def mark_done(self) -> None:
        self.write_text("DONE", time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")

    def begin(self, cfg, model_path: str, template=None, resume_step: int | None = None, console=None) -> None:
        """Start a fresh run (folder, config.yaml with library versions, template.json) or, when
        `resume_step` is given, keep the folder and drop metrics logged after that step."""
        from tunelab.config import dump_config

        if resume_step is None:
            self.prepare(cfg.output.overwrite)
            self.write_text("config.yaml", dump_config(cfg, {**library_versions(), "model_path": model_path}))
            if template is not None:
                template.save(self.path / "template.json")
        else:
            self.truncate_metrics(resume_step)
            if console is not None:
                console.print(f"resuming {self.path} from step {resume_step}")

    def save_weights(self, model, method: str, tokenizer=None) -> None:
        """lora / qlora -> adapter/ (plain PEFT); any other method -> model/.

        The tokenizer, when given, is saved beside the weights with `chat_template` set to the run's
        template (template.json, rendered by `chat_template_jinja`), so transformers, vLLM and Ollama
        format prompts the way the run was trained. The caller's tokenizer object is left unchanged."""
        out = self.path / ("adapter" if method in ("lora", "qlora") else "model")
        model.save_pretrained(str(out))
        if tokenizer is not None:
            save_tokenizer_with_template(tokenizer, out, self.path / "template.json")


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


# ---- what kind of run a folder holds, and which commands read it ---------------------------------------------
GENERATIVE_TASKS = ("sft", "pretrain", "dpo")  # causal LMs: generate, chat, merge, rag ask, synth --teacher
USED_BY = {  # task -> how its model is used (the hint when a command gets the wrong kind)
    "sft": "use `tunelab generate {run}` or `tunelab chat {run}`",
    "pretrain": "use `tunelab generate {run}`",
    "dpo": "use `tunelab generate {run}` or `tunelab chat {run}`",
    "classify": "use `tunelab predict {run}`",
    "reward": "a reward model scores text; no tunelab command serves it: load {run}/adapter with peft",
}
RUN_OR_MODEL_HINT = "pass runs/<name>, or a model alias (`tunelab models`), folder or .gguf file"


def _config(path: Path) -> dict:
    try:
        cfg = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TunelabError(f"unreadable config.yaml ({type(e).__name__})", where=str(path / "config.yaml"),
                           hint="the run folder is damaged: train it again") from e
    if not isinstance(cfg, dict):
        raise TunelabError("config.yaml is not a mapping", where=str(path / "config.yaml"),
                           hint="the run folder is damaged: train it again")
    return cfg


def run_task(path: str | Path) -> str | None:
    """The task of the run at `path` (sft, pretrain, dpo, reward, classify: config.yaml's `task`, sft when
    absent), or None when `path` is not a run directory (no config.yaml). Does not check DONE."""
    p = Path(path)
    if not (p / "config.yaml").is_file():
        return None
    return str(_config(p).get("task") or "sft")


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeio" or word.startswith("sft") else "a ") + word


def _kinds(tasks) -> str:
    tasks = list(tasks)
    return tasks[0] if len(tasks) == 1 else ", ".join(tasks[:-1]) + " or " + tasks[-1]


def require_run(path: str | Path, tasks=None, command: str | None = None,
                where: str = "RUN") -> tuple[RunDir, dict]:
    """Open the finished run at `path` for `command`, whose model must come from one of `tasks`.

    Returns (RunDir, config dict). Raises TunelabError, as one line naming the folder, when `path` does
    not exist, is not a run directory (no config.yaml), holds a run of another task (the hint names the
    command that reads it), or is incomplete (no DONE). `tasks=None` accepts any task."""
    p = Path(path)
    for_cmd = f"; {command} needs a finished run" if command else ""
    if not p.exists():
        raise TunelabError(f"no such run directory: {p}", where=where, hint=_runs_hint(p))
    task = run_task(p)
    if task is None:
        raise TunelabError(f"{p} is not a tunelab run directory (no config.yaml){for_cmd}", where=where,
                           hint="pass runs/<name>, a folder written by `tunelab train`")
    if tasks is not None and task not in tasks:
        need = f"{command or 'this'} needs {_a(_kinds(tasks))} run"
        raise TunelabError(f"{p} is {_a(task)} run; {need}", where=where,
                           hint=USED_BY.get(task, "train a run of that task").format(run=p))
    rd = RunDir(p)
    if not rd.done:
        raise TunelabError(f"run {p} is incomplete (no DONE marker){for_cmd}", where=where,
                           hint="the training did not finish: `tunelab train CONFIG --resume` continues it, "
                                "or train again")
    return rd, _config(p)


def run_or_model(name: str, tasks, command: str, where: str = "RUN") -> tuple[RunDir, dict] | None:
    """For commands that take a run or a model: the finished run `name` names (checked by `require_run`),
    or None when `name` names a model (an alias, hub id, .gguf file or a folder with config.json).

    Raises TunelabError for a folder that is neither a run nor a model, and for a path that does not
    exist inside an existing folder or under runs/ (e.g. runs/typo: a hub id `org/name` has no local
    parent folder)."""
    p = Path(name).expanduser()
    if p.is_dir():
        if (p / "config.yaml").exists():  # (DONE alone says nothing: converted model caches have one too)
            return require_run(p, tasks, command, where)
        if (p / "config.json").exists():
            return None
        raise TunelabError(f"{p} is not a run directory (no config.yaml) nor a model folder (no config.json)",
                           where=where, hint=RUN_OR_MODEL_HINT)
    local = p.parts[:1] == ("runs",) or (p.parent != Path(".") and p.parent.is_dir())
    if not p.exists() and p.suffix != ".gguf" and local:
        raise TunelabError(f"no such run or model: {p}", where=where, hint=_runs_hint(p, RUN_OR_MODEL_HINT))
    return None


def refuse_run(name: str | Path, command: str, where: str = "MODEL") -> None:
    """TunelabError when `name` is a run directory: `command` takes a model (alias, folder, .gguf, hub id),
    and the hint names the run's base model and how to export the trained one."""
    p = Path(name).expanduser()
    task = run_task(p) if p.is_dir() else None
    if task is None:
        return
    base = (_config(p).get("model") or {}).get("name")
    export = f", or export the trained model with `tunelab merge {p} --out DIR`" if task in GENERATIVE_TASKS else ""
    raise TunelabError(f"{p} is {_a(task)} run directory; {command} takes a model", where=where,
                       hint=(f"pass the run's base model ({base})" if base else "pass a model") + export)


def _runs_hint(p: Path, otherwise: str = "pass runs/<name>, a folder written by `tunelab train`") -> str:
    """Name the runs next to a missing path, if there are any; else `otherwise`."""
    parent = p.parent if p.parent.is_dir() else None
    try:
        runs = sorted(d.name for d in parent.iterdir() if (d / "config.yaml").is_file()) if parent else []
    except OSError:
        runs = []
    if runs:
        shown = ", ".join(runs[:8]) + (", ..." if len(runs) > 8 else "")
        return f"runs in {parent}: {shown}"
    return otherwise


def load_run(path: str | Path) -> tuple[RunDir, dict]:
    """Open a finished run of any task and return (RunDir, config dict); TunelabError when it is not one
    (`require_run` without a task check)."""
    return require_run(path)


def load_run_model(path: Path, with_adapter: bool = True, device: str = "auto"):
    """(model, tokenizer, template) of a finished sft/pretrain/dpo run: the base as trained (4-bit for
    qlora) + its adapter. TunelabError for anything else (require_run)."""
    from tunelab.data.templates import Template
    from tunelab.models.load import load_causal_lm

    rd, cfg = require_run(path, GENERATIVE_TASKS, "generation")
    template = Template.load(rd.path / "template.json")
    if (rd.path / "quantized").exists():  # qat / bitnet runs saved a packed quantized model
        from tunelab.models.load import load_tokenizer, pick_device
        from tunelab.models.registry import ResolvedModel
        from tunelab.quant.ptq import load as load_quantized

        q = rd.path / "quantized"
        model = load_quantized(q).to(pick_device(device))
        return model, load_tokenizer(ResolvedModel(str(q), str(q), "local")), template
    if (rd.path / "model").exists():  # full / freeze runs saved the whole model
        model, tok, _ = load_causal_lm(str(rd.path / "model"), device=device)
        return model, tok, template
    model, tok = load_run_base(cfg, device=device)
    if with_adapter:
        model = attach_adapter(model, rd.path / "adapter")
    return model, tok, template


def load_run_base(cfg: dict, device: str = "auto", dtype: str | None = None, where: str = "model.name"):
    """(model, tokenizer): the base of an adapter run as it was trained (4-bit for qlora).

    `dtype` overrides the run's `model.dtype` (e.g. fp32 for merging)."""
    from tunelab.models.load import load_causal_lm

    method = cfg.get("method", {})
    model, tok, _ = load_causal_lm(cfg["model"]["name"], dtype=dtype or cfg["model"].get("dtype", "auto"),
                                   device=device, where=where)
    if method.get("name") == "qlora":
        from tunelab.adapters.qlora import quantize_base

        quantize_base(model, method.get("quant_type", "nf4"), method.get("double_quant", True))
    return model, tok


def attach_adapter(model, adapter_dir: Path):
    """Load a saved PEFT LoRA adapter onto `model` (works on QuantLinear bases too)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    from tunelab.adapters.qlora import register_quant_linear

    cfg = LoraConfig.from_pretrained(str(adapter_dir))
    cfg.inference_mode = True
    from tunelab.adapters.lora import quant_linear_types

    if any(isinstance(m, quant_linear_types()) for m in model.modules()):
        register_quant_linear(cfg)
    model = get_peft_model(model, cfg)
    result = set_peft_model_state_dict(model, load_file(str(adapter_dir / "adapter_model.safetensors")))
    if getattr(result, "unexpected_keys", None):
        raise TunelabError(f"adapter does not fit the base model: unexpected {result.unexpected_keys[:2]}",
                           where=str(adapter_dir))
    return model
