"""Run a synth job: items -> teacher -> filters -> crash-safe output (see store.py), with progress and token counts.

Work is bounded: a remote teacher gets at most `concurrency` requests in flight (a thread pool fed
one item at a time as others finish); a local teacher generates `batch_size` items per call.
Only the main thread writes files, so lines never interleave.

Every input item (up to `max_items`) ends in exactly one place: the output (kept), the filtered
file (dropped, with its reason) or the failed file (teacher errors; retried by the next run).

Cost (when prices are given) = prompt_tokens / 1000 * price_in + completion_tokens / 1000 * price_out.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from tunelab.synth.filters import Filters, pair_key
from tunelab.synth.items import SynthItem, read_items
from tunelab.synth.prompts import DEFAULT_PROMPTS, check_template, clean_reply, make_pair, render
from tunelab.synth.store import SynthStore
from tunelab.synth.teachers import ItemFailed, TeacherReply


@dataclass
class SynthOptions:
    mode: str = "reverse"
    prompt: str | None = None  # template with {input}; None = the mode's default
    system: str | None = None  # a system message for the teacher
    text_field: str | None = None  # JSONL field with the item text (None = the mode default)
    out_format: str = "messages"  # messages | prompt_completion
    concurrency: int = 4
    max_items: int = 0  # 0 = all
    filters: Filters = field(default_factory=Filters)
    price_in: float = 0.0  # per 1,000 prompt tokens
    price_out: float = 0.0  # per 1,000 completion tokens
    overwrite: bool = False

    @property
    def template(self) -> str:
        return check_template(self.prompt if self.prompt is not None else DEFAULT_PROMPTS[self.mode])


@dataclass
class SynthStats:
    inputs: int = 0
    duplicate_inputs: int = 0
    already_done: int = 0
    processed: int = 0
    kept: int = 0
    filtered: Counter = field(default_factory=Counter)
    failed: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = None
    repaired_bytes: int = 0
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["filtered"] = dict(self.filtered)
        return d

    def summary_lines(self, out: Path) -> list[str]:
        drop = ", ".join(f"{k} {v}" for k, v in sorted(self.filtered.items())) or "none"
        lines = [f"{self.inputs} items: {self.already_done} already done, {self.processed} processed in "
                 f"{self.wall_s:.1f} s ({self.attempts} teacher attempts)",
                 f"kept {self.kept}, filtered {sum(self.filtered.values())} ({drop}), failed {self.failed}",
                 f"tokens: {self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion"
                 + (f", cost {self.cost:.4f}" if self.cost is not None else "")]
        if self.repaired_bytes:
            lines.append(f"cut a torn last line ({self.repaired_bytes} bytes) left by an interrupted run")
        if self.duplicate_inputs:
            lines.append(f"skipped {self.duplicate_inputs} duplicate input lines")
        lines.append(f"pairs: {out}")
        return lines


def _record(opts: SynthOptions, item: SynthItem, user: str, assistant: str) -> dict:
    if opts.out_format == "prompt_completion":
        return {"id": item.id, "prompt": user, "completion": assistant}
    return {"id": item.id, "messages": [{"role": "user", "content": user},
                                        {"role": "assistant", "content": assistant}]}


def _conversation(opts: SynthOptions, item: SynthItem) -> list[dict]:
    msgs = [{"role": "system", "content": opts.system}] if opts.system else []
    return msgs + [{"role": "user", "content": render(opts.template, item.text)}]


def _results_threaded(teacher, opts: SynthOptions, items: list[SynthItem]) -> Iterator[tuple[SynthItem, object]]:
    """(item, TeacherReply | ItemFailed) as they finish, at most `concurrency` in flight."""
    todo = iter(items)
    pool = ThreadPoolExecutor(max_workers=max(1, opts.concurrency))
    running = {}
    try:
        for item in todo:
            running[pool.submit(teacher.complete, _conversation(opts, item))] = item
            if len(running) >= opts.concurrency:
                break
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                item = running.pop(fut)
                try:
                    yield item, fut.result()
                except ItemFailed as e:
                    yield item, e
                nxt = next(todo, None)
                if nxt is not None:
                    running[pool.submit(teacher.complete, _conversation(opts, nxt))] = nxt
    finally:  # on an error or Ctrl-C: drop queued work, do not wait for requests in flight
        pool.shutdown(wait=False, cancel_futures=True)


def _results_batched(teacher, opts: SynthOptions, items: list[SynthItem]) -> Iterator[tuple[SynthItem, object]]:
    for s in range(0, len(items), teacher.batch_size):
        chunk = items[s:s + teacher.batch_size]
        try:
            replies = teacher.complete_batch([_conversation(opts, it) for it in chunk])
        except (RuntimeError, ValueError) as e:  # e.g. out of memory: record the items, go on
            replies = [ItemFailed(f"{type(e).__name__}: {e}", 1)] * len(chunk)
        yield from zip(chunk, replies)


def settings_of(opts: SynthOptions, teacher, input_path: Path) -> dict:
    """What must match for a restart to continue an earlier run's output."""
    return {"mode": opts.mode, "prompt": opts.template, "system": opts.system, "teacher": teacher.describe(),
            "format": opts.out_format, "input": str(input_path)}


def run_synth(input_path: str | Path, out: str | Path, teacher, opts: SynthOptions, progress=None) -> SynthStats:
    """Generate pairs for every not-yet-done item of `input_path` into `out`; returns the statistics.

    `progress(stats, total)` is called after every item (the CLI draws a bar with it)."""
    t0 = time.perf_counter()
    input_path = Path(input_path)
    items, dupes = read_items(input_path, opts.mode, opts.text_field)
    if opts.max_items > 0:
        items = items[: opts.max_items]
    stats = SynthStats(inputs=len(items), duplicate_inputs=dupes)
    store = SynthStore(out)
    if store.out_path.resolve() == input_path.resolve():
        from tunelab.errors import TunelabError

        raise TunelabError("the output would overwrite the input", where="--out", hint="choose another --out")
    settings = settings_of(opts, teacher, input_path)
    stats.repaired_bytes = store.open(settings, overwrite=opts.overwrite)
    done = store.done_ids()
    seen = {pair_key(*_pair_texts(r)) for r in store.out.records()}
    pending = [it for it in items if it.id not in done]
    stats.already_done = len(items) - len(pending)
    results = (_results_batched if getattr(teacher, "batched", False) else _results_threaded)(teacher, opts, pending)
    try:
        for item, res in results:
            _handle(item, res, opts, store, stats, seen)
            if progress is not None:
                progress(stats, len(pending))
    except BaseException:
        stats.wall_s = time.perf_counter() - t0
        store.close()
        raise
    stats.wall_s = time.perf_counter() - t0
    if opts.price_in or opts.price_out:
        # e.g. 12,000 prompt tokens at 0.15 per 1k + 3,000 completion tokens at 0.60 per 1k = 1.80 + 1.80
        stats.cost = stats.prompt_tokens / 1000 * opts.price_in + stats.completion_tokens / 1000 * opts.price_out
    store.finish(settings, stats.to_dict(), complete=stats.failed == 0)
    return stats


def _pair_texts(rec: dict) -> tuple[str, str]:
    if "messages" in rec:
        return rec["messages"][0]["content"], rec["messages"][-1]["content"]
    return rec.get("prompt", ""), rec.get("completion", "")


def _handle(item: SynthItem, res, opts: SynthOptions, store: SynthStore, stats: SynthStats, seen: set) -> None:
    stats.processed += 1
    if isinstance(res, ItemFailed):
        stats.failed += 1
        stats.attempts += res.attempts
        store.failed.append({"id": item.id, "error": str(res), "attempts": res.attempts, "input": item.text})
        return
    assert isinstance(res, TeacherReply)
    stats.attempts += res.attempts
    stats.prompt_tokens += res.prompt_tokens
    stats.completion_tokens += res.completion_tokens
    generated = clean_reply(opts.mode, res.text)
    reason = opts.filters.reason(generated, item.text, opts.template)
    if reason is None:
        key = pair_key(*make_pair(opts.mode, item.text, item.reply, generated))
        reason = "duplicate" if key in seen else None
    if reason is not None:
        stats.filtered[reason] += 1
        store.filtered.append({"id": item.id, "reason": reason, "generated": res.text, "input": item.text})
        return
    seen.add(key)
    stats.kept += 1
    store.out.append(_record(opts, item, *make_pair(opts.mode, item.text, item.reply, generated)))
