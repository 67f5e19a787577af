"""lm-evaluation-harness tasks on runs and models: `run_tasks(contenders, tasks, ...)` -> results dict.

`tunelab eval RUN --lm-eval TASKS` evaluates each contender (a run with its adapter applied, its base
with `--base`, a model) on lm-eval's tasks, in this order, so that every bad input is one line
(TunelabError) before any model loads:

1. `lm_eval` is imported (absent: "pip install 'tunelab[lmeval]'");
2. the task names are resolved by lm-eval's TaskManager: the YAML tasks of `include` alone first
   (indexing lm-eval's ~200 built-in task folders took 200 s on this project's loaded 2-core CPU),
   all built-in tasks only when a name is not found there; an unknown name names its closest match;
3. every task's data is loaded (lm-eval builds a task by loading its dataset). A task whose
   `dataset_path` is `json`/`csv`/`parquet`/`text` reads its local `data_files`; a hub dataset is read
   from the local datasets cache only when the hub is off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, or
   huggingface.co:443 unreachable within `PROBE_TIMEOUT_S`, which sets them): missing data is
   "task X: its data is not available locally ..." (any other failure to build a task, e.g. a bad
   YAML field, is "lm-eval could not build task X (...)");
4. per contender: `Contender.load()` (the Generator of `tunelab generate`: base + adapter + template),
   wrapped as lm-eval's `HFLM(pretrained=model, tokenizer=tokenizer)`, and `lm_eval.simple_evaluate`
   on the built tasks (no chat template, lm-eval's default for its benchmarks; `limit` examples per
   task; `num_fewshot` as the task says unless given).

Results: {"lm_eval_version", "tasks", "settings", "models": [{label, source, kind, "results":
{task: {metric: value, metric + "_stderr": stderr}}}]}; lm-eval's "acc,none" keys lose the ",none" filter
suffix (other filters keep theirs).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
from difflib import get_close_matches

from tunelab.errors import TunelabError

PROBE_TIMEOUT_S = 3.0
INSTALL_HINT = "pip install 'tunelab[lmeval]' (lm-evaluation-harness, the lm_eval package)"


def import_lm_eval():
    """The lm_eval package, or one line saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise TunelabError("--lm-eval needs lm-evaluation-harness, which is not installed", where="--lm-eval",
                           hint=INSTALL_HINT) from None
    return lm_eval


def parse_tasks(spec: list[str] | str) -> list[str]:
    """'a,b' / ['a', 'b,c'] -> ['a', 'b', 'c'] (order kept, duplicates dropped)."""
    parts = [spec] if isinstance(spec, str) else spec
    out: list[str] = []
    for p in parts:
        for t in p.split(","):
            if t.strip() and t.strip() not in out:
                out.append(t.strip())
    if not out:
        raise TunelabError("no task given", where="--lm-eval", hint="e.g. --lm-eval hellaswag,arc_easy")
    return out


def hub_offline() -> bool:
    """True when the Hugging Face hub is off: the offline variables are set, or huggingface.co does not
    answer within PROBE_TIMEOUT_S (the variables are then set, so datasets reads only its cache)."""
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    try:
        socket.create_connection(("huggingface.co", 443), timeout=PROBE_TIMEOUT_S).close()
        return False
    except OSError:
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
        with contextlib.suppress(Exception):
            import huggingface_hub.constants as hc

            hc.HF_HUB_OFFLINE = True
        with contextlib.suppress(Exception):
            import datasets.config as dc

            dc.HF_HUB_OFFLINE = dc.HF_DATASETS_OFFLINE = True
        return True


@contextlib.contextmanager
def quiet():
    """lm-eval's and datasets' warnings and progress bars off (an error must stay one line)."""
    names = ("lm_eval", "lm-eval", "datasets", "huggingface_hub", "fsspec")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
    except Exception:  # noqa: BLE001 - datasets absent or older: nothing to silence
        datasets = None
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for n, lv in levels.items():
            logging.getLogger(n).setLevel(lv)
        if datasets is not None:
            datasets.enable_progress_bars()


def task_manager(names: list[str], include: str | None):
    """lm-eval's TaskManager that knows every name: `include`'s tasks alone when they cover them all."""
    from lm_eval.tasks import TaskManager

    with quiet():
        if include is not None:
            if not os.path.isdir(include):
                raise TunelabError(f"no such folder: {include}", where="--lm-eval-include",
                                   hint="a folder of lm-eval task YAML files")
            tm = TaskManager(include_path=include, include_defaults=False)
            if all(n in tm.all_tasks for n in names):
                return tm
        tm = TaskManager(include_path=include)
    for n in names:
        if n not in tm.all_tasks:
            close = get_close_matches(n, tm.all_tasks, n=1)
            raise TunelabError(f"unknown lm-eval task '{n}'", where="--lm-eval",
                               hint=f"did you mean '{close[0]}'?" if close else
                               "see `lm-eval ls tasks`, or give your own YAML tasks with --lm-eval-include DIR")
    return tm


def _local_data_error(name: str, exc: BaseException, offline: bool) -> TunelabError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    state = "the Hugging Face hub is offline and " if offline else ""
    return TunelabError(
        f"lm-eval task '{name}': its data is not available locally ({state}{type(exc).__name__}: {first})",
        where="--lm-eval",
        hint="run once with network access to cache the dataset, or write a task YAML with `dataset_path: json` "
             "and local `data_files` and pass its folder with --lm-eval-include DIR")


def load_tasks(names: list[str], include: str | None):
    """The TaskManager for `names`, after building each task once (which loads its data: from the local
    files or the datasets cache, so the evaluation's second build is a cache read); one-line errors."""
    import_lm_eval()
    tm = task_manager(names, include)
    offline = hub_offline()
    for n in names:
        try:
            with quiet():
                (tm.load if hasattr(tm, "load") else tm.load_task_or_group)([n])  # load: lm-eval >= 0.4.10
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - lm-eval and datasets raise many types: each becomes one line
            if _is_data_error(e):
                raise _local_data_error(n, e, offline) from None
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise TunelabError(f"lm-eval could not build task '{n}' ({type(e).__name__}: {first})", where="--lm-eval",
                               hint="check the task's YAML (lm-eval's task guide), or run `lm-eval` on it directly") from None
    return tm


DATA_WORDS = ("offline", "not found", "couldn't find", "could not find", "no such file", "connection", "unable to find",
              "doesn't exist", "does not exist", "cannot find", "unreachable", "resolve")


def _is_data_error(e: BaseException) -> bool:
    """A missing file, a hub dataset that is not cached, a network failure: the task's data is not local."""
    if isinstance(e, (FileNotFoundError, ConnectionError, TimeoutError)):
        return True
    names = {c.__name__ for c in type(e).__mro__}
    if names & {"DatasetNotFoundError", "DataFilesNotFoundError", "EmptyDatasetError", "OfflineModeIsEnabled",
                "LocalEntryNotFoundError", "HfHubHTTPError", "RepositoryNotFoundError", "HTTPError"}:
        return True
    return any(w in str(e).lower() for w in DATA_WORDS)


def _clean_results(raw: dict) -> dict:
    """{task: {"acc,none": v, "acc_stderr,none": s, "alias": ...}} -> {task: {"acc": v, "acc_stderr": s}}."""
    out = {}
    for task, metrics in raw.items():
        row = {}
        for key, v in metrics.items():
            if key in ("alias", "name", "sample_len", "sample_count") or not isinstance(v, (int, float)):
                continue
            metric, _, flt = key.partition(",")
            row[metric if flt in ("", "none") else key] = float(v)
        out[task] = row
    return out


def run_tasks(contenders: list, names: list[str], *, include: str | None = None, limit: int | None = None,
              num_fewshot: int | None = None, batch_size: int = 8, log=None) -> dict:
    """Evaluate every contender (eval.compare.Contender) on the tasks; the dict written to lm_eval.json."""
    lm_eval = import_lm_eval()
    tm = load_tasks(names, include)  # every task's data loads before any model does
    from lm_eval.models.huggingface import HFLM

    models = []
    for c in contenders:
        if log:
            log(f"loading {c.label}")
        gen = c.load()
        with quiet():
            lm = HFLM(pretrained=gen.model, tokenizer=gen.tokenizer, batch_size=batch_size)
        if log:
            log(f"lm-eval: {c.label} on {', '.join(names)}")
        with quiet():
            res = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=tm, limit=limit,
                                          num_fewshot=num_fewshot, log_samples=False, bootstrap_iters=1000)
        models.append({"label": c.label, "source": c.source, "kind": c.kind,
                       "results": _clean_results(res["results"]),
                       "n_samples": {t: v.get("effective", v.get("original")) if isinstance(v, dict) else v
                                     for t, v in (res.get("n-samples") or {}).items()}})
    return {"lm_eval_version": getattr(lm_eval, "__version__", "?"), "tasks": names,
            "settings": {"include": include, "limit": limit, "num_fewshot": num_fewshot, "batch_size": batch_size,
                         "chat_template": False},
            "models": models}


def markdown(results: dict) -> str:
    """One table: task, metric, then a column per model."""
    labels = [m["label"] for m in results["models"]]
    lines = ["| task | metric | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for task in results["tasks"]:
        metrics = sorted({k for m in results["models"] for k in m["results"].get(task, {}) if not k.endswith("_stderr")})
        for metric in metrics:
            cells = []
            for m in results["models"]:
                r = m["results"].get(task, {})
                v, s = r.get(metric), r.get(metric + "_stderr")
                cells.append("-" if v is None else f"{v:.4f}" + (f" ± {s:.4f}" if isinstance(s, float) else ""))
            lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
