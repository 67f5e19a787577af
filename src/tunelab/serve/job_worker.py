"""The worker of one fine-tuning job, a subprocess of the server (serve/job_runner.py):

    python -m tunelab.serve.job_worker --db DB --job ID --config home/jobs/ID/config.json --parent PID

It runs the recipe of the config exactly as `tunelab train` does (RECIPES: task sft -> run_sft,
dpo -> run_dpo, grpo -> run_grpo) into the run folder the config names, while a monitor thread turns what the recipe
writes into the job's records, every 0.25 s and once more at the end:

    run/metrics.jsonl rows      -> `metrics` events; data: step, train_loss (loss), valid_loss (val_loss) or
                                   heldout_reward (grpo's held-out pass)
                                   (val_loss), learning_rate (lr), and the row's other keys ('/' -> '_')
    run/checkpoints/step-N/     -> a checkpoint object (step N, the metrics of step N) + an event
    (state.json, complete)

Steps that already have an event (a resumed job retrains the steps after its checkpoint) are not
reported twice. The recipe prunes checkpoints (the last 2 while training; after DONE, what
train.keep_checkpoints does not keep): a sweep runs just before each prune (train/state.BEFORE_PRUNE),
so every checkpoint is recorded however soon it goes. The run's last step's checkpoint
(position.final) is not listed: it is the run itself. The worker dies with its server:
PR_SET_PDEATHSIG on Linux, and a watchdog thread that
exits when the parent process is no longer `--parent`.

Exit codes: 0 the run is DONE; 2 a TunelabError, 1 any other error (both recorded as the job's
`error` for the runner to fail it with; the traceback goes to the worker's log); 3 interrupted
(SIGINT; the engine saved a checkpoint): the runner queues the job again, or keeps it paused.
SIGINT is the runner's interrupt (shutdown, pause): the worker takes it from its first line, even when
it was started with SIGINT ignored (a server run as a background job); one during the imports ends it
before any training (the runner keeps a paused job paused, whatever the exit).
"""

from __future__ import annotations

import signal

if __name__ == "__main__":  # the runner's interrupt (pause, shutdown), also while the imports below run
    signal.signal(signal.SIGINT, signal.default_int_handler)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from tunelab.config import from_dict  # noqa: E402
from tunelab.errors import TunelabError  # noqa: E402
from tunelab.runs.rundir import RunDir  # noqa: E402
from tunelab.serve import jobs_db  # noqa: E402
from tunelab.serve.job_runner import INTERRUPTED, checkpoint_steps  # noqa: E402
from tunelab.train.state import BEFORE_PRUNE, is_final  # noqa: E402

_KEYS = {"loss": "train_loss", "val_loss": "valid_loss", "lr": "learning_rate"}
# the metrics.jsonl value a row is reported for -> (event kind, the event's key, what its message calls it);
# grpo's held-out pass (train/grpo_heldout.py) reports a greedy reward, not a loss
REPORTED = {"loss": ("train", "train_loss", "training loss"), "val_loss": ("valid", "valid_loss", "validation loss"),
            "heldout/reward": ("valid", "heldout_reward", "held-out reward")}


def metrics_event(row: dict) -> tuple[str, str, str, dict] | None:
    """(kind "train" | "valid", the reported key, message, data) of one metrics.jsonl row; None for other rows."""
    hit = next((k for k in REPORTED if k in row), None)
    if "step" not in row or hit is None:
        return None
    kind, key, label = REPORTED[hit]
    data = {"step": int(row["step"])}
    data.update({_KEYS.get(k, k.replace("/", "_")): v for k, v in row.items() if k != "step"})
    val = data[key]
    shown = f"{val:.4f}" if isinstance(val, (int, float)) else str(val)
    return kind, key, f"Step {data['step']}: {label}={shown}", data


class Monitor:
    """Reads the run folder into the job's events and checkpoints (see the module docstring)."""

    def __init__(self, db_path: str, job: dict, run: Path, interval: float = 0.25):
        self.db_path, self.job, self.run, self.interval = db_path, job, run, interval
        c = jobs_db.conn(db_path)
        self.seen = jobs_db.metric_steps(c, job["id"])
        self.ckpts = jobs_db.checkpoint_steps_recorded(c, job["id"])
        self.by_step: dict[int, dict] = {}  # step -> train_loss / valid_loss, for checkpoint objects
        self.inode, self.offset = None, 0
        self.lock = threading.Lock()  # one sweep at a time: the thread's, or the one before a prune
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="tunelab-job-monitor", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Stop the thread, then one last sweep."""
        self.stop_event.set()
        self.thread.join(timeout=10)
        self.sweep()

    def _loop(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # a half-written line, a folder pruned mid-read: the next sweep sees it whole
                traceback.print_exc()

    def _new_rows(self) -> list[dict]:
        """Complete lines of metrics.jsonl not read yet (from the start when the file was replaced)."""
        path = RunDir(self.run).metrics_path
        try:
            st = path.stat()
        except OSError:
            return []
        if st.st_ino != self.inode or st.st_size < self.offset:
            self.inode, self.offset = st.st_ino, 0
        with open(path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        return [json.loads(x) for x in chunk[:end].decode("utf-8").splitlines() if x.strip()]

    def sweep(self) -> None:
        with self.lock:
            self._sweep()

    def before_prune(self, _ckpt_dir) -> None:
        """train/state.BEFORE_PRUNE hook: record the checkpoints before some are deleted."""
        self.sweep()

    def _sweep(self) -> None:
        c = jobs_db.conn(self.db_path)
        for row in self._new_rows():
            ev = metrics_event(row)
            if ev is None:
                continue
            kind, key, message, data = ev
            step = data["step"]
            self.by_step.setdefault(step, {})[key] = data[key]
            if (step, kind) not in self.seen:
                self.seen.add((step, kind))
                jobs_db.add_event(c, self.job, message, type="metrics", data=data)
        for step in checkpoint_steps(self.run):
            if step not in self.ckpts:
                self.ckpts.add(step)
                if is_final(RunDir(self.run).checkpoint(step)):  # the last step's: the run itself, not a checkpoint
                    continue
                if jobs_db.add_checkpoint(c, self.job, step, self.by_step.get(step, {})):
                    jobs_db.add_event(c, self.job, f"Checkpoint created at step {step}")


def die_with_parent(parent: int) -> None:
    """Exit when the server process `parent` is gone (see the module docstring)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="tunelab-job-watchdog", daemon=True).start()


RECIPES = {"sft": "tunelab.train.recipes.sft:run_sft", "dpo": "tunelab.train.recipes.dpo:run_dpo",
           "grpo": "tunelab.train.recipes.grpo:run_grpo"}  # a job's task: its recipe (imported when run)


def _recipe(task: str):
    import importlib

    module, _, name = RECIPES[task].partition(":")
    return getattr(importlib.import_module(module), name)


def run_job(db_path: str, job_id: str, config: Path) -> int:
    """Train the job's run; returns the exit code (see the module docstring)."""
    c = jobs_db.conn(db_path)
    job = jobs_db.job_by_id(c, job_id)
    if job is None:
        return 1
    monitor = None
    try:
        cfg = from_dict(json.loads(Path(config).read_text(encoding="utf-8")), source=str(config))
        run = cfg.run_dir()
        resumes = cfg.train.resume != "no" and not RunDir(run).done
        steps = checkpoint_steps(run) if resumes else []
        jobs_db.add_event(c, job, f"Training resumes from the checkpoint at step {steps[-1]}" if steps else
                          f"Training {cfg.model.name} ({cfg.task}, {cfg.method.name}) into run {run.name}")
        monitor = Monitor(db_path, job, run)
        monitor.start()
        BEFORE_PRUNE.append(monitor.before_prune)
        outcome = _recipe(cfg.task)(cfg, quiet=True)
        monitor.stop()
        tokens = getattr(getattr(outcome, "result", None), "trained_tokens", None)
        jobs_db.set_job(c, job_id, trained_tokens=tokens)
        return 0 if RunDir(run).done else INTERRUPTED
    except KeyboardInterrupt:
        return INTERRUPTED
    except TunelabError as e:
        _record_error(c, job_id, "invalid_training_data" if _is_data(e) else "training_failed", e.one_line())
        return 2
    except Exception as e:  # a fault of the server, not of the request: the traceback goes to the log
        traceback.print_exc()
        _record_error(c, job_id, "server_error", f"internal error: {type(e).__name__}: {e}")
        return 1
    finally:
        if monitor is not None:
            if monitor.before_prune in BEFORE_PRUNE:
                BEFORE_PRUNE.remove(monitor.before_prune)
            if not monitor.stop_event.is_set():
                monitor.stop()


def _is_data(e: TunelabError) -> bool:
    return bool(e.where) and e.where.startswith("data.")


def _record_error(c, job_id: str, code: str, message: str) -> None:
    jobs_db.set_job(c, job_id, only_if=("running",), error={"code": code, "message": message, "param": None})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tunelab.serve.job_worker")
    ap.add_argument("--db", required=True)
    ap.add_argument("--job", required=True)
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--parent", type=int, default=None)
    args = ap.parse_args(argv)
    if args.parent is not None:
        die_with_parent(args.parent)
    return run_job(args.db, args.job, args.config)


if __name__ == "__main__":
    sys.exit(main())
