"""``tune_space``: tune a search space's workloads into a device profile's tuning database, within a
time budget, on this machine or over a Ray cluster, resuming where an earlier ``tune`` stopped."""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import SearchSpace
from autotune.errors import UserError, describe
from autotune.spacetune.plan import next_todo
from autotune.spacetune.sample import sample_space
from autotune.tuning.database import TuningDatabase, database_dir

__all__ = ["SpaceTuneReport", "tune_space"]

log = logging.getLogger(__name__)

#: Workloads per chunk: one MetaSchedule call on a node (about one to three minutes on 2 cores).
CHUNK = 4
#: Workloads per chunk of the first pass, which only measures their default schedules.
DEFAULTS_CHUNK = 16


@dataclass(frozen=True)
class SpaceTuneReport:
    """What one ``tune`` did and where the space stands.

    Attributes:
        database: the profile's tuning database directory.
        architectures: sampled architectures that compiled.
        workloads: distinct workloads in the sample.
        tuned: workloads with a valid tuned record now.
        covered: the share of the sample's kernel calls whose workload is tuned.
        trials: schedules measured by this ``tune``.
        seconds: wall time this ``tune`` spent tuning (sampling excluded).
        spent_s: the space's tuning time in all, this ``tune`` included.
        budget_s: the budget asked for (in all, across ``tune`` calls).
        nodes: the nodes that measured.
        failed: workloads no schedule could be measured for (default schedules keep them).
        interrupted: stopped by Ctrl-C after the chunks in flight.
    """

    database: Path
    architectures: int
    workloads: int
    tuned: int
    covered: float
    trials: int
    seconds: float
    spent_s: float
    budget_s: float
    nodes: tuple[str, ...]
    failed: int
    interrupted: bool = False


class _StopOnInterrupt:
    """Ctrl-C ends the tuning after the chunks in flight (MetaSchedule would otherwise turn the
    KeyboardInterrupt raised inside its builder into a failed measurement and go on); a second
    Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after the chunks in flight (Ctrl-C again to stop now)")

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def space_key(space: SearchSpace, samples: int, seed: int) -> str:
    """The ledger's key of a space tuning: the space's contents, the sample size and seed."""
    text = f"{space.model_dump_json()}|{samples}|{seed}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def tune_space(
    space: SearchSpace,
    profile: DeviceProfile,
    budget_s: float,
    *,
    results_dir: str | Path = "results",
    address: str | None = None,
    samples: int = 16,
    seed: int = 0,
    max_trials: int = 256,
    space_file: str | None = None,
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
) -> SpaceTuneReport:
    """Tune the workloads of ``samples`` architectures of ``space`` into ``profile``'s database.

    The budget is the space's tuning time in all: a second ``tune`` with the same budget measures
    nothing, a larger one goes on for the difference. Workloads are measured in chunks (``CHUNK``
    workloads, ``autotune.spacetune.plan.next_todo``), each merged into the database as it finishes,
    so a killed ``tune`` loses at most the chunks in flight.

    Args:
        address: a Ray cluster to spread the chunks over (one per node at a time); None: this machine.
        max_trials: trials at which a workload counts as fully tuned.
        on_chunk: called after each merged chunk with a progress dict (for the CLI).

    Raises:
        UserError: a target other than llvm, a database made for another target, a space where no
            sampled architecture compiles; all before anything is measured.
    """
    from autotune.compiler import resolve_target
    from autotune.tuning.chunk import best_latencies, merge_result, pack_chunk

    if budget_s <= 0:
        raise UserError(f"the budget must be positive, not {budget_s:g} s", key="--budget")
    target = resolve_target(profile)
    if target.kind.name != "llvm":
        raise UserError(f"tuning supports llvm (CPU) targets, not {target.kind.name}", key="target")
    db = TuningDatabase(database_dir(profile, results_dir))
    key = space_key(space, samples, seed)
    tuned: dict[str, int] = {}
    with_default: set[str] = set()
    spent0 = 0.0
    if db.ledger_file.exists():  # (a failed check leaves no database directory behind)
        with db.reading():
            tuned = db.tuned_trials(str(target))  # refuses a database made for another target
            spent0 = db.space_spent_s(key)
            with_default = db.with_default()
    sample = sample_space(space, profile, samples=samples, seed=seed, file=space_file)
    workloads = list(sample.workloads.values())
    latency = best_latencies(db, {k: mod for k, (_, mod) in sample.mods.items()})
    names = {k: name for k, (name, _) in sample.mods.items()}
    already = sum(1 for k in sample.workloads if tuned.get(k, 0) > 0)
    log.info(
        "%d architectures, %d distinct workloads; %d already tuned; %.0f of %.0f min of this space's budget spent",
        sample.architectures, len(workloads), already, spent0 / 60, budget_s / 60,
    )  # fmt: skip
    from autotune.spacetune.nodes import LocalNodes, RayNodes

    nodes = RayNodes(address, profile) if address else LocalNodes(db, profile)
    t0 = last = time.monotonic()
    trials = chunks = 0
    busy: dict[int, dict[str, int]] = {}
    failed: set[str] = set()
    used: set[str] = set()
    default_tried: set[str] = set()
    stop = _StopOnInterrupt()
    try:
        while True:
            left = budget_s - spent0 - (time.monotonic() - t0)
            typical = (time.monotonic() - t0) / chunks if chunks else 0.0  # wall per chunk so far
            for node in range(len(nodes.names)):
                if node in busy or left <= typical / 2 or stop.requested:  # overrun by half a chunk at most
                    continue
                skip = failed | {k for todo in busy.values() for k in todo}
                lacking = [w.key for w in workloads if w.key not in with_default | default_tried | skip]
                if lacking:  # first: every workload's default schedule, measured (the floor tuning must beat)
                    defaults = tuple(lacking[:DEFAULTS_CHUNK])
                    todo, default_tried = dict.fromkeys(defaults, 0), default_tried | set(defaults)
                else:
                    defaults = ()
                    todo = next_todo(workloads, tuned, latency, size=CHUNK, max_trials=max_trials, skip=skip)
                if not todo:
                    break
                busy[node] = todo
                chunk = pack_chunk(db, target, profile, sample.mods, todo, seed=seed + chunks, defaults=defaults)
                nodes.submit(node, chunk)
                chunks += 1
            if not busy:
                break
            node, result = nodes.wait()
            todo, where = busy.pop(node), nodes.names[node]
            if isinstance(result, BaseException):
                failed |= set(todo)
                log.warning("a chunk of %d workloads failed on %s: %s", len(todo), where, describe(result))
            else:
                trials += merge_result(db, target, result, names, tuned=tuned)
                used.add(where)
                with_default |= set(result.defaults)
                for k, n in todo.items():
                    if k in result.valid:
                        tuned[k] = tuned.get(k, 0) + n
                        latency[k] = result.best_s.get(k) or latency.get(k)
                    elif n > 0:
                        failed.add(k)
            now = time.monotonic()
            with db.writing():
                db.add_space_spent(
                    str(target), key, now - last, {"space": space.name, "samples": samples, "seed": seed}
                )
            last = now
            done = sum(1 for w in workloads if tuned.get(w.key, 0) > 0)
            measured = 0 if isinstance(result, BaseException) else result.measured
            progress = {
                "node": where, "workloads": len(todo), "trials": measured, "tuned": done, "total": len(workloads),
                "spent_s": spent0 + now - t0, "budget_s": budget_s,
            }  # fmt: skip
            log.info(
                "chunk on %s: %d workloads, %d trials; %d of %d workloads tuned; %.1f of %.1f min",
                where, len(todo), measured, done, len(workloads), progress["spent_s"] / 60, budget_s / 60,
            )  # fmt: skip
            if on_chunk is not None:
                on_chunk(progress)
    finally:
        stop.restore()
        nodes.close()
    calls = sum(w.calls for w in workloads)
    covered = sum(w.calls for w in workloads if tuned.get(w.key, 0) > 0) / calls if calls else 0.0
    with db.reading():
        spent = db.space_spent_s(key)
    if stop.requested:
        log.warning("interrupted: the chunks that finished are in the database; the same command goes on")
    return SpaceTuneReport(
        database=db.directory,
        architectures=sample.architectures,
        workloads=len(workloads),
        tuned=sum(1 for w in workloads if tuned.get(w.key, 0) > 0),
        covered=covered,
        trials=trials,
        seconds=time.monotonic() - t0,
        spent_s=spent,
        budget_s=budget_s,
        nodes=tuple(sorted(used)),
        failed=len(failed),
        interrupted=stop.requested,
    )
