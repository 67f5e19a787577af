"""Evaluate and compare models on one data file: `evaluate(contenders, data, ...)` -> results dict.

A `Contender` is one column of the comparison: a run (base + adapter), a run's base (`--base`), a model
(alias, folder, hub id), or any of those with a `prompt_fn` that rewrites the prompt turns (retrieval:
the CLI passes one built from tunelab.rag, which sits above this layer). Each example's last assistant
turn is the reference and the turns before it the prompt.

Per example and contender: the teacher-forced NLL of the reference (`tunelab.losses.reply_nll` on the
example tokenized with the contender's template and `train_on: last`, as sft's validation loss is) and
a greedy reply (`Generator.reply_batch`, batched, on tunelab's decode engine when it applies), scored by
eval/text_metrics. Both are cached on disk per (model fingerprint, prompt + reference hash, settings):
a second evaluation with one model more loads and runs only the new one.
Aggregates: token-weighted mean NLL (perplexity = exp of it), means of the reply scores, each with a
bootstrap 95% interval over examples (eval/bootstrap).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from tunelab.errors import TunelabError
from tunelab.eval import bootstrap, text_metrics
from tunelab.eval.metrics import perplexity

DEFAULT_MAX_LENGTH = 1024
DEFAULT_MAX_NEW_TOKENS = 128


@dataclass
class Contender:
    label: str
    source: str  # run directory or model name
    kind: str  # run | base | model
    fingerprint: str
    max_length: int = DEFAULT_MAX_LENGTH
    truncation_side: str = "right"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS  # a run's eval.max_new_tokens, as its report sampled
    prompt_fn: Callable[[list[dict]], list[dict]] | None = None  # prompt turns -> the turns sent (retrieval)
    variant: str = ""  # e.g. "rag:NAME", part of the cache key

    @property
    def run_dir(self) -> str | None:
        return self.source if self.kind in ("run", "base") else None

    def load(self):
        from tunelab.infer.generate import Generator

        if self.kind == "model":
            return Generator.from_model(self.source)
        from tunelab.runs.rundir import RunDir

        if self.kind == "base" and not RunDir(self.source).adapter_dir.is_dir():
            # a full / freeze / qat run saved its trained model: the base is the run's model.name
            from tunelab.runs.load import load_run, load_run_base

            rd, _ = load_run(self.source)
            model, tok = load_run_base(rd.config)
            return Generator(model.eval(), tok, rd.template())
        return Generator.from_run(self.source, base=self.kind == "base")

    def with_prompt(self, fn, variant: str, suffix: str) -> "Contender":
        return replace(self, label=self.label + suffix, prompt_fn=fn, variant=variant)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def _files_digest(folder: Path, names: tuple[str, ...]) -> str:
    out = []
    for n in names:
        p = folder / n
        if p.is_file():
            out.append(_digest(n, p.read_bytes()) if p.stat().st_size < 64 << 20 else _digest(n, p.stat().st_size,
                                                                                             p.stat().st_mtime_ns))
    return _digest(*out)


def contenders_for(name: str, base: bool) -> list[Contender]:
    """The contenders one MODEL argument names: a generative run (and its base with `base`), or a model."""
    from tunelab.runs.kinds import GENERATIVE_TASKS, run_or_model

    found = run_or_model(name, GENERATIVE_TASKS, "eval", where="MODEL")
    if found is None:
        p = Path(name).expanduser()
        fp = _digest("model", name, _files_digest(p, ("config.json", "model.safetensors")) if p.is_dir() else "")
        return [Contender(name, name, "model", fp)]
    rd, cfg = found
    data = cfg.get("data") or {}
    files = (rd.config_path, rd.template_path, rd.adapter_dir / "adapter_model.safetensors",
             rd.model_dir / "model.safetensors", rd.quantized_dir / "model.safetensors")
    run_fp = _files_digest(rd.path, tuple(p.relative_to(rd.path).as_posix() for p in files))
    common = dict(max_length=int(data.get("max_length") or DEFAULT_MAX_LENGTH),
                  truncation_side=data.get("truncation_side") or "right",
                  max_new_tokens=int((cfg.get("eval") or {}).get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS))
    out = [Contender(rd.path.name, str(rd.path), "run", _digest("run", run_fp), **common)]
    if base:
        out.append(Contender(f"{rd.path.name} (base)", str(rd.path), "base",
                             _digest("base", (cfg.get("model") or {}).get("name"), rd.path.resolve()), **common))
    return out


# ---- data ----------------------------------------------------------------------------------------------------
@dataclass
class Item:
    prompt: list[dict]  # the turns before the reference
    reference: str
    where: str
    meta: dict = field(default_factory=dict)
    keywords: list[str] | None = None  # the record's `keywords` field (metric keywords)


def load_items(path: str | Path, columns: dict[str, str] | None = None) -> list[Item]:
    """Prompt + reference per example of an sft-shaped file, its fields renamed by `columns` first ({our
    field: the file's}, as data.columns); one-line TunelabError without references."""
    from tunelab.data.formats import to_examples
    from tunelab.data.sources import read_records

    records = read_records(path, "--data")
    if not records:
        raise TunelabError("the file holds no example", where=str(path))
    try:
        examples = to_examples(records, "auto", "sft", columns=columns or None)
    except TunelabError as e:
        if columns and e.message.startswith("missing column"):
            raise TunelabError(e.message, where=e.where or str(path), hint=e.hint) from None
        raise TunelabError(f"no assistant reply to use as the reference ({e.message})", where=e.where or str(path),
                           hint="give conversations ending with the assistant turn to compare against "
                                "(messages, prompt/completion, instruction/output), or a classification "
                                "file for classify runs") from None
    items = [Item(ex.messages[:-1], ex.messages[-1]["content"], ex.where) for ex in examples]
    with_kw = [r for r in records if r.data.get("keywords") is not None]
    if with_kw and len(with_kw) < len(records):
        missing = next(r for r in records if r.data.get("keywords") is None)
        raise TunelabError("an example has no 'keywords' while others have", where=missing.where,
                           hint="give every example its keywords, or none")
    for it, r in zip(items, records):
        if with_kw:
            it.keywords = text_metrics.keywords_field(r.data["keywords"], r.where)
    return items


# ---- the cache -----------------------------------------------------------------------------------------------
class Cache:
    """One small JSON file per (contender fingerprint, example, settings) key, written atomically."""

    def __init__(self, directory: str | Path | None):
        self.dir = Path(directory) if directory is not None else None
        self.hits = self.misses = 0

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str):
        if self.dir is None:
            return None
        try:
            value = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, value) -> None:
        if self.dir is None:
            return
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, p)


def default_cache_dir(out: str | Path | None) -> Path:
    if out is not None:
        return Path(out) / "cache"
    from tunelab.models.registry import tunelab_home

    return tunelab_home() / "eval-cache"


# ---- one contender -------------------------------------------------------------------------------------------
def _nll(gen, c: Contender, messages: list[dict]) -> tuple[float, int]:
    """(sum of the reference's token NLLs, its token count): reply_nll on this one example."""
    from tunelab.data.formats import ChatExample
    from tunelab.data.tokenize import tokenize_example
    from tunelab.losses import reply_nll

    t = tokenize_example(ChatExample(messages), gen.template, gen.tokenizer, c.max_length, c.truncation_side,
                         train_on="last")
    if t.n_target == 0:
        return 0.0, 0
    return reply_nll(gen.model, [t], gen.tokenizer.pad_token_id, 1, gen.autocast_dtype) * t.n_target, t.n_target


def run_contender(c: Contender, items: list[Item], metrics: list[str], cache: Cache, max_new_tokens: int | None,
                  batch_size: int, log=None) -> list[dict]:
    """Per example: {"prompt": turns sent, "reply", "nll_sum", "tokens"} from the cache or the model
    (`max_new_tokens` None: the contender's own, a run's eval.max_new_tokens)."""
    max_new_tokens = max_new_tokens or c.max_new_tokens
    sent = [c.prompt_fn(it.prompt) if c.prompt_fn else it.prompt for it in items]
    want_nll = any(m in metrics for m in text_metrics.TEACHER_FORCED)
    want_gen = any(m in metrics for m in text_metrics.GENERATED)
    rows, keys = [], []
    for it, p in zip(items, sent):
        ex = _digest(json.dumps(p, sort_keys=True, ensure_ascii=False), it.reference)
        keys.append({"nll": _digest(c.fingerprint, c.variant, ex, "nll", c.max_length, c.truncation_side),
                     "gen": _digest(c.fingerprint, c.variant, ex, "greedy", max_new_tokens)})
        rows.append({"prompt": p})
    gen = None
    todo_gen = []
    for i, (row, k, it) in enumerate(zip(rows, keys, items)):
        if want_nll:
            hit = cache.get(k["nll"])
            if hit is None:
                gen = gen or _load(c, log)
                s, n = _nll(gen, c, row["prompt"] + [{"role": "assistant", "content": it.reference}])
                hit = {"nll_sum": s, "tokens": n}
                cache.put(k["nll"], hit)
            row.update(hit)
        if want_gen:
            hit = cache.get(k["gen"])
            if hit is None:
                todo_gen.append(i)
            else:
                row["reply"] = hit["reply"]
    if todo_gen:
        gen = gen or _load(c, log)
        replies = gen.reply_batch([rows[i]["prompt"] for i in todo_gen], max_new_tokens=max_new_tokens,
                                  batch_size=batch_size)
        for i, r in zip(todo_gen, replies):
            rows[i]["reply"] = r
            cache.put(keys[i]["gen"], {"reply": r})
    return rows


def _load(c: Contender, log):
    if log:
        log(f"loading {c.label}")
    return c.load()


# ---- aggregation ---------------------------------------------------------------------------------------------
def aggregate(rows: list[dict], metrics: list[str]) -> dict:
    """{metric: {"value", "low", "high", "n"}} over one contender's example rows."""
    out = {}
    if "nll" in metrics or "perplexity" in metrics:
        kept = [r for r in rows if r.get("tokens")]
        per = [r["nll_sum"] / r["tokens"] for r in kept]
        w = [float(r["tokens"]) for r in kept]
        nll = bootstrap.summary(per, w)
        if "nll" in metrics:
            out["nll"] = nll
        if "perplexity" in metrics:
            out["perplexity"] = {"value": perplexity(nll["value"]), "low": perplexity(nll["low"]),
                                 "high": perplexity(nll["high"]), "n": nll["n"]}
    for m in text_metrics.GENERATED:
        if m in metrics:
            out[m] = bootstrap.summary([r["scores"][m] for r in rows])
    return out


def sent(c: Contender, row: dict) -> str | None:
    """The prompt a variant actually sent (retrieval rewrote it), for results.json; None for the others."""
    return render_prompt(row["prompt"]) if c.prompt_fn else None


def render_prompt(turns: list[dict]) -> str:
    return "\n".join(f"{t['role']}: {t['content']}" for t in turns)


def evaluate(contenders: list[Contender], items: list[Item], metrics: list[str], *, contains: str | None = None,
             regex: str | None = None, max_new_tokens: int | None = None, batch_size: int = 16, cache: Cache | None = None,
             judge=None, data: str = "", log=None) -> dict:
    """The results dict written to results.json (see docs/eval.md for its shape)."""
    labels = [c.label for c in contenders]
    if len(set(labels)) != len(labels):
        raise TunelabError(f"a model is named twice: {', '.join(sorted({x for x in labels if labels.count(x) > 1}))}",
                           where="MODEL", hint="pass each model once")
    if "keywords" in metrics and not all(it.keywords for it in items):
        raise TunelabError("metric keywords needs a 'keywords' field in every example", where=data or "--data")
    cache = cache or Cache(None)
    pattern = text_metrics.compile_regex(regex)
    per_model = {}
    for c in contenders:
        rows = run_contender(c, items, metrics, cache, max_new_tokens, batch_size, log)
        for r, it in zip(rows, items):
            r["scores"] = text_metrics.score(r["reply"], it.reference, metrics, contains, pattern,
                                            it.keywords) if "reply" in r else {}
            if r.get("tokens"):
                r["scores"]["nll"] = r["nll_sum"] / r["tokens"]
        per_model[c.label] = rows
    results = {
        "data": str(data), "n_examples": len(items), "metrics": metrics,
        "settings": {"max_new_tokens": max_new_tokens or sorted({c.max_new_tokens for c in contenders}),
                     "greedy": True, "contains": contains, "regex": regex,
                     "bootstrap": {"resamples": bootstrap.RESAMPLES, "seed": bootstrap.SEED, "level": 0.95}},
        "models": [{"label": c.label, "source": c.source, "kind": c.kind, "variant": c.variant,
                    "max_new_tokens": max_new_tokens or c.max_new_tokens,
                    "metrics": aggregate(per_model[c.label], metrics)} for c in contenders],
        "examples": [{"where": it.where, "prompt": render_prompt(it.prompt), "reference": it.reference,
                      "models": {lab: {k: v for k, v in (("reply", per_model[lab][i].get("reply")),
                                                         ("tokens", per_model[lab][i].get("tokens")),
                                                         ("prompt_sent", sent(c, per_model[lab][i])),
                                                         ("scores", per_model[lab][i]["scores"])) if v is not None}
                                 for lab, c in zip(labels, contenders)}}
                     for i, it in enumerate(items)],
        "cache": {"hits": cache.hits, "misses": cache.misses, "dir": str(cache.dir) if cache.dir else None},
    }
    if judge is not None and len(contenders) > 1 and any(m in metrics for m in text_metrics.GENERATED):
        from tunelab.eval.judge import compare

        prompts = [render_prompt(it.prompt) for it in items]
        refs = [it.reference for it in items]
        first = [r["reply"] for r in per_model[labels[0]]]
        results["judge"] = {"url": judge.url, "model": judge.model, "first": labels[0], "pairs": {}}
        for lab in labels[1:]:
            results["judge"]["pairs"][lab] = compare(judge, prompts, refs, first, [r["reply"] for r in per_model[lab]])
    return results


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
