"""Model sources: aliases, local directories, GGUF files and hub ids, loaded the same way."""

from tunelab.models.registry import ALIASES, ResolvedModel, resolve

__all__ = ["ALIASES", "ResolvedModel", "resolve"]
