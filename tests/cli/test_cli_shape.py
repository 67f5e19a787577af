"""The CLI reads like a CLI: flags show no value placeholder, shell completion installs, a missing
command module is an error, and the commands that train re-execute with the training tunables."""

import contextlib
import io
import os
import subprocess
import sys

import pytest

TUNELAB = [sys.executable, "-m", "tunelab"]


def help_text(*path: str) -> str:
    from tunelab.cli.main import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        run([*path, "--help"])
    assert e.value.code == 0, path
    return out.getvalue()


def command_paths():
    """Every command and group of `tunelab`, as argument lists (["train"], ["rag", "ask"], ...)."""
    import typer

    from tunelab.cli.main import _mount, app

    _mount()

    def walk(cmd, path):
        yield path
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


def test_no_help_text_shows_a_bool_placeholder():
    paths = command_paths()
    assert ["train"] in paths and ["quickstart"] in paths and ["rag", "index"] in paths and ["doctor"] in paths
    for path in paths:
        text = help_text(*path)
        assert "<bool>" not in text, path
    train = help_text("train")
    assert "--overwrite" in train and "--resume" in train  # the flags are still listed


def test_completion_options_are_offered_and_install(tmp_path):
    root = help_text()
    assert "--install-completion" in root and "--show-completion" in root
    env = {**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"}  # never touches the real ~/.bashrc
    # typer finds the shell in the parent processes (shellingham): run under bash, as from a terminal, not
    # as a child of whatever started pytest (a background job's parent is no shell); `; exit` keeps bash
    # from exec-ing the command in its place
    in_bash = ["bash", "-c", '"$@"; exit $?', "_"]
    shown = subprocess.run([*in_bash, *TUNELAB, "--show-completion"], capture_output=True, text=True, env=env,
                           timeout=120)
    assert shown.returncode == 0 and "_TUNELAB_COMPLETE=complete_bash" in shown.stdout, shown.stderr
    installed = subprocess.run([*in_bash, *TUNELAB, "--install-completion"], capture_output=True, text=True,
                               env=env, timeout=120)
    assert installed.returncode == 0, installed.stderr
    assert "_TUNELAB_COMPLETE" in (tmp_path / ".bash_completions" / "tunelab.sh").read_text()
    assert ".bash_completions/tunelab.sh" in (tmp_path / ".bashrc").read_text()
    done = subprocess.run([*TUNELAB], capture_output=True, text=True, timeout=120,
                          env={**env, "_TUNELAB_COMPLETE": "complete_bash", "COMP_WORDS": "tunelab doc",
                               "COMP_CWORD": "1"})
    assert done.returncode == 0 and done.stdout.split() == ["doctor"], done.stdout + done.stderr


def test_a_missing_command_module_is_an_error():
    from tunelab.cli.main import _mount

    with pytest.raises(ModuleNotFoundError, match="tunelab.cli.no_such_module"):
        _mount(command_modules=["tunelab.cli.no_such_module"], subapps={})
    with pytest.raises(ModuleNotFoundError, match="tunelab.cli.no_such_group"):
        _mount(command_modules=[], subapps={"nope": "tunelab.cli.no_such_group"})


def test_mounting_twice_adds_each_group_once():
    import typer

    from tunelab.cli.main import _mount, app

    _mount()
    _mount()
    groups = [g.name for g in app.registered_groups]
    assert sorted(groups) == sorted(set(groups))
    assert {"quantize", "rag", "data"} <= set(typer.main.get_command(app).commands)


@pytest.mark.parametrize("argv, trains", [
    (["train", "run.yaml"], True),
    (["--debug", "train", "run.yaml"], True),
    (["quickstart"], True),
    (["--debug", "quickstart", "train.max_steps=3"], True),
    (["generate", "runs/x", "-p", "train"], False),
    (["doctor"], False),
    (["--help"], False),
    ([], False),
])
def test_the_commands_that_train_reexecute(argv, trains):
    from tunelab.cli import main

    assert main.trains(argv) is trains
    assert set(main.TRAINING_COMMANDS) == {"train", "quickstart"}


def test_run_reexecutes_for_quickstart_only_from_the_console(monkeypatch):
    """run() (argv None = a real command line) asks allocator to re-exec for quickstart, as for train."""
    from tunelab.cli import main
    from tunelab.runtime import allocator

    calls = []
    monkeypatch.setattr(allocator, "reexec_with_training_tunables", lambda: calls.append(True))
    monkeypatch.setattr(sys, "argv", ["tunelab", "quickstart", "--help"])
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit):
        main.run()
    assert calls == [True]
    monkeypatch.setattr(sys, "argv", ["tunelab", "models", "--help"])
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit):
        main.run()
    assert calls == [True]


def test_models_keeps_every_alias_whole_at_80_columns():
    import subprocess
    import sys

    from tunelab.models.registry import ALIASES

    r = subprocess.run([sys.executable, "-m", "tunelab", "models"], capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    for name in ALIASES:
        assert name in r.stdout, name
