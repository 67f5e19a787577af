"""`tunelab train` notices another tunelab training on the machine (/proc) and not itself or its ranks."""

import subprocess
import sys
import time

import pytest

from tunelab.runtime.processes import is_training, other_trainings, others_note


def test_is_training_reads_the_subcommand():
    assert is_training(["/x/.venv/bin/tunelab", "train", "a.yaml"])
    assert is_training(["python", "-m", "tunelab", "--debug", "quickstart"])
    assert is_training(["python", "-m", "tunelab.serve.job_worker", "--db", "d"])
    assert not is_training(["/x/.venv/bin/tunelab", "generate", "runs/a"])
    assert not is_training(["python", "-m", "pytest", "tests/train"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_another_training_is_noticed_once_it_runs():
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "tunelab", "train", "x.yaml"])
    try:
        deadline = time.time() + 10
        while time.time() < deadline and other.pid not in dict(other_trainings()):
            time.sleep(0.05)
        assert other.pid in dict(other_trainings())
        note = others_note()
        assert note.startswith("note: another tunelab training is running on this machine (pid ")
        assert "\n" not in note
    finally:
        other.kill()
        other.wait()
    assert other.pid not in dict(other_trainings())
