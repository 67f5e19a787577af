"""runtime/allocator.py: the glibc tunables a training process runs with, and `tunelab train`
re-executing itself once with them."""

import os
import subprocess
import sys

import pytest

from tunelab.runtime import allocator

pytestmark = pytest.mark.skipif(not allocator.is_glibc(), reason="glibc only")


def test_training_env_adds_the_tunables_and_keeps_the_users_own():
    env = allocator.training_env({"PATH": "/bin"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0"
    env = allocator.training_env({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=3:glibc.cpu.x86_foo=1"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.tcache_count=3:glibc.cpu.x86_foo=1:glibc.malloc.mxfast=0"


def test_the_train_subcommand_is_found_after_root_options():
    from tunelab.cli.main import subcommand

    assert subcommand(["train", "run.yaml"]) == "train"
    assert subcommand(["--debug", "train", "run.yaml"]) == "train"
    assert subcommand(["--debug", "memory", "m", "--method", "lora"]) == "memory"
    assert subcommand(["--help"]) is None


def test_tunelab_train_reexecutes_once_with_the_tunables(tmp_path):
    """A real `tunelab train` command line sees the tunables in its own environment (checked by a
    config error after the re-exec: the error comes from the new process, exit code 2)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, sys\n"
        "from tunelab.cli import main\n"
        "print('TUNABLES=' + os.environ.get('GLIBC_TUNABLES', ''), flush=True)\n"
        "sys.argv = ['tunelab', 'train', sys.argv[1]]\n"
        "main.run()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "TUNELAB_KEEP_MALLOC")}
    p = subprocess.run([sys.executable, str(probe), str(tmp_path / "missing.yaml")], capture_output=True, text=True,
                       env=env, timeout=300)
    lines = [x for x in p.stdout.splitlines() if x.startswith("TUNABLES=")]
    assert lines == ["TUNABLES=", "TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0"]  # before, after
    assert p.returncode == 2 and "error:" in p.stderr
    env["TUNELAB_KEEP_MALLOC"] = "1"
    p = subprocess.run([sys.executable, str(probe), str(tmp_path / "missing.yaml")], capture_output=True, text=True,
                       env=env, timeout=300)
    assert [x for x in p.stdout.splitlines() if x.startswith("TUNABLES=")] == ["TUNABLES="]
    assert p.returncode == 2


def test_malloc_mb_counts_a_live_buffer_in_use():
    """glibc's own account: a 64 MiB tensor shows in in_use while alive (heap >= in_use always)."""
    import torch

    before = allocator.malloc_mb()
    x = torch.ones(16 * 2**20)  # 64 MiB, written so it is really there
    during = allocator.malloc_mb()
    del x
    assert before is not None and during is not None
    assert during["in_use"] - before["in_use"] >= 63
    assert during["heap"] >= during["in_use"]
