"""The child process of the python grader (run as `python -I python_child.py`; imports nothing of tunelab).

stdin: {"source": str, "timeout_s": float, "cases": [[sample, item], ...]}
stdout (the original fd 1; the user's prints go to stderr): [{"score": float} | {"error": str}, ...]

Before the user's code runs: an audit hook refuses sockets (creating, connecting, resolving names),
starting processes (so a child without the hook cannot do it instead), and opening or listing files
outside the python installation (read only: the standard library, site-packages) and the child's own
empty working folder (read and write); the address space and the size of a written file are limited.
Each `grade(sample, item)` call runs under a SIGALRM timer of timeout_s; the source's own top level too.
This keeps a grader from reaching the network by accident or hanging a job; it is not a sandbox for
hostile code (ctypes, for one, stays available).
"""

import json
import math
import os
import resource
import signal
import sys

BLOCKED = ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
           "socket.gethostbyaddr", "socket.sendto", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
           "os.spawn", "os.fork", "os.forkpty", "pty.spawn")


WORK = os.path.realpath(os.getcwd()) + os.sep
READABLE = tuple({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                                          sys.base_exec_prefix)}) + (WORK,)
DEVICES = ("/dev/null", "/dev/urandom")
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _allowed(path, write: bool) -> bool:
    if isinstance(path, int):  # an open descriptor (the child's own 0, 1, 2)
        return True
    real = os.path.realpath(os.path.join(WORK, os.fsdecode(path)))
    if real in DEVICES:
        return True
    return any((real + os.sep).startswith(root) for root in ((WORK,) if write else READABLE))


class GradeTimeout(BaseException):  # BaseException: a user's `except Exception` does not swallow it
    pass


def _audit(event, args):
    if event in BLOCKED:
        raise PermissionError(f"{event} is not allowed in a python grader (no network, no processes)")
    if event == "open":
        path, mode, flags = args
        write = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITES)
        if path is not None and not _allowed(path, write):
            raise PermissionError(f"a python grader may not open {os.fsdecode(path)!r}")
    elif event in ("os.listdir", "os.scandir") and args[0] is not None and not _allowed(args[0], False):
        raise PermissionError("a python grader may not list that folder")


def _alarm(signum, frame):
    raise GradeTimeout()


def _timed(fn, limit):
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def main() -> None:
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the user's print() goes to stderr
    job = json.load(sys.stdin)
    limit = float(job["timeout_s"])
    gib = 4 << 30
    resource.setrlimit(resource.RLIMIT_AS, (gib, gib))
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))  # a written file: 64 MiB
    signal.signal(signal.SIGALRM, _alarm)
    sys.addaudithook(_audit)
    scope = {"__name__": "grader"}
    results = []
    try:
        _timed(lambda: exec(compile(job["source"], "<grader>", "exec"), scope), limit)
        grade = scope.get("grade")
        if not callable(grade):
            raise NameError("the source defines no grade(sample, item)")
    except GradeTimeout:
        results = [{"error": f"the source's top level ran over {limit:g} s"}] * len(job["cases"])
    except BaseException as e:
        results = [{"error": f"{type(e).__name__}: {e}"}] * len(job["cases"])
    if not results:
        for sample, item in job["cases"]:
            try:
                value = _timed(lambda: grade(sample, item), limit)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise TypeError(f"grade returned {value!r}, not a finite number")
                results.append({"score": float(value)})
            except GradeTimeout:
                results.append({"error": f"timed out after {limit:g} s"})
            except BaseException as e:
                results.append({"error": f"{type(e).__name__}: {e}"})
    out.write(json.dumps(results))
    out.flush()


if __name__ == "__main__":
    main()
