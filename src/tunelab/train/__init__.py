"""Training: the loop (engine.py), one recipe per task (recipes/), and `tunelab.train(config)`.

This package is also the function `tunelab.train`:

    import tunelab
    out = tunelab.train("examples/configs/quickstart.yaml", ["train.epochs=1"])   # = tunelab.train.run(...)

Why a callable package and not a function named `train` on `tunelab`: importing any module of this
package (`from tunelab.train.engine import train_loop`) makes Python set `tunelab.train` to this
package, which would replace such a function, or be hidden by it (then `import tunelab.train.engine
as e` and `monkeypatch.setattr("tunelab.train.engine....")` break). So `tunelab.train` is always this
module, in either import order, and the module's class gets a `__call__` that runs `run`. Importing
it stays cheap: `run` imports the recipes (and torch) when called.
"""

from __future__ import annotations

import sys
import types


def run(config, overrides=None, quiet: bool = False):
    """Train what `config` describes and return the task's outcome (`run_dir`, `summary_lines()`, ...).

    config: a YAML path, a dict (the YAML's mapping) or a `tunelab.config.RunConfig`; overrides:
    `key.sub=value` strings as on the command line (`["train.lr=1e-4"]`); quiet: no progress bar
    or status lines. Writes runs/<name>/ like `tunelab train`; errors are one-line TunelabErrors."""
    from tunelab.config import as_config
    from tunelab.train.recipes import run_task

    return run_task(as_config(config, overrides), quiet=quiet)


class _CallablePackage(types.ModuleType):
    """The class of this package's module object: `tunelab.train(...)` is `tunelab.train.run(...)`."""

    def __call__(self, config, overrides=None, quiet: bool = False):
        return run(config, overrides, quiet)

    __call__.__doc__ = run.__doc__


sys.modules[__name__].__class__ = _CallablePackage
