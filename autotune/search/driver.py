"""The search driver: start Ray, run (or resume) the Tuner, close the study, re-tune the finalists.

Ray Tune runs the trials (``trainable``), Optuna samples them (``adapter``), the callback writes
every finished, pruned or failed trial to the leaderboard as it ends. The Optuna study lives in
``<run>/study.db`` and Ray Tune's experiment state in ``<run>/tune``, so a resume continues both.
``launch.search`` (the API's ``search``) prepares the run directory and calls ``run_search``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import METRICS, TRAINED_METRICS, SearchSpace, metric_column
from autotune.errors import UserError, disk_full
from autotune.leaderboard import Leaderboard
from autotune.search.live import LiveReport
from autotune.search.progress import Progress, ProgressHook
from autotune.search.settings import RunConfig

__all__ = ["SearchRun", "run_search", "start_ray"]

log = logging.getLogger(__name__)

#: Set in the driver for the whole process (Tune reads them while it runs); a value the user set wins.
_DRIVER_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # no config box on stdout
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",  # reports carry different metrics (stages, epochs, the row)
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "0",
}


@dataclass(frozen=True)
class SearchRun:
    """One run of a search: where it goes, how it runs, and what it starts from.

    Args:
        name: the run's name (the rows' ``run``); its directory is ``run_dir``.
        address: a Ray cluster to join (None: start Ray in this process).
        resume: continue the run in ``run_dir`` (Tune's state, else the study).
        enqueue: parameter sets the study tries first.
        priors: an earlier run's finished trials (``autotune.warmstart``), added as observations.
        others: the other devices every candidate is also timed on.
    """

    name: str
    run_dir: Path
    config: RunConfig
    address: str | None = None
    resume: bool = False
    enqueue: tuple[Mapping[str, Any], ...] = ()
    priors: tuple[Mapping[str, Any], ...] = ()
    others: tuple[DeviceProfile, ...] = ()


def start_ray(address: str | None, profile: DeviceProfile) -> None:
    """Start the embedded Ray (or join the cluster at ``address``) with the workers' environment.

    Without ``address`` the Ray is always a new one of this run: Ray's own default would join a
    cluster named by ``RAY_ADDRESS`` or the last one ``ray start`` (or ``ray.cluster_utils``)
    started on this machine, and lose the run when that cluster stops.

    The one place the driver reads and writes ``os.environ``. A cluster's workers get the
    environment through Ray's ``runtime_env``. The embedded Ray's processes inherit it instead (set
    here only while Ray starts): a job ``runtime_env`` would keep Tune's trial actors off the
    workers Ray prestarts at ``init``, and cost each slot a fresh worker process (about 0.6 s per
    slot here, on the run's critical path).
    """
    import ray

    from autotune.task import worker_env

    environ = {**_DRIVER_ENV, **os.environ}  # read once; a value the user set wins
    os.environ.update({k: environ[k] for k in _DRIVER_ENV})
    if ray.is_initialized():
        return
    env = {**worker_env(profile), "OMP_NUM_THREADS": "1", "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}
    # plug-in modules ('my_task:load') are imported from the driver's working directory
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), environ.get("PYTHONPATH", "")) if p)
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UserError(
                f"cannot connect to the Ray cluster at {address!r}: {err}".splitlines()[0],
                key="--address",
                hint="start it with 'ray start --head' and set RAY_AUTH_MODE=token on every node and here",
            ) from None
        return
    os.environ.update(env)
    try:  # "local": a Ray of its own, never a cluster named by RAY_ADDRESS or started by 'ray start' here
        ray.init(address="local", num_cpus=None, include_dashboard=False, **kwargs)
    finally:
        for k in env:
            if k in environ:
                os.environ[k] = environ[k]
            else:
                os.environ.pop(k, None)


def _unknown_to_tune(tune_path: Path, rows: Sequence[Mapping[str, Any]]) -> int:
    """How many finished rows Tune's latest snapshot does not hold: a trial that started after it and
    finished before a kill. Restored, Tune would fill its budget without it, one trial too many."""
    states = sorted(tune_path.glob("experiment_state-*.json"))  # named by time: the last is the newest
    if not states:
        return 0
    text = states[-1].read_text(errors="replace")
    return sum(str(r.get("trial_id")) not in text for r in rows if r.get("trial_id"))


def run_search(
    space: SearchSpace,
    profile: DeviceProfile,
    run: SearchRun,
    *,
    on_progress: ProgressHook | None = None,
    ready: Callable[[], None] | None = None,
    finish: Callable[[], None] | None = None,
    update: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) a search and return the leaderboard rows.

    Args:
        ready: called once Ray is up, before any trial (the caller's pre-flight checks, which ran
            meanwhile); an exception from it ends the search.
        finish: called after the last trial, while Ray shuts down (the report).
        update: called in a background thread after rows are stored, at most every few seconds
            (the live report, ``autotune.search.live``); never after ``finish`` starts.

    Raises:
        UserError: the Ray cluster cannot be reached.
    """
    from autotune.search.callback import make_callback

    cfg = run.config
    run_dir = run.run_dir.resolve()
    board = Leaderboard(
        run_dir,
        objectives=space.objectives,
        metric_columns=METRICS,
        drift_threshold=cfg.drift_threshold,
        devices=[o.name for o in run.others],
    )
    previous = board.rows()
    progress = Progress(total=cfg.trials, time_budget_s=cfg.time_budget_s, objectives=dict(space.objectives))
    progress.done = len(previous)

    import ray

    started_ray = not ray.is_initialized()
    start_ray(run.address, profile)  # first: Ray's processes start while Tune is imported
    callback = make_callback(board=board, run=run.name, profile=profile, progress=progress)
    callback.on_progress = on_progress
    live = LiveReport(update) if update is not None else None
    callback.on_row = live.request if live is not None else None
    rows: list[dict[str, Any]] | None = None
    try:
        if ready is not None:
            ready()
        run_dir.mkdir(parents=True, exist_ok=True)
        rows = _run(space, profile, run, run_dir, board, previous, callback)
    except Exception as err:
        if (where := disk_full(err)) is None:
            raise
        raise UserError(
            f"the disk is full ({where}): the run stopped; its finished trials are in {run_dir / 'leaderboard.csv'}",
            key="--results-dir",
            hint=f"free some space, then continue with: autotune search --resume {run_dir}",
        ) from None
    finally:
        if live is not None:
            live.stop()
        if rows is not None and finish is not None:
            with ThreadPoolExecutor(1, thread_name_prefix="autotune-finish") as pool:
                done = pool.submit(finish)
                if started_ray:
                    ray.shutdown()
                done.result()
        elif started_ray:
            ray.shutdown()
    return rows


def _scheduler(space: SearchSpace, cfg: RunConfig) -> Any:
    """Latency-aware ASHA (``autotune.search.pruning``) with one rung at half the epochs when the
    space trains and early stopping is on; else FIFO."""
    from ray.tune.schedulers import FIFOScheduler

    from autotune.search.pruning import ParetoASHA

    rung = _max_epochs(space) // 2
    if not (space.trains and cfg.early_stopping) or rung < 1:
        return FIFOScheduler()
    return ParetoASHA(rung=rung, by_cost=any(name not in TRAINED_METRICS for name in space.objectives))


def _remind(scheduler: Any, previous: list[dict[str, Any]], run_dir: Path) -> None:
    """Give a resumed run's early stopping the rung's judgements of its finished trials."""
    from autotune.curves import read_curves
    from autotune.search.pruning import ParetoASHA, judged_before

    if not isinstance(scheduler, ParetoASHA) or not previous:
        return
    judged = judged_before(previous, lambda trial_id: read_curves(run_dir / "tensorboard" / trial_id), scheduler.rung)
    scheduler.remember(judged)
    log.info("early stopping: %d earlier trials judged at epoch %d", len(judged), scheduler.rung)


def _run(
    space: SearchSpace,
    profile: DeviceProfile,
    run: SearchRun,
    run_dir: Path,
    board: Leaderboard,
    previous: list[dict[str, Any]],
    callback: Any,
) -> list[dict[str, Any]]:
    import ray
    from ray import tune

    from autotune.search import study as studies
    from autotune.search.adapter import make_searcher
    from autotune.search.callback import make_stopper
    from autotune.search.trainable import Worker, run_trial

    cfg = run.config
    cpus = int(ray.cluster_resources().get("CPU", 1))
    concurrency = cfg.concurrency or max(1, int(cpus // cfg.cpus_per_trial))
    worker = Worker(
        space=space,
        profile=profile,
        run=run.name,
        run_dir=str(run_dir),
        timeout_s=cfg.trial_timeout_s,
        memory_bytes=cfg.trial_memory_bytes,
        tuning_db=str(_tuning_db(profile, run_dir)),
        predictor=cfg.predictor,
        constraint_first=cfg.constraint_first,
        reference_every=cfg.reference_every,
        others=run.others,
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, worker=worker), {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    )
    tune_path = run_dir / "tune"
    lost = studies.requeue_lost(studies.open_study(space, run_dir), previous) if run.resume else 0
    unknown = _unknown_to_tune(tune_path, previous) if run.resume and not lost else 0
    if lost:  # Tune's state counts those trials as done: go on from the study, the truth
        log.warning("%d finished trials have no row (torn or not written): they run again", lost)
    elif unknown:  # Tune's state would run as many trials again: go on from the study, the truth
        log.warning("%d finished trials started after Tune's last snapshot: going on from the study", unknown)
    if (lost or unknown) and tune_path.exists():
        shutil.move(tune_path, run_dir / f"tune.before-{time.strftime('%Y%m%d-%H%M%S')}")
    if run.resume and tune.Tuner.can_restore(str(tune_path)):
        tuner = tune.Tuner.restore(
            str(tune_path), trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
        tuner._local_tuner.get_run_config().callbacks = [callback]  # callbacks are not restorable
        tuner._local_tuner.get_run_config().stop = make_stopper(callback)
    else:
        # A first run, or a resume from before Tune's first snapshot: the study is the truth.
        study = studies.open_study(space, run_dir)
        retried = studies.requeue_in_flight(study) if run.resume else 0
        for params in run.enqueue:
            study.enqueue_trial(dict(params), skip_if_exists=True)
        if run.priors and not run.resume:  # after enqueueing: the front is among them
            studies.add_priors(study, run.priors)
        remaining = cfg.trials - len(previous) if run.resume else cfg.trials
        if retried:
            log.info("re-running %d trials that were in flight when the run stopped", retried)
        if remaining <= 0:
            return board.rewrite()
        tuner = tune.Tuner(
            trainable,
            param_space={"seed": cfg.seed},
            tune_config=tune.TuneConfig(
                search_alg=make_searcher(space, run_dir, cfg.seed, cfg.sampler),
                scheduler=_scheduler(space, cfg),
                num_samples=remaining,
                max_concurrent_trials=concurrency,
                reuse_actors=True,
                time_budget_s=cfg.time_budget_s,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str(run_dir),
                verbose=0,
                callbacks=[callback],
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                stop=make_stopper(callback),
            ),
        )
    _remind(tuner._local_tuner._tune_config.scheduler, previous, run_dir)  # (Tune keeps no scheduler state)
    log.info("search %s: up to %d trials, %d at a time", run.name, cfg.trials, concurrency)
    t0 = time.monotonic()
    try:
        tuner.fit()
        if callback.fatal is not None:  # a full disk: the rows stored so far stay; --resume goes on
            raise callback.fatal
    finally:
        budget_hit = cfg.time_budget_s is not None and time.monotonic() - t0 >= cfg.time_budget_s
        finished = len(board.rows()) >= cfg.trials
        # An interrupted run leaves its in-flight trials for --resume to re-run. A run that ended
        # (all trials, or the time budget) closes whatever is still open.
        if budget_hit:
            n = callback.record_unfinished("stopped: the time budget ran out")
            if n:
                log.info("time budget reached: %d running trials stopped", n)
        if budget_hit or finished:
            studies.sweep_zombies(run_dir, pruned=budget_hit)
    if finished and profile.tuning.finalists and profile.tuning.trials_per_finalist:
        left = None if cfg.time_budget_s is None else cfg.time_budget_s - (time.monotonic() - t0)
        _tune_finalists(space, profile, run_dir, board, callback, time_left_s=left)
    return board.rewrite()


def _tuning_db(profile: DeviceProfile, run_dir: Path) -> Path:
    from autotune.tuning import database_dir

    return database_dir(profile, run_dir.parent)


def _tune_finalists(
    space: SearchSpace,
    profile: DeviceProfile,
    run_dir: Path,
    board: Leaderboard,
    callback: Any,
    *,
    time_left_s: float | None,
) -> None:
    """Re-tune the Pareto front's best ``finalists`` with the larger budget, one at a time (tuning
    uses every core), re-measure them and record ``latency_tuned_ms``; ranks are then recomputed.

    Each runs as a Ray task on this node (where the run directory is), in a worker that has the
    workers' environment, not in this process (``autotune.finalists``)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from autotune.finalists import retune_trial

    cfg = profile.tuning
    first = next(iter(space.objectives))
    rows = [r for r in board.rewrite() if r.get("pareto_rank") == 1 and not r.get("latency_tuned_ms")]
    column, sign = metric_column(first), -1 if space.objectives[first] == "max" else 1
    rows.sort(key=lambda r: sign * (r.get(column) or 0))
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(retune_trial).options(num_cpus=1, max_retries=0, scheduling_strategy=here)
    db = str(_tuning_db(profile, run_dir))
    t0 = time.monotonic()
    for row in rows[: cfg.finalists]:
        if time_left_s is not None and time.monotonic() - t0 >= time_left_s:
            log.info("time budget reached: finalists left untuned")
            break
        callback.progress.running[row["trial_id"]] = f"finalist: tuning {cfg.trials_per_finalist} trials"
        callback.emit()
        ref = task.remote(dict(row), space, profile, run_dir=str(run_dir), trials=cfg.trials_per_finalist, tuning_db=db)
        try:
            update = ray.get(ref)
        except ray.exceptions.WorkerCrashedError:  # a crash inside TVM: this finalist keeps its results
            update = {"error": "finalist re-tune failed: its worker process died"}
        callback.progress.running.pop(row["trial_id"], None)
        board.add({**row, **update})
        log.info(
            "finalist %s: %.4g ms untuned -> %s tuned",
            row["trial_id"],
            row["latency_ms"],
            f"{update['latency_tuned_ms']:.4g} ms" if update.get("latency_tuned_ms") else update.get("error"),
        )
    callback.emit()


def _max_epochs(space: SearchSpace) -> int:
    spec = (space.train or {}).get("epochs", 10)
    if hasattr(spec, "high"):
        return int(spec.high)
    if hasattr(spec, "choices"):
        return int(max(spec.choices))
    return int(spec)
