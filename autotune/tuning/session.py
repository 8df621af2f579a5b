"""One tuning's MetaSchedule session: a staging database seeded from the shared one, the builder and
the runner (from the profile's runner plug-in), and the merge of what was measured."""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.config.device_profile import DeviceProfile
from autotune.measure import RUNNERS
from autotune.tuning import pools
from autotune.tuning.database import TuningDatabase
from autotune.tuning.intrin import stub_tables, unused_intrin_tables
from autotune.tuning.plan import TRIALS_PER_ITER

if TYPE_CHECKING:
    import tvm
    from tvm.s_tir import meta_schedule as ms

__all__ = ["Session", "rebind"]

log = logging.getLogger(__name__)


def _workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _export_with(compiler: str, mod: Any) -> str:
    """MetaSchedule builder export: the built module as a shared library made by ``compiler``."""
    import tempfile

    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="autotune-ms-"), "tvm_tmp_mod.so")
    mod.export_library(path, fcompile=cc.cross_compiler(compiler))
    return path


def _cost_model() -> str:
    try:
        importlib.import_module("xgboost")
    except ImportError:
        return "random"
    return "xgb"


class Session:
    """One tuning's MetaSchedule state: a staging database, the builder and the runner (kept for the
    next session of the process, ``autotune.tuning.pools``).

    The staging database starts with the shared records of the tasks, so a top-up continues from what
    a smaller budget found; ``merge`` appends what was measured to the shared database. Each ``tune``
    call may run several times (stages); tasks missing the same number of trials are tuned in one
    MetaSchedule call (its cap on trials per task is one number for all tasks of a call). The search
    population is 16 per trial to measure (at most MetaSchedule's default 512): the default costs ~20 s
    of search per round on a small CPU, more than the 8 measurements it picks.

    Args:
        tasks: workload key → extracted task, for every workload this tuning may measure.
        profile: where candidates are built (its cross ``compiler``) and measured (the MetaSchedule
            runner of its ``runner`` plug-in, ``Runner.metaschedule_runner``).
    """

    def __init__(
        self,
        tasks: dict[str, Any],
        staging: str,
        *,
        target: tvm.target.Target,
        db: TuningDatabase,
        seed: int,
        profile: DeviceProfile,
    ) -> None:
        from tvm.s_tir import meta_schedule as ms

        self.tasks, self.staging, self.target, self.db, self.seed = tasks, staging, target, db, seed
        self.threads = _workers()
        self.calls = 0
        compiler = profile.compiler
        tables = unused_intrin_tables(target)
        self.builder = pools.shared(
            "builder",
            (self.threads, tables, compiler),
            lambda: pools.pooled_builder(
                max_workers=self.threads,
                timeout_sec=60,
                initializer=functools.partial(stub_tables, tables),
                **({"f_export": functools.partial(_export_with, compiler)} if compiler else {}),
            ),
        )
        runner = RUNNERS.get(profile.runner.kind)
        self.runner = pools.shared("runner", repr(profile), lambda: runner.metaschedule_runner(profile))
        with db.reading():
            self.shared = ms.database.JSONDatabase(work_dir=str(db.directory))
        self.private = ms.database.JSONDatabase(work_dir=staging)
        self.defaults: list[ms.database.TuningRecord] = []  # measured default schedules, merged apart
        for task in tasks.values():
            mod = task.dispatched[0]
            if self.shared.has_workload(mod):
                default = _default_trace(mod, target)
                for r in self.shared.get_top_k(self.shared.commit_workload(mod), 64):
                    if str(r.trace) != default:  # the search must not mutate it (its replay can fail)
                        self.private.commit_tuning_record(rebind(r, self.private.commit_workload(mod)))
        self.seeded_bytes = Path(staging, "database_tuning_record.json").stat().st_size

    def measure_defaults(self, keys: Sequence[str]) -> set[str]:
        """Measure each workload's default schedule (``autotune.tuning.default``); ``merge`` keeps it
        as a tuning record, so the database's best is never worse than the default. MetaSchedule's
        search does not start from it: mutating its trace (decisions set by our rule, padding at the
        root) can fail to replay (``old_outputs.size() == new_outputs.size()``). Returns the keys
        measured without error."""
        from tvm.s_tir import meta_schedule as ms

        from autotune.tuning.default import default_schedule

        schedules = []
        for k in keys:
            mod = self.tasks[k].dispatched[0]
            try:
                sch = default_schedule(mod, self.target)
            except Exception as err:  # TVMError: the rule does not apply; tuning starts without it
                log.debug("no default schedule to measure for %s: %s", k, str(err).splitlines()[0])
                continue
            if sch is not None:
                schedules.append((k, mod, sch))
        if not schedules:
            return set()
        built = self.builder.build([ms.builder.BuilderInput(sch.mod, self.target) for _, _, sch in schedules])
        runnable, inputs = [], []
        for (k, mod, sch), b in zip(schedules, built, strict=True):
            if b.error_msg is None:
                args = ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])
                runnable.append((k, mod, sch, args))
                inputs.append(ms.runner.RunnerInput(b.artifact_path, "cpu", args))  # llvm targets only
        ok = set()
        try:
            for (k, mod, sch, args), future in zip(runnable, self.runner.run(inputs), strict=True):
                result = future.result()
                if result.error_msg is None and result.run_secs:
                    workload = ms.database.Workload(mod)
                    record = ms.database.TuningRecord(sch.trace, workload, result.run_secs, self.target, args)
                    self.defaults.append(record)
                    ok.add(k)
        finally:  # the built libraries (MetaSchedule's task scheduler removes its own; these are ours)
            for b in built:
                if b.artifact_path:
                    ms.utils.remove_build_dir(b.artifact_path)
        return ok

    def tune(self, todo: dict[str, int]) -> None:
        """Measure ``todo[key]`` more trials of each workload."""
        from tvm.s_tir import meta_schedule as ms

        logger = logging.getLogger("tvm.s_tir.meta_schedule.autotune")  # MetaSchedule's namespace: quiet
        for n in sorted(set(todo.values())):
            keys = [k for k, m in todo.items() if m == n and m > 0]
            if not keys:
                continue
            self.calls += 1
            seeds = ms.utils.fork_seed(self.seed + 7919 * self.calls, len(keys))
            group = [
                ms.TuneContext(
                    mod=self.tasks[k].dispatched[0],
                    target=self.target,
                    space_generator="post-order-apply",
                    search_strategy=ms.search_strategy.EvolutionarySearch(population_size=min(512, 16 * n)),
                    task_name=self.tasks[k].task_name,
                    logger=logger,
                    rand_state=rand_state,
                    num_threads=self.threads,
                ).clone()
                for k, rand_state in zip(keys, seeds, strict=True)
            ]
            ms.tune.tune_tasks(
                tasks=group,
                task_weights=[1.0] * len(group),
                work_dir=self.staging,
                max_trials_global=n * len(group),
                max_trials_per_task=n,
                num_trials_per_iter=TRIALS_PER_ITER,
                builder=self.builder,
                runner=self.runner,
                database=self.private,
                cost_model=_cost_model(),
                task_scheduler="round-robin",
            )

    def latency_s(self, key: str) -> float | None:
        """The best measured seconds per call of a workload's schedules so far (None: no valid one)."""
        mod = self.tasks[key].dispatched[0]
        if not self.private.has_workload(mod):
            return None
        best = self.private.get_top_k(self.private.commit_workload(mod), 1)
        return sum(float(x) for x in best[0].run_secs) / len(best[0].run_secs) if best else None

    def merge(self) -> tuple[int, set[str]]:
        """Append the new records to the shared database.

        Returns:
            The number of records measured, and the keys of the workloads that now have a valid record.
        """
        from tvm.s_tir import meta_schedule as ms

        staged = Path(self.staging, "database_tuning_record.json")
        new = staged.with_name("new_records.json")
        with staged.open("rb") as f:
            f.seek(self.seeded_bytes)
            new.write_bytes(f.read())
        records = ms.database.JSONDatabase(
            path_workload=str(staged.with_name("database_workload.json")), path_tuning_record=str(new)
        ).get_all_tuning_records()
        records = [*records, *self.defaults]
        shared = self.shared
        with self.db.writing():
            for r in records:
                shared.commit_tuning_record(rebind(r, shared.commit_workload(r.workload.mod)))
        valid = {
            k
            for k, task in self.tasks.items()
            if shared.has_workload(mod := task.dispatched[0]) and shared.get_top_k(shared.commit_workload(mod), 1)
        }
        return len(records), valid


def _default_trace(mod: tvm.IRModule, target: tvm.target.Target) -> str | None:
    """The text of the default schedule's trace of a workload (to tell its record apart), or None."""
    from autotune.tuning.default import default_schedule

    try:
        sch = default_schedule(mod, target)
    except Exception:  # TVMError: the rule does not apply
        return None
    return None if sch is None else str(sch.trace)


def rebind(record: ms.database.TuningRecord, workload: ms.database.Workload) -> ms.database.TuningRecord:
    """The same measured schedule, attached to the workload of another database."""
    from tvm.s_tir.meta_schedule.database import TuningRecord

    return TuningRecord(record.trace, workload, record.run_secs, record.target, record.args_info)
