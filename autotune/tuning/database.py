"""The tuning database of a device profile: MetaSchedule's records, a ledger of trial budgets, and locks.

The files, the hit/miss bookkeeping and the locking protocol are described in ``autotune.tuning``.
Plain Python, no TVM.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.errors import UserError

__all__ = ["TuningDatabase", "database_dir"]


def database_dir(profile: DeviceProfile, results_dir: str | os.PathLike[str]) -> Path:
    """The profile's tuning database: ``tuning.database``, else ``<results_dir>/tuning_db/<profile name>``."""
    if profile.tuning.database:
        return Path(profile.tuning.database)
    return Path(results_dir) / "tuning_db" / profile.name


class TuningDatabase:
    """The files and locks of one tuning database directory (see the module docstring).

    ``waited_s`` accumulates the seconds spent blocked on its locks.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.waited_s = 0.0

    @property
    def workload_file(self) -> Path:
        return self.directory / "database_workload.json"

    @property
    def record_file(self) -> Path:
        return self.directory / "database_tuning_record.json"

    @property
    def ledger_file(self) -> Path:
        return self.directory / "ledger.json"

    def record_count(self) -> int:
        """Tuning records in the database (valid or not); read it inside ``reading()``."""
        if not self.record_file.exists():
            return 0
        with self.record_file.open("rb") as f:
            return sum(1 for line in f if line.strip())

    @contextmanager
    def _flock(self, name: str, op: int) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            t0 = time.perf_counter()
            fcntl.flock(fd, op)
            self.waited_s += time.perf_counter() - t0
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    def reading(self) -> AbstractContextManager[None]:
        """Hold the data lock shared: the database files and the ledger do not change meanwhile."""
        return self._flock(".data.lock", fcntl.LOCK_SH)

    def writing(self) -> AbstractContextManager[None]:
        """Hold the data lock exclusively: no one reads while records are appended and the ledger replaced."""
        return self._flock(".data.lock", fcntl.LOCK_EX)

    def tuning(self) -> AbstractContextManager[None]:
        """Hold the tuning lock: one tuner at a time (it takes ``reading``/``writing`` inside)."""
        return self._flock(".tune.lock", fcntl.LOCK_EX)

    def staging(self) -> tempfile.TemporaryDirectory[str]:
        """A private directory for the records of one tuning, removed afterwards."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix=".staging-", dir=self.directory)

    def _ledger(self) -> dict[str, Any]:
        if not self.ledger_file.exists():
            return {"target": None, "workloads": {}, "plans": {}, "spaces": {}}
        ledger = json.loads(self.ledger_file.read_text())
        return {"plans": {}, "spaces": {}} | ledger

    def _write(self, ledger: dict[str, Any]) -> None:
        """Replace the ledger atomically (a temporary file, then a rename)."""
        tmp = self.ledger_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(ledger, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.ledger_file)

    def tuned_trials(self, target: str) -> dict[str, int]:
        """Workload key → trials it was tuned with; read it inside ``reading()``.

        Raises:
            UserError: the database was tuned for another target.
        """
        ledger = self._ledger()
        if ledger["target"] not in (None, target):
            raise UserError(
                f"the tuning database was made for target {ledger['target']}, not {target}",
                file=str(self.ledger_file),
                key="target",
                hint="give this profile its own tuning.database directory",
            )
        return {k: int(v["trials"]) for k, v in ledger["workloads"].items()}

    def with_default(self) -> set[str]:
        """Keys of the workloads whose default schedule is in the database; read it inside ``reading()``."""
        return {k for k, v in self._ledger()["workloads"].items() if v.get("default")}

    def stored_plan(self, model: str) -> tuple[int, dict[str, int]] | None:
        """The largest latency-guided plan kept for ``model`` (``model_key``): its trials and budgets;
        read it inside ``reading()``."""
        plan = self._ledger()["plans"].get(model)
        return (int(plan["trials"]), {k: int(v) for k, v in plan["budgets"].items()}) if plan else None

    def space_spent_s(self, space: str) -> float:
        """Seconds ``autotune tune`` has spent on the space tuning ``space`` (its key) so far; read it
        inside ``reading()``."""
        return float(self._ledger()["spaces"].get(space, {}).get("spent_s", 0.0))

    def add_space_spent(self, target: str, space: str, seconds: float, info: Mapping[str, Any]) -> None:
        """Add ``seconds`` to the time spent on the space tuning ``space`` (with ``info`` kept beside
        it: the space's name, the samples); call it inside ``writing()``."""
        ledger = self._ledger()
        entry = ledger["spaces"].setdefault(space, {"spent_s": 0.0})
        entry.update(info)
        entry["spent_s"] = float(entry["spent_s"]) + seconds
        ledger["target"] = ledger["target"] or target
        self._write(ledger)

    def credit(
        self,
        target: str,
        tuned: Mapping[str, tuple[str, int]],
        *,
        plan: tuple[str, int, Mapping[str, int]] | None = None,
        defaults: Mapping[str, str] | None = None,
    ) -> None:
        """Record that workloads (key → (task name, trials)) were tuned, that the default schedules of
        ``defaults`` (key → task name) were measured into the database, and a model's latency-guided
        ``plan`` (model key, trials, budgets) when given; call it inside ``writing()``."""
        ledger = self._ledger()
        workloads, plans = ledger["workloads"], ledger["plans"]
        for key, name in (defaults or {}).items():
            workloads.setdefault(key, {"task": name, "trials": 0})["default"] = True
        for key, (name, trials) in tuned.items():
            entry = workloads.setdefault(key, {"task": name, "trials": 0})
            entry["trials"] = max(int(entry.get("trials", 0)), trials)
        if plan is not None:
            model, trials, budgets = plan
            if model not in plans or int(plans[model]["trials"]) <= trials:
                plans[model] = {"trials": trials, "budgets": dict(budgets)}
        ledger["target"] = target
        self._write(ledger)
