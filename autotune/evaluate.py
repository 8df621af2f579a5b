"""One candidate end to end: the stage sequence and its ``CandidateFailed`` boundary.

``TrialConfig → (screen) → TrainedModel → CompressedModel → CompiledArtifact → NumericsReport +
Measurement (per device) → LeaderboardRow``. Each stage makes the next record; a ``CandidateFailed``
from any stage becomes a ``failed`` row with its stage and reason, anything else is a bug and
propagates (the search's sandbox records it with its traceback).
"""

from __future__ import annotations

import copy
import functools
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from autotune.backends import BACKENDS, NOT_ON_DEVICE, Job
from autotune.backends.base import NotOnDevice
from autotune.compress.base import CompressContext
from autotune.compress.pipeline import changes_structure, compress, plan_compression, prepare
from autotune.constraints import violations
from autotune.curves import Curves
from autotune.deploy import export_and_compile, on_other_device, time_fp32, tuning_request
from autotune.errors import CandidateFailed
from autotune.leaderboard.row import BackendOutcome, DeviceResult, LeaderboardRow, now
from autotune.quiet import QuietLock
from autotune.records import TrainedModel, TrialConfig
from autotune.reference import install_pairing, measure_reference, reference_model
from autotune.screening import Screening, predict, prediction_report, record, screen
from autotune.task import Task

__all__ = ["CostHook", "EpochHook", "evaluate"]

log = logging.getLogger(__name__)

#: Called after each training epoch with (epoch, val_accuracy, val_loss).
EpochHook = Callable[[int, float, float], None]
#: Called once before training with the candidate's cost: ``macs`` and, when it was screened,
#: ``latency_pred_ms`` (the pruner judges a trial's epochs against no-slower trials).
CostHook = Callable[[dict[str, float]], None]


def evaluate(
    config: TrialConfig,
    task: Task,
    *,
    run: str = "",
    work_dir: str | Path,
    lock: QuietLock | None = None,
    on_epoch: EpochHook | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_cost: CostHook | None = None,
    tuning_db: str | Path | None = None,
    cache_dir: str | Path | None = None,
    screening: Screening | None = None,
    reference: bool = False,
    store_dir: str | Path | None = None,
    node: str | None = None,
    curves_dir: str | Path | None = None,
) -> LeaderboardRow:
    """Build, (screen,) train, compress, compile, verify and measure one candidate: its row.

    A candidate whose deployed structure is fixed before training is screened first (``screening``,
    see ``autotune.screening``); a screened-out candidate is never trained. A compressed candidate is
    checked against its compressed PyTorch model, and the same architecture uncompressed is compiled
    and timed the same way for ``speedup_vs_uncompressed``.

    Args:
        work_dir: where the candidate's files go (``model.so``, ``weights.pt``, ``model.pt``).
        lock: the run's quiet-measurement lock (shared while working, exclusive while timing).
        on_epoch: called after every training epoch (Ray Tune reports; ASHA may stop the trial).
        on_stage: called with the stage's name as each stage starts (progress, failure reports).
        on_cost: called once before training with the candidate's cost (see ``CostHook``).
        tuning_db: the profile's MetaSchedule database; with ``tuning.trials_per_candidate > 0`` the
            candidate is tuned into it (known workloads are reused, not re-measured).
        cache_dir: files every trial of the run shares (the distillation teacher, the drift
            reference); default ``<work_dir>/../../cache``.
        reference: also re-time the drift reference network (``reference_latency_ms``).
        store_dir: where the profile's shared measurements are kept (the results directory's
            ``.predictor/``): with ``measure.paired`` the reference's calibration; default the cache.
        node: the cluster node the trial ran on (the ``node`` column).
        curves_dir: where the training curves go (``autotune.curves``; the run's
            ``tensorboard/<trial_id>``); None: not written.
    """
    import torch

    lock = lock or QuietLock(None)
    waited_at_start, started = lock.waited_s, now()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else work.parent.parent / "cache"
    records: dict[str, Any] = {"seconds": {}}
    stage = ["build"]

    def enter(name: str) -> None:
        stage[0] = name
        if on_stage:
            on_stage(name)

    if task.profile.measure.paired:
        enter("pairing the reference network")
        install_pairing(task, cache, lock, store_dir if store_dir is not None else cache)
    curves = Curves(curves_dir)
    try:
        status, error = _stages(config, task, records, work=work, cache=cache, lock=lock, tuning_db=tuning_db,
                                screening=screening, on_epoch=on_epoch, enter=enter, run=run,
                                on_curve=curves.add, on_cost=on_cost)  # fmt: skip
    except CandidateFailed as err:
        log.info("trial %s failed in %s: %s", config.trial_id, err.stage, err.reason)
        status, error = "failed", str(err)
    except (MemoryError, torch.OutOfMemoryError) as err:
        status, error = "failed", f"{stage[0]}: out of memory: {err}"
    finally:
        curves.close()
    if reference:
        enter("re-timing the reference model (drift check)")
        t0, waited0 = time.perf_counter(), lock.waited_s
        records["reference_latency_ms"] = measure_reference(task, cache, lock)
        records["seconds"]["reference_s"] = time.perf_counter() - t0 - (lock.waited_s - waited0)
    records["seconds"]["quiet_wait_s"] = lock.waited_s - waited_at_start
    profile = task.profile
    peak = profile.peak.fp32_gflops if profile.peak else None
    row = LeaderboardRow.from_records(config, run=run, device=profile.name, started_at=started, status=status,
                                      error=error, node=node, peak_fp32_gflops=peak, **records)  # fmt: skip
    return row.judged(violations(row, task.space, profile)) if status == "ok" else row


def _stages(
    config: TrialConfig,
    task: Task,
    records: dict[str, Any],
    *,
    work: Path,
    cache: Path,
    lock: QuietLock,
    tuning_db: str | Path | None,
    screening: Screening | None,
    on_epoch: EpochHook | None,
    enter: Callable[[str], None],
    run: str,
    on_curve: Callable[[dict[str, float]], None] | None = None,
    on_cost: CostHook | None = None,
) -> tuple[str, str | None]:
    """The stage sequence; each stage's record goes into ``records`` (``LeaderboardRow.from_records``'s
    keywords) as it is made. Returns (status, error) unless a stage raises ``CandidateFailed``."""
    import torch

    from autotune.exporter import export_program
    from autotune.measure import RUNNERS
    from autotune.train import train

    profile, data, seconds = task.profile, task.data, records["seconds"]
    enter("build")
    t0 = time.perf_counter()
    model, records["structure"] = task.build(config)
    seconds["build_s"] = time.perf_counter() - t0
    plan = plan_compression(config.compress)
    ctx = CompressContext(space=task.space, data=data, train=config.train, seed=config.seed, cache_dir=cache,
                          lock=lock)  # fmt: skip
    request = tuning_request(tuning_db, profile.tuning.trials_per_candidate, lock, config.seed)
    features = None
    first = profile.backends[0]
    if screening is not None and not changes_structure(plan):
        stages = ("constraint-first: compile untrained", "constraint-first: measure untrained")
        probe = functools.partial(_time_only, first, model, profile, data.x_test, out_dir=work / "untrained",
                                  lock=lock, request=request, on_stage=enter, stages=stages)  # fmt: skip
        ident = {"run": run, "trial_id": config.trial_id}
        records["screen"], features = screen(model, records["structure"], task, screening, probe=probe,
                                             identity=ident, lock=lock)  # fmt: skip
        if records["screen"].screened:
            records["violations"] = records["screen"].violations
            return "infeasible", None
    if plan:
        enter("compress: prepare")
        ctx, records["pass_columns"] = prepare(plan, ctx)  # distillation: the run's teacher, trained once
    enter("train")
    if on_cost is not None:
        cost = {"macs": float(records["structure"]["macs"])}
        if "screen" in records and records["screen"].latency_pred_ms is not None:
            cost["latency_pred_ms"] = float(records["screen"].latency_pred_ms)
        on_cost(cost)
    if config.train is not None:
        trained = train(model, data, config.train, seed=config.seed, lock=lock, on_epoch=on_epoch, loss=ctx.loss,
                        on_curve=on_curve)  # fmt: skip
    else:
        trained = TrainedModel(model=model, val_accuracy=None, accuracy=None, epochs=0, train_s=0.0)
    records["trained"] = trained
    torch.save(trained.model.state_dict(), work / "weights.pt")
    if plan:
        enter("compress")
    built = (records["structure"]["macs"], records["structure"]["params"])
    compressed = records["compressed"] = compress(trained.model, plan, ctx, accuracy=trained.accuracy,
                                                  val_accuracy=trained.val_accuracy, counted=built)  # fmt: skip
    records["pass_columns"] = {**records.get("pass_columns", {}), **compressed.columns}
    if plan:
        torch.save(compressed.model, work / "model.pt")
    how = compressed.deployment
    enter("export")
    with lock.shared():
        program, exported, seconds["export_s"] = export_program(compressed.model, data.input_shape)
    if screening is not None and features is None:  # compressed: the deployed structure is known now
        features, pred = predict(screening, compressed.model, data.input_shape, how.precision, profile, lock,
                                 program=program)  # fmt: skip
        records["screen"] = prediction_report(pred)
    job = Job(model=exported, profile=profile, inputs=data.x_test, out_dir=work, lock=lock, deployment=how,
              program=program, request=request, on_stage=enter)  # fmt: skip
    main = records["main"] = BACKENDS.get(first).deploy(job if first == "tvm" else replace(job, out_dir=work / first))
    records["backend"] = first
    records["fingerprint"] = RUNNERS.get(profile.runner.kind).fingerprint(profile)
    measured = {"run": run, "trial_id": config.trial_id, "latency_ms": main.measurement.latency_ms,
                "timing": main.measurement.timing}  # fmt: skip
    if screening is not None and screening.table is not None and first == "tvm" and profile.runner.kind == "local":
        enter("kernel table")  # the candidate's kernels the table lacks are timed now
    record(screening, features, measured, artifact=main.artifact if first == "tvm" else None, profile=profile,
           lock=lock)  # fmt: skip
    records["backends"] = {}
    for name in profile.backends[1:]:
        enter(name)
        records["backends"][name] = _other_backend(name, replace(job, out_dir=work / name, request=None))
    records["others"] = {}
    for other in task.others:
        enter(f"on {other.name}")
        records["others"][other.name] = on_other_device(program, exported, other, data.x_test, lock=lock,
                                                        out_dir=work / f"@{other.name}", deployment=how)  # fmt: skip
    if compressed.compressed:
        enter("measure uncompressed")
        try:  # the twin is advisory: its failure leaves the speedup empty
            twin = _time_only(first, trained.model, profile, data.x_test, out_dir=work / "uncompressed", lock=lock,
                              request=request)  # fmt: skip
            records["uncompressed"] = twin.measurement
        except CandidateFailed as err:
            log.warning("the uncompressed model could not be timed: %s", err)
    return "ok", None


def warm_up(task: Task, lock: QuietLock) -> None:
    """Export and compile the reference network for the task's profile in this process.

    A process's first ``torch.export`` and first TVM import, fusion and compile initialise what they
    use on first call (lazily imported modules, operator registries: about 6-9 s on 2 Zen 3 cores
    against 1-2 s after). A search worker does it once, so every trial's forked child inherits it
    instead of paying it again. Holds ``lock`` shared, as a compile does. Best effort: what fails here
    fails in the trial, with its reason. Nothing is run and torch holds one thread meanwhile, so no
    thread pool starts before a fork; on a GPU target (no CUDA context may exist before a fork) or
    without the TVM backend only the export is warmed."""
    import torch

    from autotune.exporter import export_program

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # no OpenMP team may exist before a fork: the child's torch would hang on it
    try:
        shape = tuple(task.data.input_shape)
        model = reference_model(shape, task.data.num_classes)
        if task.profile.target.get("kind", "llvm") != "llvm" or "tvm" not in task.profile.backends:
            with lock.shared():
                export_program(model, shape)
            return
        with tempfile.TemporaryDirectory(prefix="autotune-warm-") as tmp:
            export_and_compile(model, task.profile, input_shape=shape, out_dir=Path(tmp), lock=lock)
    except Exception:  # noqa: BLE001 - the trial meets the same failure in its own stage
        log.debug("warming up the worker failed", exc_info=True)
    finally:
        torch.set_num_threads(threads)


def _other_backend(name: str, job: Job) -> BackendOutcome:
    """One of the profile's other backends on the candidate; its failure is its own, not the trial's."""
    try:
        return BackendOutcome(BACKENDS.get(name).deploy(job))
    except NotOnDevice as err:
        return BackendOutcome(None, NOT_ON_DEVICE, err.reason)
    except CandidateFailed as err:
        log.info("backend %s failed on the candidate: %s", name, err)
        return BackendOutcome(None, "failed", str(err))


def _time_only(
    backend: str, model: Any, profile: Any, inputs: Any, *, out_dir: Path, lock: QuietLock, request: Any = None,
    on_stage: Callable[[str], None] | None = None, stages: tuple[str, str] = ("compile", "measure"),
) -> DeviceResult:  # fmt: skip
    """Time a model without the numerics check with the profile's first backend (an untrained probe,
    an uncompressed twin)."""
    if backend == "tvm":
        return time_fp32(model, profile, inputs, out_dir=out_dir, lock=lock, request=request, on_stage=on_stage,
                         stages=stages)  # fmt: skip
    from autotune.models.layers import fold_batchnorm

    folded = copy.deepcopy(model).eval()
    fold_batchnorm(folded)
    job = Job(model=folded, profile=profile, inputs=inputs, out_dir=out_dir, lock=lock, check=False, on_stage=on_stage)
    return BACKENDS.get(backend).deploy(job)
