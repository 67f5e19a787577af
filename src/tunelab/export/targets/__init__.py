"""The export targets, one object each: `tunelab export --to`, the Studio's Export buttons and
`tunelab push --what` all read REGISTRY.

    gguf       targets/gguf.py        DIR/<run>-<quant>.gguf (merged, then written as GGUF)
    ollama     targets/ollama.py      the gguf file + a Modelfile checked by reading it back
    hf         targets/hf.py          a merged transformers folder
    lora-gguf  targets/lora_gguf.py   the adapter alone, for llama.cpp --lora

Adding a target: a module here with a `Target` subclass (export/targets/base.py: name, label, quants,
default_quant, default_folder, a writer, its `ExportResult` subclass) and one line in REGISTRY below.
"""

from __future__ import annotations

from tunelab.errors import TunelabError
from tunelab.export.targets.base import Export, ExportResult, Target
from tunelab.export.targets.gguf import GgufTarget
from tunelab.export.targets.hf import HfTarget
from tunelab.export.targets.lora_gguf import LoraGgufTarget
from tunelab.export.targets.ollama import OllamaTarget

__all__ = ["REGISTRY", "Export", "ExportResult", "Target", "names", "push_targets", "studio_targets", "target"]

REGISTRY: dict[str, Target] = {t.name: t for t in (
    GgufTarget(),
    OllamaTarget(),
    HfTarget(),
    LoraGgufTarget(),
)}


def names() -> tuple[str, ...]:
    """Every `--to` value, in registry order."""
    return tuple(REGISTRY)


def target(name: str | None) -> Target:
    """The target called `name`. Raises TunelabError (one line naming the choices) for any other name."""
    if name not in REGISTRY:
        raise TunelabError(f"unknown export target '{name}'", where="--to", hint=f"one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def studio_targets() -> list[Target]:
    """The targets the Studio offers as Export buttons (`Target.studio`), in registry order."""
    return [t for t in REGISTRY.values() if t.studio]


def push_targets() -> dict[str, Target]:
    """`tunelab push --what` value -> the target whose folder it uploads (`Target.push_as`)."""
    return {t.push_as: t for t in REGISTRY.values() if t.push_as}
