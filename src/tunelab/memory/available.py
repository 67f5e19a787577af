"""How much memory the device has, and how much is free now (for `gradient_checkpointing: auto`)."""

from __future__ import annotations

import os
from pathlib import Path


def detect_memory(device: str = "auto") -> tuple[str, int | None, int | None]:
    """(device, total bytes, available bytes): CUDA VRAM via torch when a GPU is there (device auto|cuda),
    else RAM from /proc/meminfo (MemTotal, MemAvailable), else os.sysconf pages x page size."""
    if device in ("auto", "cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                free, total = torch.cuda.mem_get_info()
                return "cuda", int(total), int(free)
        except Exception:  # no torch / no driver: fall back to RAM
            pass
        if device == "cuda":
            return "cuda", None, None
    info = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024  # "MemTotal:  131072000 kB"
    except (OSError, ValueError, IndexError):
        pass
    total = info.get("MemTotal")
    avail = info.get("MemAvailable")
    if total is None:
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    return "cpu", total, avail
