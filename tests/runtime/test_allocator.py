"""The CPU training loop asks glibc to keep freed activation buffers (runtime/allocator.py)."""

import ctypes
import sys

import pytest

from tunelab.runtime import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_glibc_accepts_the_thresholds_once(monkeypatch):
    monkeypatch.setattr(allocator, "_done", None)
    calls = []
    real = ctypes.CDLL

    class Spy:
        def __init__(self, name):
            self.lib = real(name)

        @property
        def mallopt(self):
            f = self.lib.mallopt

            def call(param, value):
                calls.append((param, value))
                return f(param, value)
            call.argtypes = None
            return call

    monkeypatch.setattr(allocator.ctypes, "CDLL", Spy)
    assert allocator.keep_freed_memory() is True
    assert calls == [(allocator.M_MMAP_THRESHOLD, 1 << 30), (allocator.M_TRIM_THRESHOLD, 2**31 - 1)]
    assert allocator.keep_freed_memory() is True and len(calls) == 2  # once per process


def test_not_linux_is_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_done", None)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_training_peak_starts_at_the_current_rss():
    """start_peak_rss() forgets an earlier, higher peak; peak_rss_mb() sees one made after it."""
    import torch

    big = torch.ones(300 * 2**20 // 4)  # 300 MiB, touched
    del big
    allocator.start_peak_rss()
    start = allocator.peak_rss_mb()
    again = torch.ones(200 * 2**20 // 4)
    peak = allocator.peak_rss_mb()
    del again
    assert peak - start >= 190  # the 200 MiB made after the reset count
    allocator.start_peak_rss()
    assert allocator.peak_rss_mb() < peak - 150  # and are forgotten by the next reset
