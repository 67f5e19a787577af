"""Questions for `rag tune`: a teacher writes the questions each chunk answers, through the synth pipeline.

    <kb>/tune/chunks.jsonl                  the selected chunks, {"id": chunk id, "text": chunk text}
    <kb>/tune/questions-<key>.jsonl         synth output (pairs: generated question -> chunk text), one
                                            file per teacher and prompt (key = sha1 of both, 10 hex digits)
    <kb>/tune/questions-<key>.*.json(l)     synth's filtered / failed / settings files

`tunelab.synth.run_synth` makes this cached and resumable: a chunk whose id is already in the
output (or its filtered file) is never sent to the teacher again, a killed run loses at most the
line being written, and a teacher failure is retried by the next run.

A reply may hold several questions (`per_chunk` > 1 asks for that many, one a line); `parse_questions`
keeps up to `per_chunk` of them: list numbers and labels ("1.", "Question:") stripped, a quoted
question inside a sentence ('What if the user asks: "How ...?"') taken out of its quotes; kept only
if it ends with "?", has 4 words or more and is not chatter ("What a great question!", "What would
you like to ask?": small teachers write these around or instead of the question); repeats dropped.
A chunk whose reply holds no such line gets no question.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from tunelab.synth.prompts import clean_reply
from tunelab.synth.runner import SynthOptions, run_synth

QUESTION_PROMPT = (
    "Here is a passage from the documentation:\n\n{input}\n\n"
    "Write {n} that a user could ask and that this passage answers. Reply with the question only."
)
PASSAGE_CHARS = 1200  # the passage shown to the teacher: ~300 tokens, so the prompt stays small
_NUMBER = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022])\s*")
_CHATTER = re.compile(r"^(?:what a great question|what (?:would|do) you (?:like|want) to (?:ask|know)"
                      r"|what(?:'s| is) the answer to this)", re.IGNORECASE)
_QUOTED = re.compile(r"[\"\u201c]([^\"\u201d]{8,}\?)[\"\u201d]")


def question_prompt(per_chunk: int) -> str:
    what = "one question" if per_chunk == 1 else f"{per_chunk} different questions, one per line,"
    text = QUESTION_PROMPT.replace("{n}", what)
    return text if per_chunk == 1 else text.replace("Reply with the question only.", "Reply with the questions only.")


def parse_questions(text: str, per_chunk: int = 1) -> list[str]:
    """Up to `per_chunk` questions from a teacher reply (rules in the module docstring)."""
    out: list[str] = []
    for line in text.splitlines():
        line = clean_reply("reverse", _NUMBER.sub("", line))
        quoted = _QUOTED.search(line)
        if quoted:
            line = quoted.group(1).strip()
        if (not line.endswith("?") or len(line.split()) < 4 or _CHATTER.match(line)
                or line.lower() in (q.lower() for q in out)):
            continue
        out.append(line)
        if len(out) == per_chunk:
            break
    return out


def questions_file(tune_dir: Path, teacher_name: str, prompt: str) -> Path:
    key = hashlib.sha1(f"{teacher_name}\x00{prompt}".encode()).hexdigest()[:10]
    return tune_dir / f"questions-{key}.jsonl"


def write_chunks(path: Path, chunks: list[dict]) -> None:
    """The synth input: one {"id", "text"} line per chunk, written to a temp file then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(json.dumps({"id": c["id"], "text": c["text"][:PASSAGE_CHARS]}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def generate_questions(tune_dir: Path, chunks: list[dict], teacher, per_chunk: int = 1,
                       log=None) -> tuple[dict[str, list[str]], Path, dict]:
    """({chunk id: questions}, the questions file, synth statistics) for `chunks` (rows with id and text).

    Chunks already answered in the questions file are not generated again (see module docstring)."""
    prompt = question_prompt(per_chunk)
    items = tune_dir / "chunks.jsonl"
    write_chunks(items, chunks)
    out = questions_file(tune_dir, teacher.describe(), prompt)
    opts = SynthOptions(mode="reverse", prompt=prompt, text_field="text", concurrency=4)
    last = [0]

    def progress(stats, total):
        if log and stats.processed - last[0] >= 16:
            last[0] = stats.processed
            log(f"questions: {stats.processed}/{total} chunks")

    stats = run_synth(items, out, teacher, opts, progress=progress)
    wanted = {c["id"] for c in chunks}
    found: dict[str, list[str]] = {}
    for line in out.read_text(encoding="utf-8").splitlines() if out.exists() else []:
        rec = json.loads(line)
        if rec["id"] in wanted:
            qs = parse_questions(rec["messages"][0]["content"], per_chunk)
            if qs:
                found[rec["id"]] = qs
    return found, out, stats.to_dict()
