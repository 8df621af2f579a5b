"""The live report: ``report.html`` rewritten in the background as trials end, at most one write at a
time and at most every ``min_interval_s``, so a slow plot never holds up the search."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["LiveReport"]

log = logging.getLogger(__name__)


class LiveReport:
    """Calls ``write()`` in a daemon thread after ``request()``; requests that arrive meanwhile are
    folded into the next write. ``stop()`` waits for the write in progress, so the final report written
    after it is never overwritten by a live one."""

    def __init__(self, write: Callable[[], Any], *, min_interval_s: float = 5.0) -> None:
        self._write, self.min_interval_s = write, min_interval_s
        self._wanted, self._stopped = threading.Event(), threading.Event()
        self.writes = 0
        self._thread = threading.Thread(target=self._loop, name="autotune-live-report", daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a rewrite (a row was added)."""
        self._wanted.set()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            if not self._wanted.wait(timeout=0.5):
                continue
            self._wanted.clear()
            if self._stopped.is_set():
                return
            try:
                self._write()
                self.writes += 1
            except Exception as err:  # a report that cannot be drawn must not stop the search
                log.warning("the live report could not be written: %s", err)
            self._stopped.wait(self.min_interval_s)

    def stop(self) -> None:
        """No more writes; wait for the one in progress."""
        self._stopped.set()
        self._thread.join()
