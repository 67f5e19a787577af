"""Ctrl-C during training: held over the critical sections of the engine, raised everywhere else."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Interrupts:
    """Ctrl-C while training (SIGINT, main thread only; a SIGINT that is ignored stays ignored).

    The first Ctrl-C raises KeyboardInterrupt at once, except inside a `critical()` section (the
    optimizer update, evaluation bookkeeping, a checkpoint write), where it is held until the section
    ends: the state on disk and in memory is always at a safe point. A second Ctrl-C raises at once,
    wherever it lands: the engine then writes nothing more and the last complete checkpoint stays."""

    def __init__(self):
        self.count, self.depth, self.held, self.old = 0, 0, False, None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.old = signal.signal(signal.SIGINT, self._handler)

    def uninstall(self) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
            self.old = None

    def _handler(self, signum, frame) -> None:
        self.count += 1
        if self.depth and self.count == 1:
            self.held = True
            return
        raise KeyboardInterrupt

    @contextmanager
    def critical(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.held:
                self.held = False
                raise KeyboardInterrupt
