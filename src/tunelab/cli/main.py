"""The `tunelab` command.

Every command raises `TunelabError` for bad input; `run()` prints it as one line
(`error: <where>: <what> - <hint>`) and exits 2. `--debug` shows the traceback instead.
Commands live in their own modules, which register on `cli.app.app`; `load_command_modules()` imports
them plainly (tests/test_layers.py reads those imports) and `load_groups()` names the groups it mounts.
A module that does not import is an error, never a silently absent command. `tunelab --install-completion`
installs shell completion. The commands in TRAINING_COMMANDS re-execute once with the training
malloc tunables (`trains(argv)` decides; runtime/allocator.py).
"""

from __future__ import annotations

import importlib
import os
import sys

from tunelab.cli.app import app  # noqa: F401  (re-exported: tests and tools mount on it)
from tunelab.errors import TunelabError
from tunelab.quant import bnb_compat
# commands that train: they run under the glibc malloc tunables of runtime/allocator.py (re-executed once);
# the same names runtime/processes.py looks for when it tells of another training on the machine
from tunelab.runtime.processes import TRAINING as TRAINING_COMMANDS


def load_command_modules() -> list:
    """The modules that register plain commands on `app` (import side effect: @app.command()), imported
    here as plain statements, inside the function so that importing cli.main stays cheap. The import
    order is the order of `tunelab --help`."""
    import tunelab.cli.models
    import tunelab.cli.train
    import tunelab.cli.infer
    import tunelab.cli.eval
    import tunelab.cli.merge
    import tunelab.cli.export
    import tunelab.cli.predict
    import tunelab.cli.doctor

    cli = tunelab.cli
    return [cli.models, cli.train, cli.infer, cli.eval, cli.merge, cli.export, cli.predict, cli.doctor]


def load_groups() -> dict:
    """Group name -> the module defining its `app = typer.Typer(...)`, mounted as a command group."""
    from tunelab.cli import data, quantize, rag, serve

    return {"quantize": quantize, "rag": rag, "data": data, "serve": serve}


_mounted: set[str] = set()


def _mount(command_modules: list[str] | None = None, subapps: dict[str, str] | None = None) -> None:
    """Import the command modules and mount the groups, each once (default: `load_command_modules()`,
    `load_groups()`; modules given by dotted name are imported by name).

    A module that cannot be imported is an error (ModuleNotFoundError propagates): a command never
    goes missing silently."""
    for mod in command_modules or []:
        importlib.import_module(mod)
    if command_modules is None:
        load_command_modules()
    groups = load_groups() if subapps is None else subapps
    for name, mod in groups.items():
        sub = importlib.import_module(mod) if isinstance(mod, str) else mod
        if name not in _mounted:
            app.add_typer(sub.app, name=name)
            _mounted.add(name)
    _hide_flag_metavars()


def _hide_flag_metavars() -> None:
    """Rich help shows no value placeholder after a flag (`--overwrite`, not `--overwrite <bool>`):
    a flag takes no value. typer's rich help prints the type of every option, flags included."""
    from typer.core import TyperOption

    show = getattr(TyperOption, "display_type_rich", None)
    if show is None or getattr(show, "_tunelab_flags_hidden", False):  # another typer, or done already
        return

    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        return show(self, ctx)

    display_type_rich._tunelab_flags_hidden = True
    TyperOption.display_type_rich = display_type_rich


def quiet_libraries(debug: bool = False) -> None:
    """Silence library progress bars, info logs and warnings; tunelab prints its own. With --debug
    (`debug`) the libraries' warnings and logs show as they would without tunelab."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    bnb_compat.defer_bitsandbytes_import()  # no bitsandbytes (nor its CPU-kernel lines) where nothing uses it
    if debug:
        return
    os.environ.setdefault("LANCEDB_LOG", "error")  # lancedb (Rust) logs a WARN line when it creates a table
    warnings.filterwarnings("ignore")  # third-party warnings: shown with --debug
    warnings.filterwarnings("default", module=r"tunelab(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*requires_grad=True to a scalar.*")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # transformers absent: nothing to quiet
        pass


def subcommand(argv: list[str]) -> str | None:
    """The command an argument list runs: its first word that is not an option (the root's only
    option, --debug, takes no value), e.g. "train" for `tunelab --debug train run.yaml`."""
    return next((a for a in argv if not a.startswith("-")), None)


def trains(argv: list[str]) -> bool:
    """Does this command line train (TRAINING_COMMANDS), and so re-execute with the training tunables?"""
    return subcommand(argv) in TRAINING_COMMANDS


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    if argv is None and trains(sys.argv[1:]):  # a real `tunelab train`/`quickstart`, not a call from Python
        from tunelab.runtime.allocator import reexec_with_training_tunables

        reexec_with_training_tunables()  # glibc malloc without tcache/fastbins: runtime/allocator.py
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if "_TUNELAB_COMPLETE" not in os.environ:  # shell completion answers fast: no library imports
        quiet_libraries(debug)
    _mount()
    try:
        code = app(args=argv, prog_name="tunelab", standalone_mode=False)
    except TunelabError as e:
        if debug:
            raise
        print(f"error: {e.one_line()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:  # click's own exceptions (typer may vendor click, so match by shape)
        name = type(e).__name__
        if name == "Exit":
            sys.exit(getattr(e, "exit_code", 0))
        if name == "Abort":
            sys.exit(130)
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # UsageError, BadParameter, ...
            e.show()
            sys.exit(2)
        raise
    if isinstance(code, int) and not isinstance(code, bool) and code:  # typer.Exit(n), or Ctrl-C (typer: 130)
        if code == 130:
            print("interrupted", file=sys.stderr)
        sys.exit(code)
    sys.exit(0)


if __name__ == "__main__":  # registrations target the importable module, not this __main__ copy
    from tunelab.cli.main import run as _run

    _run()
