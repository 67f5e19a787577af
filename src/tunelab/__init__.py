"""tunelab: adapt an open LLM to your use case on the machine you have.

The Python API (src/tunelab/api.py; README, "Python API"):

    tunelab.train(config, overrides=None, quiet=False)   train a YAML path / dict / RunConfig -> outcome
    tunelab.load(run)                                    a finished run -> Generator or Classifier
    tunelab.quantize(model, fmt="nf4", out=None, ...)    post-training quantization (+ packed checkpoint)
    tunelab.rag                                          knowledge bases: index, query, ask, evaluate

Everything loads on first use (the functions, and any subpackage: `tunelab.quant.load(...)` after a
bare `import tunelab`): `import tunelab` imports neither torch nor transformers.
`tunelab.train` is the training subpackage itself, made callable (src/tunelab/train/__init__.py), so
it stays the function whatever else of the package has been imported.
"""

__version__ = "0.1.0"

__all__ = ["load", "quantize", "rag", "train"]


def __getattr__(name: str):
    if name in ("load", "quantize"):
        from tunelab import api

        globals()[name] = value = getattr(api, name)
        return value
    import importlib.util

    if not name.startswith("_") and importlib.util.find_spec(f"tunelab.{name}") is not None:
        # a subpackage or module (train, rag, quant, ...): importing it sets the attribute, so this runs once
        return importlib.import_module(f"tunelab.{name}")
    raise AttributeError(f"module 'tunelab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
