"""The tuning database of a device profile: MetaSchedule's records, a ledger of trial budgets, and locks.

One directory per device profile, kept across runs (``database_dir``)::

    database_workload.json        MetaSchedule's JSONDatabase: one workload (a PrimFunc) per line
    database_tuning_record.json   one measured schedule per line, naming its workload by line number
    ledger.json                   the target; per workload (structural hash): task name, trials tuned with;
                                  per model (its workloads' keys): the latency-guided budgets it was given
    .tune.lock, .data.lock        flock files (below)

**Hits and misses.** A small trial budget is split over a model's workloads in proportion to their FLOPs
(``allocate_trials``). A budget of at least ``GUIDED_MIN_ROUNDS`` rounds per workload is *latency-guided*
(``plan_guided``): every workload gets one round, which measures it, and the rest goes, in two stages,
in proportion to each workload's best measured latency times its calls, so the kernels that cost the
most time get the trials (a depthwise convolution has few FLOPs but can take a large share of the
latency). The ledger keeps those budgets per model, so a repeated request plans the same budgets.
A workload is a *hit* when the ledger shows it was tuned with at least its share, else a *miss*, tuned
with the difference (``plan_tuning``). The ledger credits a workload only once the database holds a
valid (measured, error-free) record of it. So a repeated identical tuning measures nothing, and a larger
budget (finalists) tops the workloads up.

**Concurrency.** Tuners take ``.tune.lock`` exclusively for their whole tuning, so they run one at a
time and each plans only once it holds the lock: two workers tuning the same model do the work once.
A tuner measures into a private staging database (``.staging-*``) and merges its new records into the
shared files while holding ``.data.lock`` exclusively (milliseconds); compiles that only read the
database hold it shared. A reader therefore never waits for a tuning nor sees a half-written line, and
no two processes ever append to the files at once, which would corrupt them (record lines refer to
workloads by line number). ``flock`` locks die with their process; a killed tuner leaves only its
staging directory behind.

This module is plain Python; ``autotune.compiler.tune`` drives MetaSchedule with it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from autotune.config.device_profile import DeviceProfile
from autotune.errors import UserError
from autotune.quiet import QuietLock

__all__ = [
    "TRIALS_PER_ITER",
    "TuneReport",
    "TuningDatabase",
    "TuningPlan",
    "TuningRequest",
    "Workload",
    "allocate_trials",
    "database_dir",
    "guided",
    "model_key",
    "plan_guided",
    "plan_tuning",
]

#: MetaSchedule trials measured per task and round; budgets are split in whole rounds.
TRIALS_PER_ITER = 8
#: Budgets of at least this many rounds per workload are latency-guided (``plan_guided``).
GUIDED_MIN_ROUNDS = 4
#: The shares of a latency-guided budget planned after the first round, each on the latencies then.
GUIDED_STAGES = (0.5, 1.0)


@dataclass(frozen=True)
class TuningRequest:
    """Ask ``compile_artifact`` to tune with ``trials`` and apply the best schedules of the database.

    With ``trials=0`` nothing is measured, but schedules already in the database are applied.

    Attributes:
        db_dir: the profile's tuning database directory (``database_dir``).
        lock: the run's quiet lock; compiling holds it shared, tuning exclusively. The caller must not
            hold it during ``compile_artifact``.
        seed: seeds MetaSchedule's search.
    """

    trials: int
    db_dir: str
    lock: QuietLock | None = None
    seed: int = 0


@dataclass(frozen=True)
class TuneReport:
    """What one tuning did.

    Attributes:
        tasks: workloads (fused PrimFuncs) in the model.
        hits: workloads with a budget that the database already had tuned to it.
        misses: workloads with a budget that had to be tuned (or topped up).
        trials: schedules measured by this tuning (0 when everything was a hit).
        tune_s: seconds spent, lock waits excluded.
        records: records in the database afterwards.
    """

    tasks: int
    hits: int
    misses: int
    trials: int
    tune_s: float
    records: int


@dataclass(frozen=True)
class Workload:
    """One tuning task of a model.

    Attributes:
        key: MetaSchedule's structural hash of the PrimFunc (as in ``database_workload.json``).
        name: the task name, for logs and the ledger.
        flops: floating-point operations per inference (one call's FLOPs times the calls).
        calls: calls per inference.
    """

    key: str
    name: str
    flops: float
    calls: int = 1


@dataclass(frozen=True)
class TuningPlan:
    """Budgets of one tuning.

    Attributes:
        budgets: workload key → trials it should be tuned with (workloads with a budget only).
        todo: the misses: workload key → trials still to measure.
    """

    budgets: dict[str, int]
    todo: dict[str, int]

    @classmethod
    def from_budgets(cls, budgets: Mapping[str, int], tuned: Mapping[str, int]) -> TuningPlan:
        """The plan for ``budgets`` when the ledger already has ``tuned``: the misses are the shortfall."""
        todo = {k: n - tuned.get(k, 0) for k, n in budgets.items() if tuned.get(k, 0) < n}
        return cls(budgets=dict(budgets), todo=todo)

    @property
    def hits(self) -> int:
        return len(self.budgets) - len(self.todo)

    @property
    def misses(self) -> int:
        return len(self.todo)


def database_dir(profile: DeviceProfile, results_dir: str | os.PathLike[str]) -> Path:
    """The profile's tuning database: ``tuning.database``, else ``<results_dir>/tuning_db/<profile name>``."""
    if profile.tuning.database:
        return Path(profile.tuning.database)
    return Path(results_dir) / "tuning_db" / profile.name


def allocate_trials(trials: int, weights: Sequence[float], *, step: int = TRIALS_PER_ITER) -> list[int]:
    """Split ``trials`` over tasks in proportion to ``weights`` (FLOPs), in whole rounds of ``step``.

    Rounds go to the largest shares (largest remainder); trials short of a round go to the heaviest
    task. A task of weight 0 gets nothing, so does every task when all weights are 0.
    """
    out = [0] * len(weights)
    total = sum(weights)
    if trials <= 0 or total <= 0:
        return out
    rounds, rest = divmod(trials, step)
    quotas = [rounds * w / total for w in weights]
    whole = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda i: whole[i] - quotas[i])
    for i in by_remainder[: rounds - sum(whole)]:
        whole[i] += 1
    out = [n * step for n in whole]
    out[max(range(len(weights)), key=lambda i: weights[i])] += rest
    return out


def _plan(workloads: Sequence[Workload], allocation: Sequence[int], tuned: Mapping[str, int]) -> TuningPlan:
    budgets: dict[str, int] = {}
    for w, n in zip(workloads, allocation, strict=True):
        if n > 0:
            budgets[w.key] = max(n, budgets.get(w.key, 0))
    return TuningPlan.from_budgets(budgets, tuned)


def guided(workloads: Sequence[Workload], trials: int, *, step: int = TRIALS_PER_ITER) -> bool:
    """Whether ``trials`` is large enough for a latency-guided plan of these workloads."""
    return bool(workloads) and trials >= GUIDED_MIN_ROUNDS * step * len({w.key for w in workloads})


def plan_guided(
    workloads: Sequence[Workload],
    trials: int,
    tuned: Mapping[str, int],
    latency_s: Mapping[str, float | None],
    *,
    step: int = TRIALS_PER_ITER,
) -> TuningPlan:
    """One round per workload, the rest of ``trials`` in proportion to latency × calls.

    ``latency_s`` is each workload's best measured latency per call. A workload without one (no valid
    schedule yet) is estimated from its FLOPs at the measured workloads' mean FLOP rate (or, when none
    is measured, weighted by FLOPs alone).
    """
    unique = list({w.key: w for w in workloads}.values())
    known = [(w, latency_s[w.key]) for w in unique if latency_s.get(w.key)]
    rate = sum(w.flops for w, _ in known) / sum(lat * w.calls for w, lat in known) if known else 0.0
    weights = []
    for w in unique:
        lat = latency_s.get(w.key)
        if lat:
            weights.append(lat * w.calls)
        elif rate > 0:
            weights.append(w.flops / rate)
        else:
            weights.append(w.flops)
    if sum(weights) <= 0:
        weights = [1.0] * len(unique)
    rest = max(0, trials - step * len(unique))
    allocation = [step + n for n in allocate_trials(rest, weights, step=step)]
    return _plan(unique, allocation, tuned)


def model_key(workloads: Sequence[Workload]) -> str:
    """A model's identity for the ledger's plans: its workloads' keys and calls."""
    parts = sorted({f"{w.key}x{w.calls}" for w in workloads})
    return hashlib.sha256(",".join(parts).encode()).hexdigest()[:20]


def plan_tuning(workloads: Sequence[Workload], trials: int, tuned: Mapping[str, int]) -> TuningPlan:
    """Allocate ``trials`` over ``workloads`` and subtract what the ledger (``tuned``) already has.

    A workload that occurs twice in ``workloads`` keeps its larger budget.
    """
    return _plan(workloads, allocate_trials(trials, [w.flops for w in workloads]), tuned)


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

    def _ledger(self) -> tuple[str | None, dict[str, dict[str, int | str]], dict[str, dict]]:
        if not self.ledger_file.exists():
            return None, {}, {}
        ledger = json.loads(self.ledger_file.read_text())
        return ledger["target"], ledger["workloads"], ledger.get("plans", {})

    def tuned_trials(self, target: str) -> dict[str, int]:
        """Workload key → trials it was tuned with; read it inside ``reading()``.

        Raises:
            UserError: the database was tuned for another target.
        """
        made_for, workloads, _ = self._ledger()
        if made_for not in (None, target):
            raise UserError(
                f"the tuning database was made for target {made_for}, not {target}",
                file=str(self.ledger_file),
                key="target",
                hint="give this profile its own tuning.database directory",
            )
        return {k: int(v["trials"]) for k, v in workloads.items()}

    def stored_plan(self, model: str) -> tuple[int, dict[str, int]] | None:
        """The largest latency-guided plan kept for ``model`` (``model_key``): its trials and budgets;
        read it inside ``reading()``."""
        plan = self._ledger()[2].get(model)
        return (int(plan["trials"]), {k: int(v) for k, v in plan["budgets"].items()}) if plan else None

    def credit(
        self,
        target: str,
        tuned: Mapping[str, tuple[str, int]],
        *,
        plan: tuple[str, int, Mapping[str, int]] | None = None,
    ) -> None:
        """Record that workloads (key → (task name, trials)) were tuned, and a model's latency-guided
        ``plan`` (model key, trials, budgets) when given; call it inside ``writing()``.

        The ledger is replaced atomically (a temporary file, then a rename).
        """
        _, workloads, plans = self._ledger()
        for key, (name, trials) in tuned.items():
            old = int(workloads.get(key, {}).get("trials", 0))
            workloads[key] = {"task": name, "trials": max(old, trials)}
        if plan is not None:
            model, trials, budgets = plan
            if model not in plans or int(plans[model]["trials"]) <= trials:
                plans[model] = {"trials": trials, "budgets": dict(budgets)}
        ledger = {"target": target, "workloads": workloads, "plans": plans}
        tmp = self.ledger_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(ledger, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.ledger_file)
