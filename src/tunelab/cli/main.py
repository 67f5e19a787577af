"""The `tunelab` command.

Every command raises `TunelabError` for bad input; `run()` prints it as one line
(`error: <where>: <what> - <hint>`) and exits 2. `--debug` shows the traceback instead.
Sub-command groups live in their own modules and are mounted from SUBAPPS.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from tunelab.errors import TunelabError

app = typer.Typer(
    name="tunelab",
    help="Adapt an open LLM to your use case on the machine you have.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# name -> module defining `app = typer.Typer(...)`; a group whose module is absent is skipped.
SUBAPPS = {
    "quantize": "tunelab.cli.quantize",
    "rag": "tunelab.cli.rag",
    "data": "tunelab.cli.data",
}
# modules that register plain commands on `app` (import side effect: @app.command()).
COMMAND_MODULES = ["tunelab.cli.models", "tunelab.cli.train", "tunelab.cli.infer",
                   "tunelab.cli.merge",
                   "tunelab.cli.predict",
                   ]

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _state["debug"] = debug


def _mount() -> None:
    for mod in COMMAND_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
    for name, mod in SUBAPPS.items():
        try:
            sub = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        app.add_typer(sub.app, name=name)


def quiet_libraries() -> None:
    """Silence library progress bars and info logs; tunelab prints its own."""
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
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


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    if argv is None and subcommand(sys.argv[1:]) == "train":  # a real `tunelab train`, not a call from Python
        from tunelab.train.allocator import reexec_with_training_tunables

        reexec_with_training_tunables()  # glibc malloc without tcache/fastbins: train/allocator.py
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    quiet_libraries()
    _mount()
    try:
        app(args=argv, standalone_mode=False)
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
    sys.exit(0)


if __name__ == "__main__":  # registrations target the importable module, not this __main__ copy
    from tunelab.cli.main import run as _run

    _run()
