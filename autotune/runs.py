"""Run directories: a run's name (it may not leave the results directory), the one driver that may
write a run (``DriverLock``) and what a finished run holds."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import SearchSpace
from autotune.errors import UserError

__all__ = ["DriverLock", "leaderboard_csv", "read_run", "run_name_dir"]

log = logging.getLogger(__name__)

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def run_name_dir(results_dir: str | Path, name: str) -> Path:
    """The run directory for ``name``; refuses names that could escape ``results_dir``."""
    if not _RUN_NAME.match(name) or name in (".", "..") or ".." in name:
        raise UserError(
            f"run name {name!r} is not allowed",
            key="--name",
            hint="use letters, digits, '.', '_' and '-' (no '/', no '..'), starting with a letter or digit",
        )
    root = Path(results_dir).resolve()
    run_dir = (root / name).resolve()
    if run_dir.parent != root:
        raise UserError(f"run name {name!r} escapes the results directory", key="--name")
    return run_dir


def read_run(run_dir: str | Path) -> tuple[Path, SearchSpace, DeviceProfile, list[dict[str, Any]]]:
    """A finished (or running) run: its directory, its own copies of the space and profile, its rows.

    Raises:
        UserError: ``run_dir`` has no ``leaderboard.csv`` or ``space.yaml``.
    """
    from autotune.config.load import load_profile
    from autotune.leaderboard import read_leaderboard
    from autotune.validate import load_space

    run = Path(run_dir).resolve()
    if not (run / "leaderboard.csv").exists() or not (run / "space.yaml").exists():
        raise UserError("not a run directory (no leaderboard.csv / space.yaml)", file=str(run_dir))
    space = load_space(run / "space.yaml", plugins=False)
    return run, space, load_profile(run / "profile.yaml"), read_leaderboard(run)


def leaderboard_csv(run: str | Path) -> Path:
    """A run directory's ``leaderboard.csv``, or ``run`` itself when it is a CSV file.

    Raises:
        UserError: there is no such file.
    """
    path = Path(run)
    csv_path = path / "leaderboard.csv" if path.is_dir() else path
    if not csv_path.exists():
        raise UserError(
            "no leaderboard.csv here", file=str(path), hint="pass a run directory such as results/first-run"
        )
    return csv_path


class DriverLock:
    """One driver per run directory: an ``flock`` on ``<run>/.driver.lock`` for the whole run, with the
    holder's PID, host and start time written in the file.

    A second driver (a search of the same name, or a ``--resume``) is refused with the holder's PID
    and host. The kernel releases an ``flock`` when its process dies, so the lock of a killed driver
    is free, and the next driver takes it over (saying whose it was). On a network filesystem the
    lock is as good as the filesystem's ``flock`` (NFSv4: yes).
    """

    FILE = ".driver.lock"

    def __init__(self, run_dir: str | Path, *, key: str = "--name") -> None:
        self.path = Path(run_dir) / self.FILE
        self.key = key
        self._fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            UserError: another driver holds it (its PID and host in the message).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self._holder()
            raise UserError(
                f"the run is in use by another driver: PID {h.get('pid', '?')} on host {h.get('host', '?')}, "
                f"since {h.get('started', '?')}",
                file=str(self.path.parent),
                key=self.key,
                hint="wait for it to finish, or stop it (its finished trials are kept) and resume then",
            ) from None
        before = self._holder()
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if before and (before.get("pid"), before.get("host")) != (me["pid"], me["host"]):
            log.info(
                "taking over the run from a driver that stopped: PID %s on %s", before.get("pid"), before.get("host")
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (the file stays; its contents name the last holder)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
