"""``tune``: MetaSchedule on a model's fused PrimFuncs, for the workloads the tuning database lacks at
the requested budget, and ``apply_database``: the database's best schedules applied to a module."""

from __future__ import annotations

import importlib
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autotune.config.device_profile import DeviceProfile
from autotune.errors import CandidateFailed, describe
from autotune.measure import RUNNERS
from autotune.quiet import QuietLock
from autotune.tuning.database import TuningDatabase
from autotune.tuning.intrin import stub_tensor_intrin
from autotune.tuning.plan import (
    GUIDED_STAGES,
    TRIALS_PER_ITER,
    TuningPlan,
    Workload,
    guided,
    model_key,
    plan_guided,
    plan_tuning,
)
from autotune.tuning.session import Session

if TYPE_CHECKING:
    import tvm

__all__ = ["TuneReport", "TuningRequest", "apply_database", "extract_workloads", "tune"]

log = logging.getLogger(__name__)


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
        trials: schedules measured by this tuning (0 when everything was a hit): MetaSchedule's trials
            and the default schedule of each workload the database had none of (measured once, kept as a
            record: the best record is never worse than the default, and the search starts from it).
        tune_s: seconds spent, lock waits excluded.
        records: records in the database afterwards.
    """

    tasks: int
    hits: int
    misses: int
    trials: int
    tune_s: float
    records: int


def extract_workloads(mod: tvm.IRModule, target: tvm.target.Target) -> tuple[list[Any], list[Workload]]:
    """MetaSchedule's tasks of a fused module (one per distinct fused PrimFunc not scheduled yet) and
    their ``Workload``.

    Raises:
        CandidateFailed: stage ``tune``, when TVM cannot extract the tasks.
    """
    stub_tensor_intrin(target)
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops
    from tvm_ffi import structural_hash

    try:
        tasks = [  # not the kernels scheduled by the build itself (the dot-product kernels)
            t
            for t in ms.relax_integration.extract_tasks(mod, target)
            if not any(f.attrs.get("tir.is_scheduled", False) for _, f in t.dispatched[0].functions_items())
        ]
        workloads = [
            Workload(
                key=str(structural_hash(t.dispatched[0])),
                name=str(t.task_name),
                flops=float(estimate_tir_flops(t.dispatched[0])) * int(t.weight),
                calls=int(t.weight),
            )
            for t in tasks
        ]
    except Exception as err:  # TVMError and friends: this candidate cannot be tuned
        raise CandidateFailed("tune", describe(err)) from err
    return tasks, workloads


def _ledger_plan(
    workloads: list[Workload], trials: int, db: TuningDatabase, target: tvm.target.Target
) -> TuningPlan | None:
    """The plan the ledger gives: the FLOPs split of a small budget, or the latency-guided budgets kept
    for this model at ``trials`` or more; None when a latency-guided plan must be made by measuring.
    Call it inside ``db.reading()``."""
    tuned = db.tuned_trials(str(target))
    if not guided(workloads, trials):
        return plan_tuning(workloads, trials, tuned)
    stored = db.stored_plan(model_key(workloads))
    if stored is None or stored[0] < trials:
        return None
    return TuningPlan.from_budgets(stored[1], tuned)


def _tune_guided(session: Session, workloads: list[Workload], trials: int, tuned: dict[str, int]) -> dict[str, int]:
    """A latency-guided tuning (``plan_guided``): a first round for every workload
    short of one, then ``GUIDED_STAGES`` of the budget, each split on the latencies measured so far.

    Returns:
        workload key → the trials it is now tuned with.
    """
    done = {w.key: tuned.get(w.key, 0) for w in workloads}
    first = {k: TRIALS_PER_ITER - n for k, n in done.items() if n < TRIALS_PER_ITER}
    session.tune(first)
    done.update({k: TRIALS_PER_ITER for k in first})
    for share in GUIDED_STAGES:
        latency = {k: session.latency_s(k) for k in done}
        stage = plan_guided(workloads, round(trials * share), done, latency)
        session.tune(stage.todo)
        done.update({k: stage.budgets[k] for k in stage.todo})
        log.debug("tuning stage %.0f%%: latency %s, todo %s", 100 * share, latency, stage.todo)
    return done


def _measure(
    plan: TuningPlan | None,
    tasks: list[Any],
    workloads: list[Workload],
    trials: int,
    tuned: dict[str, int],
    db: TuningDatabase,
    target: tvm.target.Target,
    seed: int,
    profile: DeviceProfile,
) -> tuple[TuningPlan, int]:
    """Tune ``plan``'s misses (None: make a latency-guided plan by measuring), merge the records and
    credit the ledger; call it holding ``db.tuning()`` and the quiet lock.

    Returns:
        The plan carried out, and the number of records measured.
    """
    by_key = {w.key: t for t, w in zip(tasks, workloads, strict=True)}
    with db.staging() as staging:
        try:
            keys = plan.todo if plan is not None else by_key
            session = Session({k: by_key[k] for k in keys}, staging, target=target, db=db, seed=seed, profile=profile)
            with db.reading():
                have = db.with_default()
            defaults = session.measure_defaults([k for k in keys if k not in have])
            if plan is not None:
                session.tune(plan.todo)
            else:
                plan = TuningPlan.from_budgets(_tune_guided(session, workloads, trials, tuned), tuned)
            measured, valid = session.merge()
        except Exception as err:  # TVMError, builder/runner pool failures: this candidate's tuning
            raise CandidateFailed("tune", describe(err)) from err
    names = {w.key: w.name for w in workloads}
    guided_plan = (model_key(workloads), trials, plan.budgets) if guided(workloads, trials) else None
    with db.writing():
        db.credit(str(target), {k: (names[k], plan.budgets[k]) for k in plan.todo if k in valid}, plan=guided_plan,
                  defaults={k: names[k] for k in defaults if k in valid})  # fmt: skip
    if missing := set(plan.todo) - valid:
        log.warning("tuning left %d of %d workloads without a valid schedule", len(missing), len(plan.todo))
    return plan, measured


def tune(
    mod: tvm.IRModule,
    *,
    target: tvm.target.Target,
    profile: DeviceProfile,
    db_dir: str | os.PathLike[str],
    trials: int,
    lock: QuietLock | None = None,
    seed: int = 0,
) -> TuneReport:
    """Tune the workloads of ``mod`` that the database lacks at this budget, and merge the new records.

    Each fused PrimFunc is a task (workload). ``trials`` is split over the tasks by FLOPs, or when it
    is large enough by measured latency (``plan_guided``); only the misses are measured
    (see ``autotune.tuning``), so repeating a tuning measures nothing.

    Args:
        mod: the Relax module after legalization and fusion, as ``compile_artifact`` lowers it.
        profile: the device: its runner plug-in measures (``Runner.metaschedule_runner``), its
            ``compiler`` builds.
        db_dir: the tuning database directory (created if missing).
        trials: MetaSchedule trials for the whole model (0: only count hits).
        lock: the run's quiet lock, held exclusively while tuning measures on this machine
            (``Runner.tunes_in_place``), else shared; the caller must not hold it.
        seed: seeds the search.

    Raises:
        CandidateFailed: stage ``tune``, when TVM cannot extract, tune or record the tasks.
        UserError: the database was made for another target.
    """
    t0 = time.perf_counter()
    quiet, db = lock or QuietLock(None), TuningDatabase(db_dir)
    quiet_waited0 = quiet.waited_s
    tasks, workloads = extract_workloads(mod, target)
    measured = 0
    with db.reading():
        plan = _ledger_plan(workloads, trials, db, target)
    if plan is None or plan.todo:  # hits alone never wait for another tuner
        with db.tuning():
            with db.reading():  # the tuner that held the lock may have tuned these workloads
                plan = _ledger_plan(workloads, trials, db, target)
                tuned = db.tuned_trials(str(target))
            if plan is None or plan.todo:
                in_place = RUNNERS.get(profile.runner.kind).tunes_in_place(profile)
                with quiet.exclusive() if in_place else quiet.shared():
                    plan, measured = _measure(plan, tasks, workloads, trials, tuned, db, target, seed, profile)
    with db.reading():
        records = db.record_count()
    report = TuneReport(
        tasks=len(workloads),
        hits=plan.hits,
        misses=plan.misses,
        trials=measured,
        tune_s=time.perf_counter() - t0 - (quiet.waited_s - quiet_waited0) - db.waited_s,
        records=records,
    )
    log.debug("tuned %s", report)
    return report


def apply_database(fused: tvm.IRModule, target: tvm.target.Target, db: TuningDatabase) -> tvm.IRModule:
    """Apply the database's best schedules to the fused PrimFuncs of ``fused`` (unchanged without records).

    Raises:
        CandidateFailed: stage ``tune``: a schedule from the database does not apply.
    """
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    try:
        with db.reading():
            database = None
            if db.record_file.exists():
                stub_tensor_intrin(target)
                importlib.import_module("tvm.s_tir.tensor_intrin")  # schedules may tensorize with its intrinsics
                database = ms.database.JSONDatabase(work_dir=str(db.directory), allow_missing=False)
        if database is not None:
            with target, database:
                applied = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)
            fused = _mark_scheduled(fused, applied)
    except Exception as err:  # TVMError: a schedule from the database does not apply
        raise CandidateFailed("tune", describe(err)) from err
    return fused


def _mark_scheduled(before: tvm.IRModule, after: tvm.IRModule) -> tvm.IRModule:
    """``after`` with each PrimFunc the database replaced marked ``tir.is_scheduled`` (so default
    schedules leave the tuned ones alone)."""
    import tvm
    from tvm_ffi import structural_equal

    out = after.clone()
    for gv, func in after.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc) and not structural_equal(func, before[gv]):
            out.update_func(gv, func.with_attr("tir.is_scheduled", True))
    return out
