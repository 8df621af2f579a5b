"""The durable leaderboard of one run: ``<run>/trials.jsonl`` appended, ``<run>/leaderboard.csv`` rebuilt.

The durable record is ``trials.jsonl`` (one JSON object per finished trial, appended and fsynced);
the CSV is rebuilt from it after every trial and replaced atomically, so a reader never sees a
half-written file and ``pareto_rank`` is always consistent.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autotune.leaderboard.csv import write_csv
from autotune.leaderboard.drift import DRIFT_THRESHOLD, flag_drift
from autotune.leaderboard.ranking import device_objectives, rank_rows

__all__ = ["Leaderboard"]

log = logging.getLogger(__name__)


class Leaderboard:
    """Writes a run's trials: append to ``trials.jsonl``, rebuild ``leaderboard.csv`` atomically.

    Safe under concurrent writers (threads or processes): every update holds an ``flock``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        objectives: Mapping[str, str],
        metric_columns: Mapping[str, str],
        drift_threshold: float = DRIFT_THRESHOLD,
        devices: Sequence[str] = (),
    ):
        """``devices``: the other devices of a multi-device search, each ranked in ``pareto_rank@<device>``."""
        self.run_dir = Path(run_dir)
        self.devices = tuple(devices)
        self.drift_threshold = drift_threshold
        self.objectives = dict(objectives)
        self.metric_columns = dict(metric_columns)
        self.store = self.run_dir / "trials.jsonl"
        self.csv_path = self.run_dir / "leaderboard.csv"
        self._torn_warned = 0

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / ".leaderboard.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def rows(self) -> list[dict[str, Any]]:
        """The stored rows, one per trial id (the last record of a trial wins), in trial order.

        A line that is not a whole JSON object (torn by a power loss or a full disk mid-append) is
        skipped with a warning: that trial is not finished, so a resume runs it again.
        """
        if not self.store.exists():
            return []
        by_id: dict[str, dict[str, Any]] = {}
        torn = 0
        for line in self.store.read_bytes().decode(errors="replace").splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    torn += 1
                    continue
                if isinstance(row, dict) and "trial_id" in row:
                    by_id[str(row["trial_id"])] = row
                else:
                    torn += 1
        if torn and torn != self._torn_warned:
            self._torn_warned = torn
            log.warning("%s: skipped %d torn line(s) (a write cut short); those trials run again", self.store, torn)
        return sorted(by_id.values(), key=lambda r: (r.get("started_at") or "", str(r["trial_id"])))

    def add(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Record one finished trial and rewrite the CSV; return all rows (ranked).

        Raises:
            OSError: the row could not be stored (a full disk: ``errno.ENOSPC``); the CSV is then
                the last good one and the store holds at most a torn line, which ``rows`` skips.
        """
        line = (json.dumps(dict(row), default=str) + "\n").encode()
        with self._locked():
            with open(self.store, "ab") as f:
                if f.tell() and not self._ends_with_newline():
                    line = b"\n" + line  # a torn last line stays on its own line, skipped
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            return self._write_csv()

    def _ends_with_newline(self) -> bool:
        with open(self.store, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def rewrite(self) -> list[dict[str, Any]]:
        """Rebuild the CSV from the stored rows (ranks and drift recomputed); return them."""
        with self._locked():
            return self._write_csv()

    def _write_csv(self) -> list[dict[str, Any]]:
        rows = self.rows()
        rank_rows(rows, self.objectives, self.metric_columns)
        for device in self.devices:
            objectives = device_objectives(self.objectives, device)
            rank_rows(rows, objectives, self.metric_columns, rank_column=f"pareto_rank@{device}")
        flag_drift(rows, self.drift_threshold)
        write_csv(rows, self.csv_path)
        return rows
