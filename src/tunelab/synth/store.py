"""Crash-safe output files of a synth run.

    pairs.jsonl            kept pairs, the training dataset: {"id", "messages": [user, assistant]}
                           (or {"id", "prompt", "completion"})
    pairs.filtered.jsonl   generated but dropped: {"id", "reason", "generated", "input"}
    pairs.failed.jsonl     teacher kept failing: {"id", "error", "attempts", "input"} (retried on restart)
    pairs.synth.json       settings of the run, then its statistics (written atomically)

Each finished item is one line, appended with a single write, then flushed and fsynced, so a
crash loses at most the line being written. On restart `JsonlLog.repair` cuts a last line that
has no newline or is not valid JSON (a torn write) before anything is appended; an item is done
when its id is in the output or the filtered file, and done items are never generated again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunelab.errors import TunelabError


def side_path(out: Path, kind: str) -> Path:
    """pairs.jsonl -> pairs.<kind>.jsonl (kind 'synth' -> pairs.synth.json)."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.{kind}.json" if kind == "synth" else f"{stem}.{kind}.jsonl")


def write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class JsonlLog:
    """An append-only JSONL file of records that each carry an `id`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = None

    def repair(self) -> int:
        """Cut a torn last line (no trailing newline, or not valid JSON); return the bytes removed.
        A bad line anywhere else is not ours to fix: TunelabError naming it."""
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1  # everything after the last newline is a partial write
        lines = data[:keep].split(b"\n")[:-1]
        offset = 0
        for i, line in enumerate(lines, 1):
            try:
                rec = json.loads(line) if line.strip() else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                rec = "bad"
            if rec == "bad" or (rec is not None and not (isinstance(rec, dict) and "id" in rec)):
                if i == len(lines) and rec == "bad":
                    keep = offset  # torn last line that happens to end in a newline
                    break
                raise TunelabError("not a synth output line (needs a JSON object with an 'id')",
                                   where=f"{self.path}:{i}", hint="pass --overwrite, or choose another --out")
            offset += len(line) + 1
        removed = len(data) - keep
        if removed:
            os.truncate(self.path, keep)
        return removed

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x.strip()]

    def append(self, rec: dict) -> None:
        """One line, one write, flushed and fsynced before returning."""
        if self._f is None:
            self._f = open(self.path, "ab")
        self._f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class SynthStore:
    """The output, filtered and failed logs of one run plus its settings file."""

    def __init__(self, out: str | Path):
        self.out_path = Path(out)
        if self.out_path.suffix.lower() != ".jsonl":
            raise TunelabError(f"the output must be a .jsonl file, got '{self.out_path.name}'", where="--out")
        self.out = JsonlLog(self.out_path)
        self.filtered = JsonlLog(side_path(self.out_path, "filtered"))
        self.failed = JsonlLog(side_path(self.out_path, "failed"))
        self.meta_path = side_path(self.out_path, "synth")

    def open(self, settings: dict, overwrite: bool = False) -> int:
        """Prepare for a (re)start: fresh files with `overwrite`; else check the settings match the earlier run,
        repair torn lines and clear the failed log (those items are retried). Returns bytes cut by repair."""
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        logs = (self.out, self.filtered, self.failed)
        if overwrite:
            for log in logs:
                log.remove()
            self.meta_path.unlink(missing_ok=True)
        elif self.meta_path.exists():
            old = json.loads(self.meta_path.read_text(encoding="utf-8")).get("settings", {})
            diff = [k for k in settings if k in old and old[k] != settings[k]]
            if diff:
                raise TunelabError(f"{self.out_path} was made with different settings ({', '.join(diff)})",
                                   where="--out", hint="use the same settings to resume, --overwrite, or another --out")
        elif self.out_path.exists() and self.out_path.stat().st_size:
            raise TunelabError(f"{self.out_path} exists and is not the output of a synth run ({self.meta_path.name} "
                               "is missing)", where="--out", hint="pass --overwrite, or choose another --out")
        cut = self.out.repair() + self.filtered.repair()
        self.failed.remove()
        write_json_atomic(self.meta_path, {"settings": settings, "complete": False})
        return cut

    def done_ids(self) -> set[str]:
        return {str(r["id"]) for r in self.out.records()} | {str(r["id"]) for r in self.filtered.records()}

    def finish(self, settings: dict, stats: dict, complete: bool) -> None:
        for log in (self.out, self.filtered, self.failed):
            log.close()
        write_json_atomic(self.meta_path, {"settings": settings, "complete": complete, "stats": stats})

    def close(self) -> None:
        for log in (self.out, self.filtered, self.failed):
            log.close()
