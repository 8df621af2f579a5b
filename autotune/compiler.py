"""``compile_artifact``: an exported program + device profile → a TVM shared library on disk.

With a ``TuningRequest``, ``tune`` first runs MetaSchedule on the model's fused PrimFuncs (the workloads
the tuning database lacks at the requested budget) and the best schedules of the database are applied
before lowering. The database, its ledger and locks are described in ``autotune.tuning``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import sys
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.config.device_profile import DeviceProfile, Runner
from autotune.errors import CandidateFailed, UserError
from autotune.lowering import dtype_census, to_fp16, to_int8
from autotune.quiet import QuietLock
from autotune.records import CompiledArtifact
from autotune.tuning import (
    GUIDED_STAGES,
    TRIALS_PER_ITER,
    TuneReport,
    TuningDatabase,
    TuningPlan,
    TuningRequest,
    Workload,
    guided,
    model_key,
    plan_guided,
    plan_tuning,
)

if TYPE_CHECKING:
    import tvm
    from torch.export import ExportedProgram
    from tvm.s_tir import meta_schedule as ms

__all__ = ["compile_artifact", "resolve_target", "target_json", "tune"]

log = logging.getLogger(__name__)

#: MetaSchedule's tensor-intrinsic tables that are not x86's (see ``_stub_tensor_intrin``).
_INTRIN_TABLES = ("cuda", "rocm", "hexagon", "metal", "arm_cpu", "riscv_cpu")


def target_json(profile: DeviceProfile) -> dict[str, Any]:
    """The profile's TVM target as a JSON dict; ``{host: true}`` becomes this CPU's LLVM target."""
    t = dict(profile.target)
    if t.pop("host", None) is True:
        import os

        import tvm

        cpu = str(tvm.get_global_func("target.llvm_get_system_cpu")())
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        t = {"kind": "llvm", "mcpu": cpu, "num-cores": cores, **t}
    return t


def resolve_target(profile: DeviceProfile, *, file: str | None = None) -> tvm.target.Target:
    """Build the TVM ``Target``.

    Raises:
        UserError: TVM rejects the target dict.
    """
    import tvm

    t = target_json(profile)
    try:
        return tvm.target.Target(t)
    except Exception as err:  # TVM raises ValueError / TVMError / InternalError for bad targets
        raise UserError(
            f"TVM rejects the target {json.dumps(t)}: {err}".splitlines()[0], file=file, key="target"
        ) from None


def _planned_bytes(mod: tvm.IRModule) -> int:
    """Sum the storage the VM allocates in ``main`` after static memory planning."""
    from tvm import relax

    total = 0

    def visit(expr: Any) -> None:
        nonlocal total
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm_ir_op()):
            name = expr.op.name
            if name in ("relax.memory.alloc_storage", "relax.vm.alloc_storage") and expr.args:
                shape = expr.args[0]
                if isinstance(shape, relax.ShapeExpr):
                    total += int(shape.values[0])
            elif name == "relax.builtin.alloc_tensor" and expr.args:
                shape, dtype = expr.args[0], expr.args[1]
                if isinstance(shape, relax.ShapeExpr):
                    n = 1
                    for v in shape.values:
                        n *= int(v)
                    total += n * _dtype_bytes(str(dtype.value) if hasattr(dtype, "value") else "float32")

    relax.analysis.post_order_visit(mod["main"], visit)
    return total


def tvm_ir_op() -> type:
    import tvm

    return tvm.ir.Op


def _dtype_bytes(dtype: str) -> int:
    digits = "".join(c for c in dtype if c.isdigit())
    return max(1, int(digits or 32) // 8)


def _const_bytes(mod: tvm.IRModule) -> int:
    import tvm
    from tvm import relax

    total = 0

    def visit(expr: Any) -> None:
        nonlocal total
        if isinstance(expr, tvm.ir.expr.GenericConst):
            total += int(expr.value.numpy().nbytes)

    relax.analysis.post_order_visit(mod["main"], visit)
    return total


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]


def _stub_tensor_intrin(names: tuple[str, ...]) -> None:
    """Register empty modules for the tensor-intrinsic tables ``names`` that are not imported yet.

    MetaSchedule imports ``tvm.s_tir.tensor_intrin`` (every table; CUDA's alone takes ~45 s here) in
    this process and in each builder worker, whose pool is restarted for every batch. A target never
    uses the tables of other devices. This changes ``sys.modules`` for the rest of the process.
    """
    for name in names:
        full = f"tvm.s_tir.tensor_intrin.{name}"
        sys.modules.setdefault(full, types.ModuleType(full))


def _workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _make_runner(runner: Runner | None = None) -> ms.runner.Runner:
    """The MetaSchedule runner that measures candidates: this machine, or the profile's RPC device
    (each build uploaded there and timed by the device's own evaluator)."""
    from tvm.s_tir import meta_schedule as ms

    # each candidate: 3 repeats of at least 30 ms (kernels here take µs to ms); MetaSchedule ranks by the mean
    config = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=30, enable_cpu_cache_flush=False)
    if runner is None or runner.kind == "local":
        return ms.runner.LocalRunner(timeout_sec=30, evaluator_config=config)
    host, port = runner.tracker_address
    rpc = ms.runner.RPCConfig(
        tracker_host=host,
        tracker_port=port,
        tracker_key=runner.key,
        session_priority=runner.priority,
        session_timeout_sec=runner.session_timeout_s,
    )
    return ms.runner.RPCRunner(rpc_config=rpc, evaluator_config=config, max_workers=1)


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


class _Session:
    """One tuning's MetaSchedule state: a staging database, the builder and the runner.

    The staging database starts with the shared records of the tasks, so a top-up continues from what
    a smaller budget found; ``merge`` appends what was measured to the shared database. Each ``tune``
    call may run several times (stages); tasks missing the same number of trials are tuned in one
    MetaSchedule call (its cap on trials per task is one number for all tasks of a call). The search
    population is 16 per trial to measure (at most MetaSchedule's default 512): the default costs ~20 s
    of search per round on a small CPU, more than the 8 measurements it picks.

    Args:
        tasks: workload key → extracted task, for every workload this tuning may measure.
        profile: where candidates are built (its cross ``compiler``) and measured (its ``runner``);
            None: this machine.
    """

    def __init__(
        self,
        tasks: dict[str, Any],
        staging: str,
        *,
        target: tvm.target.Target,
        db: TuningDatabase,
        seed: int,
        profile: DeviceProfile | None = None,
    ) -> None:
        from tvm.s_tir import meta_schedule as ms

        self.tasks, self.staging, self.target, self.db, self.seed = tasks, staging, target, db, seed
        self.threads = _workers()
        self.calls = 0
        compiler = profile.compiler if profile is not None else None
        self.builder = ms.builder.LocalBuilder(
            max_workers=self.threads,
            timeout_sec=60,
            initializer=functools.partial(_stub_tensor_intrin, _unused_intrin_tables(target)),
            **({"f_export": functools.partial(_export_with, compiler)} if compiler else {}),
        )
        self.runner = _make_runner(profile.runner if profile is not None else None)
        with db.reading():
            self.shared = ms.database.JSONDatabase(work_dir=str(db.directory))
        self.private = ms.database.JSONDatabase(work_dir=staging)
        for task in tasks.values():
            mod = task.dispatched[0]
            if self.shared.has_workload(mod):
                for r in self.shared.get_top_k(self.shared.commit_workload(mod), 64):
                    self.private.commit_tuning_record(_rebind(r, self.private.commit_workload(mod)))
        self.seeded_bytes = Path(staging, "database_tuning_record.json").stat().st_size

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
        shared = self.shared
        with self.db.writing():
            for r in records:
                shared.commit_tuning_record(_rebind(r, shared.commit_workload(r.workload.mod)))
        valid = {
            k
            for k, task in self.tasks.items()
            if shared.has_workload(mod := task.dispatched[0]) and shared.get_top_k(shared.commit_workload(mod), 1)
        }
        return len(records), valid


def _rebind(record: ms.database.TuningRecord, workload: ms.database.Workload) -> ms.database.TuningRecord:
    """The same measured schedule, attached to the workload of another database."""
    from tvm.s_tir.meta_schedule.database import TuningRecord

    return TuningRecord(record.trace, workload, record.run_secs, record.target, record.args_info)


def _unused_intrin_tables(target: tvm.target.Target) -> tuple[str, ...]:
    keys = set(target.keys)
    return tuple(name for name in _INTRIN_TABLES if name not in keys)


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


def _tune_guided(session: _Session, workloads: list[Workload], trials: int, tuned: dict[str, int]) -> dict[str, int]:
    """A latency-guided tuning (``autotune.tuning.plan_guided``): a first round for every workload
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
    profile: DeviceProfile | None,
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
            session = _Session({k: by_key[k] for k in keys}, staging, target=target, db=db, seed=seed, profile=profile)
            if plan is not None:
                session.tune(plan.todo)
            else:
                plan = TuningPlan.from_budgets(_tune_guided(session, workloads, trials, tuned), tuned)
            measured, valid = session.merge()
        except Exception as err:  # TVMError, builder/runner pool failures: this candidate's tuning
            raise CandidateFailed("tune", _reason(err)) from err
    names = {w.key: w.name for w in workloads}
    guided_plan = (model_key(workloads), trials, plan.budgets) if guided(workloads, trials) else None
    with db.writing():
        db.credit(str(target), {k: (names[k], plan.budgets[k]) for k in plan.todo if k in valid}, plan=guided_plan)
    if missing := set(plan.todo) - valid:
        log.warning("tuning left %d of %d workloads without a valid schedule", len(missing), len(plan.todo))
    return plan, measured


def tune(
    mod: tvm.IRModule,
    *,
    target: tvm.target.Target,
    db_dir: str | os.PathLike[str],
    trials: int,
    lock: QuietLock | None = None,
    seed: int = 0,
    profile: DeviceProfile | None = None,
) -> TuneReport:
    """Tune the workloads of ``mod`` that the database lacks at this budget, and merge the new records.

    Each fused PrimFunc is a task (workload). ``trials`` is split over the tasks by FLOPs, or when it
    is large enough by measured latency (``autotune.tuning.plan_guided``); only the misses are measured
    (see ``autotune.tuning``), so repeating a tuning measures nothing.

    Args:
        mod: the Relax module after legalization and fusion, as ``compile_artifact`` lowers it.
        db_dir: the tuning database directory (created if missing).
        trials: MetaSchedule trials for the whole model (0: only count hits).
        lock: the run's quiet lock, held exclusively while tuning measures on this machine (shared
            when an RPC device that is not emulated measures); the caller must not hold it.
        seed: seeds the search.
        profile: the device: its ``runner`` measures (``rpc``: MetaSchedule's RPC runner through the
            profile's tracker), its ``compiler`` builds; None: this machine.

    Raises:
        CandidateFailed: stage ``tune``, when TVM cannot extract, tune or record the tasks.
        UserError: the database was made for another target.
    """
    t0 = time.perf_counter()
    _stub_tensor_intrin(_unused_intrin_tables(target))
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.analysis import estimate_tir_flops
    from tvm_ffi import structural_hash

    quiet, db = lock or QuietLock(None), TuningDatabase(db_dir)
    quiet_waited0 = quiet.waited_s
    try:
        tasks = list(ms.relax_integration.extract_tasks(mod, target))
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
        raise CandidateFailed("tune", _reason(err)) from err
    measured = 0
    with db.reading():
        plan = _ledger_plan(workloads, trials, db, target)
    if plan is None or plan.todo:  # hits alone never wait for another tuner
        with db.tuning():
            with db.reading():  # the tuner that held the lock may have tuned these workloads
                plan = _ledger_plan(workloads, trials, db, target)
                tuned = db.tuned_trials(str(target))
            if plan is None or plan.todo:
                remote = profile is not None and profile.runner.kind == "rpc" and not profile.runner.emulated
                with quiet.shared() if remote else quiet.exclusive():
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


def _lower_tuned(fused: tvm.IRModule, target: tvm.target.Target, db: TuningDatabase) -> tvm.IRModule:
    """Apply the database's best schedules to the fused PrimFuncs, then finish the CPU pipeline.

    Raises:
        CandidateFailed: a schedule does not apply (``tune``), or lowering fails (``compile``).
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir import meta_schedule as ms

    try:
        with db.reading():
            database = None
            if db.record_file.exists():
                _stub_tensor_intrin(_unused_intrin_tables(target))
                importlib.import_module("tvm.s_tir.tensor_intrin")  # schedules may tensorize with its intrinsics
                database = ms.database.JSONDatabase(work_dir=str(db.directory), allow_missing=False)
        if database is not None:
            with target, database:
                fused = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)
    except Exception as err:  # TVMError: a schedule from the database does not apply
        raise CandidateFailed("tune", _reason(err)) from err
    try:
        with target:
            return tvm.transform.Sequential(cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))(fused)
    except Exception as err:  # TVMError and friends: this candidate cannot be lowered
        raise CandidateFailed("compile", _reason(err)) from err


@contextlib.contextmanager
def _shared(lock: QuietLock | None) -> Iterator[None]:
    if lock is None:
        yield
        return
    with lock.shared():
        yield


def compile_artifact(
    program: ExportedProgram,
    *,
    profile: DeviceProfile,
    out_dir: str | Path,
    input_shape: tuple[int, ...],
    tuning: TuningRequest | None = None,
    precision: str = "fp32",
    weight_granularity: str = "tensor",
    lock: QuietLock | None = None,
) -> CompiledArtifact:
    """Import into Relax, compile for the profile's target and export ``model.so``.

    ``precision`` is the deployment precision: ``fp32``; ``fp16`` (mixed precision, fp32 accumulation);
    or ``int8``, where every convolution and matmul fed by an 8-bit symmetric activation quantizer and
    holding 8-bit weights (``weight_granularity`` scales, see ``autotune.lowering``) becomes an
    int8 × int8 → int32 operator. ``int8_ops`` / ``compute_ops`` count them in the compiled module.

    ``peak_mem_bytes`` is read from TVM's static memory plan: the weights plus every storage
    block ``main`` allocates (``peak_mem_source = 'tvm_memory_plan'``).

    Args:
        tuning: tune with MetaSchedule first and apply the database's best schedules (see ``tune``).
            With a request, this function takes ``tuning.lock`` itself (shared while compiling,
            exclusive while tuning): call it without holding that lock. ``compile_s`` then excludes
            ``tune_s`` and lock waits.
        lock: without ``tuning``, the quiet lock to hold shared for each phase (import, lowering,
            code generation, linking) rather than for the whole compile, so a trial waiting to time
            a candidate waits for one phase at most. Call it without holding that lock.

    Raises:
        CandidateFailed: an operator cannot be imported (``import``), TVM fails to compile
            (``compile``) or to tune (``tune``).
        UserError: the tuning database was made for another target.
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.frontend.torch import from_exported_program

    target = resolve_target(profile)
    if tuning is not None and target.kind.name != "llvm":
        raise UserError(f"tuning supports llvm (CPU) targets, not {target.kind.name}", key="tuning")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = tuning.lock if tuning else lock
    report = None
    with _shared(lock):  # each phase holds the lock on its own, so a waiting timer gets in between
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                mod = from_exported_program(program, keep_params_as_input=False)
        except Exception as err:  # unsupported ops raise assorted errors inside the importer
            raise CandidateFailed("import", _reason(err)) from err
        t1 = time.perf_counter()
    with _shared(lock):
        t2 = time.perf_counter()
        try:
            mod = relax.transform.FoldBatchnormToConv2D()(mod)  # plug-in models keep their BN
            mod = relax.transform.DecomposeOpsForInference()(mod)
            mod = _set_precision(mod, precision, weight_granularity)
            census = dtype_census(mod)
            if tuning is None:
                lowered = relax.get_default_pipeline(target)(mod)
            else:  # the first half of the default pipeline: legalized and fused, the PrimFuncs are the tasks
                with target:
                    passes = cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
                    fused = tvm.transform.Sequential(passes)(mod)
        except CandidateFailed:
            raise
        except Exception as err:  # TVMError and friends: this candidate cannot be lowered
            raise CandidateFailed("compile", _reason(err)) from err
        compile_s = time.perf_counter() - t2
    if tuning is not None:
        report = tune(
            fused,
            target=target,
            db_dir=tuning.db_dir,
            trials=tuning.trials,
            lock=lock,
            seed=tuning.seed,
            profile=profile,
        )
        with _shared(lock):
            t2 = time.perf_counter()
            lowered = _lower_tuned(fused, target, TuningDatabase(tuning.db_dir))
            compile_s += time.perf_counter() - t2
    with _shared(lock):
        t3 = time.perf_counter()
        weights = _const_bytes(mod)
        planned = _planned_bytes(lowered)
        try:
            ex = tvm.compile(lowered, target=target, relax_pipeline=None)
        except Exception as err:  # TVMError and friends: this candidate cannot be compiled
            raise CandidateFailed("compile", _reason(err)) from err
        compile_s += time.perf_counter() - t3
    with _shared(lock):
        t4 = time.perf_counter()
        path = out / "model.so"
        try:
            if profile.compiler:
                from tvm.support import cc

                ex.export_library(str(path), fcompile=cc.cross_compiler(profile.compiler))
            else:
                ex.export_library(str(path))
        except Exception as err:  # the C compiler or linker failed
            raise CandidateFailed("compile", _reason(err)) from err
        compile_s += time.perf_counter() - t4
    return CompiledArtifact(
        path=str(path),
        target=json.dumps(target_json(profile), sort_keys=True),
        input_shape=tuple(input_shape),
        artifact_bytes=path.stat().st_size,
        weights_bytes=weights,
        peak_mem_bytes=weights + planned,
        peak_mem_source="tvm_memory_plan",
        export_s=0.0,
        import_s=t1 - t0,
        compile_s=compile_s,
        tune_s=report.tune_s if report else 0.0,
        tuned_trials=report.trials if report else 0,
        tune_db_hits=report.hits if report else 0,
        tune_db_misses=report.misses if report else 0,
        deploy_precision=precision,
        int8_ops=census.int8,
        compute_ops=census.total,
    )


def _set_precision(mod: tvm.IRModule, precision: str, granularity: str) -> tvm.IRModule:
    from tvm import relax

    if precision == "fp16":
        return relax.transform.FoldConstant()(to_fp16(mod))  # weights stored as fp16 constants
    if precision == "int8":
        mod, n = to_int8(mod, granularity=granularity)
        if n == 0:
            raise CandidateFailed("compile", "int8: no convolution or matmul has 8-bit quantized inputs and weights")
        return mod
    if precision != "fp32":
        raise CandidateFailed("compile", f"unknown deployment precision {precision!r}")
    return mod
