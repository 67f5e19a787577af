"""Synthetic training pairs from a teacher model: `tunelab data synth`.

    items.py     input items and their stable ids
    prompts.py   teacher prompt per mode (reverse | respond | augment), reply cleanup, pair building
    teachers.py  OpenAI-compatible HTTP teacher (retries, backoff) and local Generator teacher (batched)
    filters.py   length / refusal / echo filters and pair dedupe
    store.py     append-only, fsynced, self-repairing output files (resume after a crash)
    runner.py    the loop: bounded concurrency, progress, token and cost accounting
"""

from tunelab.synth.filters import DEFAULT_REFUSALS, Filters
from tunelab.synth.items import MODES, SynthItem, read_items, stable_id
from tunelab.synth.prompts import DEFAULT_PROMPTS
from tunelab.synth.runner import SynthOptions, SynthStats, run_synth
from tunelab.synth.teachers import LocalTeacher, OpenAITeacher

__all__ = ["DEFAULT_PROMPTS", "DEFAULT_REFUSALS", "Filters", "LocalTeacher", "MODES", "OpenAITeacher",
           "SynthItem", "SynthOptions", "SynthStats", "read_items", "run_synth", "stable_id"]
