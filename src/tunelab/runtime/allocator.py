"""Process memory during training: glibc's free-list policy, and the peak RSS a run records.

keep_freed_memory(): keep freed training buffers in the process instead of handing them back to the kernel.

glibc's malloc serves every block above M_MMAP_THRESHOLD (128 KiB, adapting up to 32 MiB) with
a fresh mmap and unmaps it on free. A training step allocates and frees the same activation
buffers over and over (SmolLM2-135M, 8 x 400 tokens: each MLP activation is 3,200 x 1,536 x 4 B
= 19.7 MB, and there are hundreds per step), so every step pays page faults and the kernel's
zeroing of each new page again. Raising the mmap threshold to 1 GiB and the trim threshold to
2 GiB - 1 lets free() keep those pages in the heap for the next step.

It makes steps faster (docs/performance.md, "glibc keeps freed buffers"). Peak RSS does not grow
(the same buffers are reused), but RSS stays at the peak after training instead of shrinking,
which is why this is a training-loop setting and not a global one.

Other allocators (macOS, musl, jemalloc/tcmalloc preloaded) are left alone.

training_env() / reexec_with_training_tunables(): no per-thread cache of small freed blocks.

Kept in the heap, those buffers fragment it: torch asks for 64-byte-aligned blocks, and glibc's
memalign serves a request of n bytes by taking n + 96 and freeing the 64-96 byte slivers on either
side. Those slivers go to the thread cache (tcache) and the fastbins, which never merge with their
neighbours, so when the big block is freed it stays a hole of exactly n bytes, too small for the
next request of the same n (which again wants n + 96): the heap grows instead. With the tcache and
fastbins off (GLIBC_TUNABLES=glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0) the slivers merge
back and the holes are reused, at the same step time (peak RSS before and after, and the commands:
docs/memory.md, "RSS is not tensors", and docs/performance.md). glibc reads its tunables only when
a process starts, so `tunelab train` re-executes itself once with them set
(`reexec_with_training_tunables`; TUNELAB_KEEP_MALLOC=1 turns that off), and scripts that launch
training can pass training_env().

start_peak_rss() / peak_rss_mb(): the training phase's peak resident memory. Loading a model leaves
freed buffers in the heap (and quantizing one, pages of the checkpoint file), so at the start of
training the heap is trimmed (malloc_trim) and Linux's high-water mark VmHWM is reset (writing 5 to
/proc/self/clear_refs); peak_rss_mb() then reads VmHWM: the most the process held while training.
Elsewhere it falls back to getrusage's ru_maxrss (the whole process's peak).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
_done: bool | None = None
TRAINING_TUNABLES = ("glibc.malloc.tcache_count=0", "glibc.malloc.mxfast=0")  # see module doc


def is_glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False


def _names(tunables: str) -> set[str]:
    """The tunable names set in a GLIBC_TUNABLES value ("name=value:name=value")."""
    return {t.split("=")[0] for t in tunables.split(":") if t}


def training_env(env: dict | None = None) -> dict:
    """A copy of `env` (default os.environ) with TRAINING_TUNABLES added to GLIBC_TUNABLES (glibc only)."""
    env = dict(os.environ if env is None else env)
    if not is_glibc():
        return env
    have = env.get("GLIBC_TUNABLES", "")
    set_by_user = _names(have)
    added = [t for t in TRAINING_TUNABLES if t.split("=")[0] not in set_by_user]  # the user's own values win
    env["GLIBC_TUNABLES"] = ":".join([t for t in have.split(":") if t] + added)
    return env


def training_tunables_active() -> bool:
    """Was this process started with TRAINING_TUNABLES' settings (or the user's own for those names)?"""
    return _names(":".join(TRAINING_TUNABLES)) <= _names(os.environ.get("GLIBC_TUNABLES", ""))


def reexec_with_training_tunables() -> None:
    """Replace this process by the same command with training_env() (once; glibc only; not when
    TUNELAB_KEEP_MALLOC=1). Call it before anything else runs: the process starts over."""
    if not is_glibc() or training_tunables_active() or os.environ.get("TUNELAB_KEEP_MALLOC") == "1":
        return
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], training_env())


def keep_freed_memory() -> bool:
    """Set glibc's mmap/trim thresholds once per process; True when glibc accepted both."""
    global _done
    if _done is not None:
        return _done
    _done = False
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _done


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6") if sys.platform.startswith("linux") else None
    except OSError:
        return None


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def malloc_mb() -> dict | None:
    """glibc's own account of the main heap (mallinfo2), in MiB; None where there is no mallinfo2.

    in_use = uordblks + hblkhd (bytes handed out, mmapped chunks included)
    heap   = arena + hblkhd    (bytes glibc holds from the OS: in_use + its free lists)
    heap - in_use is what freed blocks glibc could not hand back, nor yet reuse, cost in RSS.
    """
    libc = _libc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:
        return None
    fn.restype = _Mallinfo2
    m = fn()
    return {"in_use": (m.uordblks + m.hblkhd) / 2**20, "heap": (m.arena + m.hblkhd) / 2**20}


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS; True where that worked (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def start_peak_rss() -> bool:
    """Trim the heap, then reset_peak_rss(): what training starts with."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    return reset_peak_rss()


def status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status in MiB (VmRSS, VmHWM, RssAnon, ...), None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # "VmHWM:   1234567 kB"
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory in MiB since start_peak_rss() (Linux VmHWM), else the process's ru_maxrss."""
    mb = status_mb("VmHWM")
    if mb is not None:
        return mb
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
