"""`push_run`: a finished run to a Hugging Face model repo, with a model card (README.md).

    adapter   RUN/adapter/ as it is (plain PEFT + the tokenizer with the trained chat template)
    merged    `export_run(..., "hf")`: the merged run (a plain transformers model), dtype from --quant (default f32)
    gguf      `export_run(..., "gguf")`: one <run>-<quant>.gguf (default f16)

Every --what but adapter is the folder of the export target whose `push_as` it is (export/targets/,
`push_targets()`): its quants, default quant and writer are that target's.

The card's front matter names the base model (a hub id: an alias is resolved to its hub id, a local
folder is left out), `library_name: peft` for adapters (transformers for merged models) and the tag
`tunelab`; its text gives the method, the prompt format, the data (file names, example counts from
report.md) and the validation figures of report.md (base vs tuned), else of metrics.jsonl.

Before anything is merged or written, `connect` refuses, as one line: offline mode (HF_HUB_OFFLINE or
TRANSFORMERS_OFFLINE), no token (HF_TOKEN, else the `hf auth login` token), a hub that cannot be
reached (HF_ENDPOINT, default https://huggingface.co) or a token it rejects.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.export.targets import push_targets
from tunelab.runs.rundir import RunDir

WHAT = ("adapter", *push_targets())  # adapter, then the export targets' `push_as` names (merged, gguf)
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


@dataclass
class PushResult:
    repo_id: str
    url: str
    what: str
    private: bool
    files: list[tuple[str, int]] = field(default_factory=list)  # (path in repo, bytes)


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_token() -> str | None:
    """HF_TOKEN, else the token saved by `hf auth login` (huggingface_hub.get_token)."""
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    from huggingface_hub import get_token

    return get_token()


def connect(token: str | None = None, api=None):
    """(HfApi, user name) for pushing, after checking: not offline, a token, the hub answers and accepts it.

    Raises:
        TunelabError: one line saying which of these failed."""
    from tunelab.models.registry import hub_offline

    endpoint = hub_endpoint()
    if hub_offline():
        raise TunelabError("offline mode is on (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE), nothing can be pushed",
                           where="push", hint="unset HF_HUB_OFFLINE, or export locally: `tunelab export RUN --to hf`")
    token = token or hub_token()
    if not token:
        raise TunelabError("no Hugging Face token", where="push",
                           hint="set HF_TOKEN to a write token, or run `hf auth login`")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token, library_name="tunelab")
    try:
        me = api.whoami()
    except Exception as e:  # httpx / requests / huggingface_hub errors: classify by shape, one line each
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise TunelabError(f"{endpoint} rejected the token (HTTP {status})", where="push",
                               hint="create a write token at https://huggingface.co/settings/tokens") from None
        if type(e).__name__ == "OfflineModeIsEnabled":
            raise TunelabError("offline mode is on (HF_HUB_OFFLINE), nothing can be pushed", where="push",
                               hint="unset HF_HUB_OFFLINE") from None
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise TunelabError(f"cannot reach the Hugging Face Hub at {endpoint} ({reason})", where="push",
                           hint="check the network (and HF_ENDPOINT), then push again") from None
    return api, (me or {}).get("name")


# ---- the model card ------------------------------------------------------------------------------------------
def base_model_id(name: str) -> str | None:
    """The hub id of a run's `model.name`: an alias's hub id, a hub id itself; None for local files."""
    from tunelab.models.registry import ALIASES

    if name in ALIASES:
        return ALIASES[name].hub_id or None
    if name.endswith(".gguf") or Path(name).expanduser().exists() or not REPO_ID.fullmatch(name):
        return None
    return name


def _data_files(spec) -> list[str]:
    """File names (not local paths) or hub dataset ids of a data.train / data.validation value."""
    if not spec:
        return []
    items = spec if isinstance(spec, list) else [spec]
    out = []
    for it in items:
        path, weight = (it.get("path", ""), it.get("weight", 1.0)) if isinstance(it, dict) else (str(it), 1.0)
        shown = path[3:] if path.startswith("hf:") else Path(path).name
        out.append(f"`{shown}`" + (f" (weight {weight:g})" if weight != 1.0 else ""))
    return out


def _report_section(report: str) -> list[str]:
    """The validation section of report.md (its heading and table, without images)."""
    lines, keep = [], False
    for line in report.splitlines():
        if line.startswith("## "):
            keep = line.startswith(("## Validation", "## Held-out perplexity"))
        if keep and not line.startswith("!["):
            lines.append(line)
    return lines


def validation_figures(run_dir: Path) -> tuple[float | None, float | None, str]:
    """(base, tuned, source) validation loss: report.md's base / final rows, else the first and last
    val_loss of metrics.jsonl (then `base` is the first evaluation, not the untrained model's)."""
    report, metrics = RunDir(run_dir).report_path, RunDir(run_dir).metrics_path
    text = report.read_text(encoding="utf-8") if report.is_file() else ""
    base = re.search(r"^\| base \| ([-\d.]+) \|", text, re.M)
    tuned = re.search(r"^\| (?:final \(kept\)|tuned) \| ([-\d.]+) \|", text, re.M)
    if base and tuned:
        return float(base.group(1)), float(tuned.group(1)), "report.md"
    rows = []
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r.get("val_loss"), (int, float)):
                rows.append(r["val_loss"])
    if rows:
        return rows[0], rows[-1], "metrics.jsonl"
    return None, None, ""


def model_card(run_dir: str | Path, cfg, what: str, repo_id: str, quant: str | None = None) -> str:
    """README.md for the pushed repo: front matter, then what was trained, on what, and how it scored.
    `cfg` is the run's RunConfig (`Run.config`); a config.yaml mapping is validated as `runs.open` does."""
    from tunelab.config import RunConfig
    from tunelab.methods import method_of
    from tunelab.runs.run import validate_raw

    run_dir = Path(run_dir)
    typed = cfg if isinstance(cfg, RunConfig) else validate_raw(cfg, str(RunDir(run_dir).config_path))
    cfg = typed.model_dump(mode="json")  # every key present: nothing below falls back on a default
    model, method, data, train = (cfg.get(k) or {} for k in ("model", "method", "data", "train"))
    name, mname, task = model.get("name", "?"), method.get("name", "lora"), cfg.get("task") or "sft"
    mo = method_of(mname)
    base = base_model_id(name)
    front = ["---"] + ([f"base_model: {base}"] if base else [])
    if what == "adapter":
        front.append("library_name: peft")
    elif what == "merged":
        front.append("library_name: transformers")
    hub_sets = [s[3:] for s in (data.get("train"), data.get("validation")) if isinstance(s, str) and s.startswith("hf:")]
    if hub_sets:
        front += ["datasets:", *[f"- {s}" for s in hub_sets]]
    tags = ["tunelab", mname, task] + (["gguf"] if what == "gguf" else [])
    front += ["pipeline_tag: text-generation", "tags:", *[f"- {t}" for t in dict.fromkeys(tags)], "---", ""]

    base_text = f"[`{base}`](https://huggingface.co/{base})" if base else f"a local model (`{Path(name).name}`)"
    kind = {"adapter": f"A {mo.label if mo.adapters else mname} adapter for",
            "merged": "A fine-tune of", "gguf": f"A GGUF ({quant}) fine-tune of"}[what]
    lines = [f"# {repo_id.split('/')[-1]}", "", f"{kind} {base_text}, trained with tunelab ({task}, run "
             f"`{run_dir.name}`).", "", "## Training", "", f"- base model: `{base or Path(name).name}`"]
    m = f"- method: `{mname}`"
    if mo.adapters:
        m += (f" (r={method.get('r')}, alpha={method.get('alpha'):g}, targets {method.get('target_modules')}, "
              f"last {method.get('layers')} layers)")
        if mo.quantized_base:
            qt = method["quant_type"]
            m += " on its GGUF base's own quantized blocks" if qt == "gguf" else f" on a 4-bit {qt} base"
    lines.append(m)
    lines.append(f"- prompt template: `{data.get('template', 'auto')}`"
                 + (f"; system prompt: \"{data['system']}\"" if data.get("system") else ""))
    report_path = RunDir(run_dir).report_path
    report = report_path.read_text(encoding="utf-8") if report_path.is_file() else ""
    counts = re.search(r"([\d,]+) train / ([\d,]+) validation (\w+)", report)
    n_train, n_val, unit = counts.groups() if counts else (None, None, "examples")
    one = unit[:-1] if unit.endswith("s") else unit  # "1 example"

    def count(n: str | None) -> str:
        return f" ({n} {one if n == '1' else unit})" if n else ""
    lines.append("- training data: " + (", ".join(_data_files(data.get("train"))) or "?")
                 + count(n_train))
    val_files = _data_files(data.get("validation"))
    if val_files or n_val:
        lines.append("- validation data: " + (", ".join(val_files) or f"{data.get('val_split', 0):g} of the training "
                     "data held out") + count(n_val))
    steps = re.search(r"- ([\d,]+) optimizer steps", report)
    lines.append(f"- {steps.group(1) + ' optimizer steps, ' if steps else ''}lr {train.get('lr')}, batch "
                 f"{train.get('batch_size')} x {train.get('grad_accum', 1)} accumulation, max_length "
                 f"{data.get('max_length')} tokens")
    b, t, source = validation_figures(run_dir)
    lines += ["", "## Validation", ""]
    if b is not None and t is not None:
        change = f" ({(t - b) / b:+.1%})" if b else ""
        first = "base" if source == "report.md" else "first evaluation"
        lines.append(f"Validation loss (mean NLL per reply token): {first} {b:.4f} -> tuned {t:.4f}{change}, "
                     f"from the run's {source}.")
        table = "\n".join(_report_section(report)[1:]).strip()
        lines += ["", table] if table else []
    else:
        lines.append("No validation figures were recorded (the run had no validation set).")
    lines += ["", "## Use", "", *_usage(what, repo_id, base), ""]
    return "\n".join(front + lines).rstrip() + "\n"


def _usage(what: str, repo_id: str, base: str | None) -> list[str]:
    if what == "gguf":
        return ["```sh", f"ollama run hf.co/{repo_id}", f"llama-cli -hf {repo_id}", "```"]
    load = ("from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained("
            f'"{repo_id}")' if what == "adapter" else
            f'from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained("{repo_id}")')
    out = ["```python", load, "from transformers import AutoTokenizer", f'tok = AutoTokenizer.from_pretrained("{repo_id}")',
           'messages = [{"role": "user", "content": "Hello!"}]',
           "ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
           "reply = model.generate(**ids, max_new_tokens=64)[0][ids[\"input_ids\"].shape[1]:]",
           "print(tok.decode(reply, skip_special_tokens=True))",
           "```", "", "The tokenizer's chat template is the prompt format the model was trained with."]
    if what == "adapter" and not base:
        out.append("The base model was a local folder: load it and attach the adapter with `PeftModel.from_pretrained`.")
    return out


# ---- push ----------------------------------------------------------------------------------------------------
def push_run(run: str | Path, repo_id: str, what: str = "adapter", private: bool = False, quant: str | None = None,
             token: str | None = None, api=None) -> PushResult:
    """Upload the finished run `run` to the model repo `repo_id` (created if missing; `private` applies
    when it is created) as `what` (WHAT), with `model_card` as README.md.

    Raises:
        TunelabError: not a finished generative run, a bad repo id / --what / --quant, offline, no token,
            the hub unreachable or refusing (checked before anything heavy), or the upload failing."""
    from tunelab.export.bundle import export_run
    from tunelab.runs.kinds import GENERATIVE_TASKS, require_run

    rd, cfg = require_run(run, GENERATIVE_TASKS, "push")
    if not REPO_ID.fullmatch(repo_id):
        raise TunelabError(f"'{repo_id}' is not a repo id", where="REPO", hint="write owner/name, e.g. alice/tunebot")
    if what not in WHAT:
        raise TunelabError(f"unknown --what '{what}'", where="--what", hint=f"one of: {', '.join(WHAT)}")
    if what == "adapter":
        if quant is not None:
            raise TunelabError("--quant does not apply to --what adapter", where="--quant",
                               hint="the adapter is pushed as trained; use --what merged or gguf to choose a type")
        if not rd.has_adapter:
            raise TunelabError(f"run {rd.path} has no adapter (a {rd.method} run)",
                               where="--what", hint="push the whole model: --what merged")
    else:
        quant = push_targets()[what].check_quant(quant)
    api, _user = connect(token, api)
    with tempfile.TemporaryDirectory(prefix=".push-", dir=rd.path) as tmp:
        folder = Path(tmp) / "upload"
        if what == "adapter":
            shutil.copytree(rd.adapter_dir, folder, ignore=shutil.ignore_patterns("README.md"))
        else:
            export_run(rd.path, push_targets()[what].name, quant, out=folder)
        (folder / "README.md").write_text(model_card(rd.path, rd.config, what, repo_id, quant), encoding="utf-8")
        files = [(p.relative_to(folder).as_posix(), p.stat().st_size) for p in sorted(folder.rglob("*")) if p.is_file()]
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                              commit_message=f"tunelab push: run {rd.path.name} ({what})")
        except Exception as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
            raise TunelabError(f"upload to {repo_id} failed{f' (HTTP {status})' if status else ''}: {reason}",
                               where="push", hint="check the repo name and that the token may write to it") from None
    return PushResult(repo_id, str(url or f"{hub_endpoint()}/{repo_id}"), what, private, files)
