"""The queue of fine-tuning jobs: one thread of the server runs them, each in a worker subprocess.

The database is the queue (jobs in seq order). Every tick (0.5 s, or at once when notified) the
runner thread

    1. reaps ended workers:  exit 0 + the run's DONE      -> succeeded (fine_tuned_model = run name)
                             exit 3 (interrupted: SIGINT,  -> queued again (resumes)
                                     the checkpoint saved)
                             anything else                 -> failed (the worker's error, else its exit)
                             a `paused` job's worker (`interrupt`: SIGINT) -> stays paused (an event
                                     names the checkpoint it resumes from), or succeeded if it was DONE
    2. validates each `validating_files` job: its files' bytes linked into home/jobs/<id>/ (the
       job's own copy: deleting the file later changes nothing), the RunConfig built
       (`job_config`) and checked, written to home/jobs/<id>/config.json -> queued, or failed
    3. starts the oldest queued jobs while fewer than `state.jobs_max_concurrent` (1; 0
       pauses the queue) workers run: `python -m tunelab.serve.job_worker --db .. --job .. --config ..`
       (its output appended to home/jobs/<id>/worker.log) -> running

The run is `state.tenant_runs(tenant)/<run name>`; a job resumes from its run's last checkpoint
(`train.resume: auto`: the engine's for supervised and reinforcement, the Trainer's, kept as step-N,
for dpo). At startup (`start`), a `running` job belongs to a server that died: a worker of it still
alive is killed, then a run with DONE is recorded succeeded (it finished, the server did not see it),
any other is queued again; a `paused` one stays paused (a worker of it still alive is killed), unless
its run has DONE (succeeded). A status change is a conditional transition (jobs_db.transition), so a cancelled job
stays cancelled whatever its worker does meanwhile. `shutdown` interrupts the workers (SIGINT:
the engine checkpoints), waits up to 10 s, kills what is left and leaves the jobs `running`,
for the next start to resume. One runner per home: `start` takes an flock on home/jobs.lock, and
a second server on the same home runs no jobs (it would take the first one's for dead).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tunelab.config import apply_overrides, default_lr, from_dict
from tunelab.errors import TunelabError
from tunelab.runs.rundir import RunDir
from tunelab.serve import jobs_db
from tunelab.serve.job_methods import METHODS

log = logging.getLogger("tunelab.serve.jobs")
INTERRUPTED = 3  # the worker's exit code when training was interrupted with the checkpoint saved


def job_dir(state, job_id: str) -> Path:
    """home/jobs/<id>, absolute (the worker runs in it: every path it is given is absolute)."""
    return (state.home / "jobs" / job_id).resolve()


def run_dir(state, job: dict) -> Path:
    return (state.tenant_runs(job["tenant"]) / job["run_name"]).resolve()


def checkpoint_steps(run: Path) -> list[int]:
    """Steps of the complete checkpoints of the run folder `run` (checkpoints/step-N/state.json,
    train/state.py), ascending."""
    ckpt_dir = RunDir(run).checkpoints_dir
    if not ckpt_dir.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in ckpt_dir.iterdir()
                  if p.name.startswith("step-") and p.name[5:].isdigit() and (p / "state.json").exists())


def job_config(job: dict, train: Path, validation: Path | None, runs: Path, overrides: list[str],
               columns: dict[str, dict] | None = None) -> dict:
    """The RunConfig (as a dict) of a job: the recipe of its method on its files, hyperparameters
    resolved (jobs_api), lr = default_lr(method.name) x learning_rate_multiplier (unless an
    override sets train.lr), the method's own sections (job_methods: dpo's preference.beta,
    reinforcement's grpo), then the server's `key=value` overrides (state.job_overrides).
    `columns` {"train": ..., "validation": ...}: the files' column mappings (files_api.map_columns),
    the training file's as `data.columns`, a validation file's own as its spec's `columns`."""
    hp, method = job["hyperparameters"], METHODS[job["method"]["type"]]
    cfg = {"task": method.task, "model": {"name": job["model"]},
           "data": {"train": str(train), "seed": job["seed"]}, "method": {"name": hp.get("finetuning_type", "lora")},
           "train": {"epochs": hp["n_epochs"], "batch_size": hp["batch_size"], "seed": job["seed"],
                     "resume": "auto", "eval_every": "epoch" if validation else "never"},
           "output": {"dir": str(runs), "name": job["run_name"]}, "base_dir": str(train.parent)}
    if validation is not None:
        cfg["data"]["validation"] = str(validation)
    cols = columns or {}
    if cols.get("train"):
        cfg["data"]["columns"] = dict(cols["train"])
    if validation is not None and (cols.get("validation") or {}) != (cols.get("train") or {}):
        cfg["data"]["validation"] = [{"path": str(validation), "columns": dict(cols.get("validation") or {})}]
    method.config(cfg, job)
    apply_overrides(cfg, list(overrides))
    cfg["output"].update(dir=str(runs), name=job["run_name"])  # an override never moves the run
    if "lr" not in cfg["train"]:
        cfg["train"]["lr"] = default_lr(cfg["method"].get("name", "lora")) * hp["learning_rate_multiplier"]
    return cfg


class JobRunner:
    """See the module docstring. `notify()` wakes the thread; `cancel(job_id)` kills a job's worker."""

    def __init__(self, state, tick: float = 0.5):
        self.state, self.tick = state, tick
        self.procs: dict[str, subprocess.Popen] = {}
        self.cond = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None

    @property
    def db(self):
        return jobs_db.conn(self.state.db_path)

    @property
    def max_concurrent(self) -> int:
        return int(self.state.jobs_max_concurrent)

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Take the home's job lock, recover, start the thread. Without the lock (another server runs
        on this home) nothing is run here: the jobs are the other server's."""
        if not self._lock():
            log.warning("another server holds %s: this one runs no fine-tuning jobs", self.state.home / "jobs.lock")
            return
        self.recover()
        self.thread = threading.Thread(target=self._loop, name="tunelab-jobs", daemon=True)
        self.thread.start()

    def _lock(self) -> bool:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, one server per home is up to the operator
            return True
        self.state.home.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.state.home / "jobs.lock", "a")  # closed (unlocked) when the process ends
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            return False
        return True

    def recover(self) -> None:
        """Jobs left `running` by a server that died: finished -> succeeded, else queued to resume."""
        c = self.db
        for job in jobs_db.jobs_with_status(c, "running"):
            _kill_stale(job.get("worker_pid"), job["id"])
            run = run_dir(self.state, job)
            if RunDir(run).done:
                self._succeed(job)
                continue
            steps = checkpoint_steps(run)
            where = f"resumes from its checkpoint at step {steps[-1]}" if steps else "starts again"
            jobs_db.transition(c, job, "queued", ("running",), f"The server restarted: the job is queued and {where}",
                               worker_pid=None)
        for job in jobs_db.jobs_with_status(c, "paused"):
            _kill_stale(job.get("worker_pid"), job["id"])
            if RunDir(run_dir(self.state, job)).done:  # it finished before the pause reached it
                self._succeed(job)
            else:
                jobs_db.set_job(c, job["id"], only_if=("paused",), worker_pid=None)

    def shutdown(self, grace: float = 10.0) -> None:
        """Interrupt the workers (SIGINT), kill what is left after `grace` s, stop the thread, release
        the lock; the jobs stay `running` for the next start to resume."""
        with self.cond:
            self.stopping = True
            procs = list(self.procs.values())
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        with self.cond:
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=5)
        if getattr(self, "_lock_file", None) is not None:
            self._lock_file.close()  # releases the lock: a next server on this home may run the jobs
            self._lock_file = None

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def interrupt(self, job_id: str) -> None:
        """SIGINT the job's worker, if it has one: the engine checkpoints and the worker exits 3 (pause)."""
        with self.cond:
            proc = self.procs.get(job_id)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            self.cond.notify_all()

    def cancel(self, job_id: str) -> None:
        """Kill the job's worker, if it has one (the caller has already moved the job to cancelled)."""
        with self.cond:
            proc = self.procs.get(job_id)
            if proc is not None and proc.poll() is None:
                proc.kill()
            self.cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self.cond:
                if self.stopping:
                    return
                self.cond.wait(self.tick)
                if self.stopping:
                    return
            try:
                self.step()
            except Exception:  # a fault here must not stop the queue; it is logged with its traceback
                log.exception("job runner step failed")

    def step(self) -> None:
        """One tick: reap, validate, start (see the module docstring)."""
        with self.cond:
            ended = [(j, p.returncode) for j, p in self.procs.items() if p.poll() is not None]
            for j, _ in ended:
                del self.procs[j]
        for job_id, rc in ended:
            self._guarded(self._finished, job_id, rc)
        for job in jobs_db.jobs_with_status(self.db, "validating_files"):
            self._guarded(self._prepare, job)
        while len(self.procs) < self.max_concurrent and not self.stopping:
            # a job resumed while its paused worker is still stopping waits for it to be reaped
            queued = [j for j in jobs_db.jobs_with_status(self.db, "queued") if j["id"] not in self.procs]
            if not queued or not self._guarded(self._launch, queued[0]):
                break

    def _guarded(self, fn, job, *args):
        """fn(job, *args); a fault of the server on one job fails that job (logged), not the queue."""
        try:
            return fn(job, *args)
        except Exception as e:
            log.exception("job %s: %s failed", job if isinstance(job, str) else job["id"], fn.__name__)
            row = jobs_db.job_by_id(self.db, job if isinstance(job, str) else job["id"])
            if row is not None:
                self._fail(row, "server_error", f"internal error: {type(e).__name__}: {e}", jobs_db.ACTIVE)
            return False

    # ---- the steps -------------------------------------------------------------------------------------
    def _prepare(self, job: dict) -> None:
        from tunelab.serve.files_api import materialize  # here: the worker imports this module without FastAPI

        c, d = self.db, job_dir(self.state, job["id"])
        try:
            d.mkdir(parents=True, exist_ok=True)
            files, columns = {}, {}
            for role, fid in (("train", job["training_file"]), ("validation", job["validation_file"])):
                if fid:
                    row = c.execute("SELECT * FROM files WHERE id = ? AND tenant = ?", (fid, job["tenant"])).fetchone()
                    if row is None:
                        raise TunelabError(f"file {fid} was deleted before the job started", where=f"{role}_file")
                    files[role] = materialize(self.state, dict(row), d / role)
                    columns[role] = json.loads(row["data_columns"] or "{}")
            cfg = job_config(job, files["train"], files.get("validation"), run_dir(self.state, job).parent,
                             self.state.job_overrides, columns)
            from_dict(cfg, source="job")
            tmp = d / "config.json.tmp"
            tmp.write_text(json.dumps(cfg, indent=1), encoding="utf-8")
            os.replace(tmp, d / "config.json")
        except TunelabError as e:
            self._fail(job, "invalid_job", e.one_line(), ("validating_files",))
            return
        jobs_db.transition(c, job, "queued", ("validating_files",), "Files validated, the job is queued")

    def _launch(self, job: dict) -> bool:
        """Start the job's worker; False if the job left the queue meanwhile (cancelled)."""
        d = job_dir(self.state, job["id"])
        with self.cond:
            if not jobs_db.transition(self.db, job, "running", ("queued",), "Fine-tuning job started" if not
                                      job["attempts"] else f"Fine-tuning job restarted (attempt {job['attempts'] + 1})",
                                      started_at=job["started_at"] or jobs_db.now(), attempts=job["attempts"] + 1):
                return True  # not ours to start any more: look at the next one
            try:
                with open(d / "worker.log", "ab") as out:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "tunelab.serve.job_worker", "--db", str(self.state.db_path.resolve()),
                         "--job", job["id"], "--config", str(d / "config.json"), "--parent", str(os.getpid())],
                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=d, env=_worker_env())
            except OSError as e:
                self._fail(job, "worker_failed", f"cannot start the worker: {e}", ("running",))
                return True
            self.procs[job["id"]] = proc
            jobs_db.set_job(self.db, job["id"], worker_pid=proc.pid)
        return True

    def _finished(self, job_id: str, rc: int) -> None:
        job = jobs_db.job_by_id(self.db, job_id)
        if job is None or job["status"] not in ("running", "paused", "queued") or self.stopping:
            return  # cancelled (the cancel said so), or shutting down: the next start resumes it
        run = run_dir(self.state, job)
        if rc == 0 and RunDir(run).done:
            self._succeed(job)  # also a job paused (and perhaps resumed) as its run ended
        elif job["status"] == "queued":
            return  # paused, then resumed before this worker stopped: it starts again from its checkpoint
        elif job["status"] == "paused":  # interrupted (or it failed meanwhile: resuming tells)
            steps = checkpoint_steps(run)
            where = f"its checkpoint at step {steps[-1]}" if steps else "the start (no checkpoint yet)"
            jobs_db.set_job(self.db, job_id, only_if=("paused",), worker_pid=None)
            jobs_db.add_event(self.db, job, f"The job is paused; it resumes from {where}")
        elif rc == INTERRUPTED:
            jobs_db.transition(self.db, job, "queued", ("running",), "The worker was interrupted: the job is queued "
                               "and resumes from its last checkpoint", worker_pid=None)
        else:
            log_path = job_dir(self.state, job_id) / "worker.log"
            err = job["error"] or {"code": "training_failed", "param": None,
                                   "message": f"the worker ended with {_exit_text(rc)} (see {log_path} on the server)"}
            self._fail(job, err["code"], err["message"], ("running",), err.get("param"))

    def _succeed(self, job: dict) -> None:
        name = job["run_name"]
        jobs_db.transition(self.db, job, "succeeded", ("running", "paused", "queued"),
                           f"The job has successfully completed: new fine-tuned model {name}", fine_tuned_model=name,
                           finished_at=jobs_db.now(), worker_pid=None)

    def _fail(self, job: dict, code: str, message: str, only_if: tuple, param: str | None = None) -> None:
        jobs_db.transition(self.db, job, "failed", only_if, f"The job failed: {message}", level="error",
                           error={"code": code, "message": message, "param": param}, finished_at=jobs_db.now(),
                           worker_pid=None)


def _worker_env() -> dict:
    """The server's environment, with this tunelab importable from the job's folder (a checkout run
    without installing: sys.path held the current directory, which the worker does not share)."""
    src = str(Path(__file__).resolve().parents[2])  # .../src of src/tunelab/serve/job_runner.py
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _exit_text(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


def _kill_stale(pid: int | None, job_id: str) -> None:
    """SIGKILL a worker of `job_id` that outlived its server (its command line names the job), and
    wait (up to 5 s) for it to be gone. Does nothing where /proc is not there to tell."""
    if not pid:
        return
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return
    if b"tunelab.serve.job_worker" not in args or job_id.encode() not in args:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return
    deadline = time.monotonic() + 5
    while cmdline.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
