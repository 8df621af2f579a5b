"""Quiet measurement: a readers–writer lock across processes, kept in the run directory.

Training and compiling hold it *shared* (per batch, per compile), as do a trial's set-up and the
search driver's sampling; timing holds it *exclusively*, so no other trial's work runs on this
machine while a candidate is timed. A turnstile file keeps a waiting timer from being starved by
a stream of short shared holds. ``flock`` locks are released by the kernel when a process dies, so
a killed trial never leaves the lock held.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["QuietLock", "quiet_dir"]


def quiet_dir(run_dir: str | os.PathLike[str]) -> Path:
    """Where a run keeps its quiet lock on this machine (nodes do not disturb each other)."""
    return Path(run_dir) / ".quiet" / socket.gethostname()


class QuietLock:
    """Readers–writer lock on ``<directory>/.quiet.*``; a no-op when ``directory`` is None.

    ``waited_s`` accumulates the seconds spent blocked, so callers can leave it out of stage times;
    ``waits`` lists the blocks of at least ``RECORDED_WAIT_S`` as (start, end) Unix times.
    """

    #: Shorter blocks (an uncontended lock takes microseconds) are counted in ``waited_s`` only.
    RECORDED_WAIT_S = 1e-3

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory else None
        self.waited_s = 0.0
        self.waits: list[tuple[float, float]] = []
        self._fds: tuple[int, int] | None = None

    def _open(self) -> tuple[int, int] | None:
        if self.directory is None:
            return None
        if self._fds is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            turn = os.open(self.directory / ".quiet.turnstile", os.O_RDWR | os.O_CREAT, 0o644)
            rw = os.open(self.directory / ".quiet.rw", os.O_RDWR | os.O_CREAT, 0o644)
            self._fds = (turn, rw)
        return self._fds

    def _flock(self, fd: int, op: int) -> None:
        t0 = time.perf_counter()
        fcntl.flock(fd, op)
        waited = time.perf_counter() - t0
        self.waited_s += waited
        if waited >= self.RECORDED_WAIT_S:
            end = time.time()
            self.waits.append((end - waited, end))

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock shared (work that may run alongside other work, but not timing)."""
        fds = self._open()
        if fds is None:
            yield
            return
        turn, rw = fds
        self._flock(turn, fcntl.LOCK_EX)
        fcntl.flock(turn, fcntl.LOCK_UN)
        self._flock(rw, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(rw, fcntl.LOCK_UN)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock exclusively (timing: nothing else of the run works meanwhile)."""
        fds = self._open()
        if fds is None:
            yield
            return
        turn, rw = fds
        self._flock(turn, fcntl.LOCK_EX)
        try:
            self._flock(rw, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(rw, fcntl.LOCK_UN)
        finally:
            fcntl.flock(turn, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fds:
            for fd in self._fds:
                os.close(fd)
            self._fds = None

    def __getstate__(self) -> dict[str, object]:  # picklable across Ray: reopen on the other side
        return {"directory": self.directory, "waited_s": 0.0, "waits": [], "_fds": None}
