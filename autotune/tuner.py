"""The search: Ray Tune runs trials, Optuna (through ``OptunaSearch``) samples them.

Each trial calls ``evaluate``; per-epoch validation results go to Ray Tune so ASHA can stop poor
trials early. The driver-side ``_RunCallback`` writes every finished, pruned or failed trial to
the leaderboard as it ends and feeds the progress display. The Optuna study lives in
``<run>/study.db``; Ray Tune's experiment state in ``<run>/tune``, so ``resume=True`` continues
both.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import METRICS, SearchSpace, metric_column
from autotune.errors import UserError
from autotune.leaderboard import SCHEMA_VERSION, Leaderboard
from autotune.space import PARAM_PREFIXES, sample_params

__all__ = ["SAMPLERS", "Progress", "SearchSettings", "run_search"]

log = logging.getLogger(__name__)

STUDY_NAME = "autotune"

#: Optuna samplers a search may use: multi-objective TPE (default; reads the trials' constraint
#: values, so infeasible candidates steer it away), NSGA-II, or uniform random sampling.
SAMPLERS = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class SearchSettings:
    """How a search runs (the part of a run that is not the space or the profile)."""

    name: str
    results_dir: Path
    trials: int = 20
    time_budget_s: float | None = None
    concurrency: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0
    address: str | None = None
    resume: bool = False
    early_stopping: bool = True  # ASHA on validation loss
    trial_timeout_s: float | None = 3600.0
    trial_memory_bytes: int | None = 8 * 2**30
    enqueue: tuple[dict[str, Any], ...] = ()  # parameter sets the study tries first
    priors: tuple[dict[str, Any], ...] = ()  # finished trials of an earlier run (autotune.warmstart)
    sampler: str = "tpe"  # one of SAMPLERS
    predictor: bool = True  # latency predictor per profile (autotune.predictor); skips sure violations
    constraint_first: bool = True  # time untrained networks that might break a hard constraint
    reference_every: int = 10  # re-time the reference model every N trials (0: never)
    drift_threshold: float = 0.10  # a reference timing this far from the first is drift
    others: tuple[DeviceProfile, ...] = ()  # the other devices every candidate is also timed on

    @property
    def run_dir(self) -> Path:
        return self.results_dir / self.name


@dataclass
class Progress:
    """What the progress display shows; updated by the driver as trials start and end."""

    total: int
    time_budget_s: float | None
    started: float = field(default_factory=time.time)
    running: dict[str, str] = field(default_factory=dict)  # trial id -> what it is doing
    done: int = 0
    failed: int = 0
    pruned: int = 0
    infeasible: int = 0
    best: dict[str, Any] | None = None
    objectives: dict[str, str] = field(default_factory=dict)
    predictor_hit_rate: float | None = None  # share of predictions within ±10 % of the measurement
    predictor_checked: int = 0  # rows with both a prediction and a measurement
    drift_warning: str | None = None

    @property
    def elapsed_s(self) -> float:
        return time.time() - self.started

    @property
    def remaining_s(self) -> float | None:
        return None if self.time_budget_s is None else max(0.0, self.time_budget_s - self.elapsed_s)


ProgressHook = Callable[[Progress], None]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


# --------------------------------------------------------------------------- the trial (worker side)


def _define_by_run(trial: Any, space: SearchSpace) -> dict[str, Any]:
    number = getattr(getattr(trial, "ot_trial", trial), "number", None)  # Tune wraps the Optuna trial
    return {**sample_params(space, trial), "study_trial": number}


def _objective_values(row: Mapping[str, Any], objectives: Mapping[str, str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in objectives:
        v = row.get(metric_column(name))
        out[f"obj/{name}"] = float(v) if isinstance(v, int | float) and math.isfinite(v) else None
    return out


def _stored_row(run_dir: str, trial_id: str) -> dict[str, Any] | None:
    """The row a trial already wrote before a crash (Tune re-runs trials finished after its last
    snapshot; the leaderboard keeps the first result instead of a second, different one)."""
    store = Path(run_dir) / "trials.jsonl"
    if not store.exists():
        return None
    for line in store.read_text().splitlines():
        if f'"{trial_id}"' in line:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("trial_id") == trial_id and row.get("status") in ("ok", "infeasible", "failed"):
                return row
    return None


_WARM: set[str] = set()


def _warm_imports(with_compression: bool) -> None:
    """Import, once per worker process, what every trial's forked child would otherwise import
    again: TVM and the stages that use it (about 1-1.6 s per trial on a small CPU). Importing TVM
    starts no threads (its pool is created on first use), so forking afterwards is safe; the
    worker's environment already holds ``worker_env`` (TVM reads it at import)."""
    import importlib

    names = ["tvm", "tvm.relax", "tvm.relax.frontend.torch", "autotune.compiler", "autotune.numerics"]
    names += ["autotune.measure.local", "autotune.measure.rpc", "autotune.exporter", "autotune.train"]
    names += ["torch_pruning", "sklearn.linear_model", "sklearn.ensemble"] + (
        ["autotune.compress.pipeline", "autotune.compress.fakequant"] if with_compression else []
    )
    for name in names:
        if name not in _WARM:
            importlib.import_module(name)
            _WARM.add(name)


def _write_timeline(work_dir: Path, started: float, finished: float, waits: list[tuple[float, float]]) -> None:
    """``trials/<id>/timeline.json``: when the trial's process worked (Unix times, sub-second), less
    the spans it stood blocked on the quiet lock (another trial timing); ``bench/orchestration.py``
    reads it to find the wall time in which no trial worked."""
    record = {"started": started, "finished": finished, "quiet_waits": [list(w) for w in waits]}
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "timeline.json").write_text(json.dumps(record) + "\n")


def _trainable(
    config: dict[str, Any],
    *,
    space: SearchSpace,
    profile: DeviceProfile,
    run: str,
    run_dir: str,
    timeout_s: float | None,
    memory_bytes: int | None,
    tuning_db: str | None,
    predictor: bool = True,
    constraint_first: bool = True,
    reference_every: int = 0,
    others: tuple[DeviceProfile, ...] = (),
) -> None:
    """Ray Tune function trainable: evaluate one candidate in a sandboxed child, reporting each epoch."""
    import ray
    import torch
    from ray import tune

    from autotune.errors import CandidateFailed
    from autotune.predictor import environment_key, fit_history, history_path
    from autotune.quiet import QuietLock
    from autotune.sandbox import run_isolated
    from autotune.trial import Screening, base_row, evaluate, make_trial_config, measure_reference, prepare_task

    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    cpus = max(1, int(ctx.get_trial_resources().required_resources.get("CPU", 1)))
    torch.set_num_threads(cpus)
    task = prepare_task(space, profile, others=others)
    _warm_imports(bool(space.compress))
    params = {k: v for k, v in config.items() if k.startswith(PARAM_PREFIXES)}
    seed = int(config.get("seed", 0)) + int(config.get("study_trial") or 0)
    cfg = make_trial_config(params, space, trial_id=trial_id, seed=seed)
    stage = ["start"]
    history = history_path(profile, Path(run_dir).parent)
    key = environment_key(profile)
    t_fit = time.perf_counter()
    fitted = fit_history(history, key)
    screening = Screening(
        fit_s=time.perf_counter() - t_fit,
        constraint_first=constraint_first,
        predictor=fitted if predictor else None,
        history=history,
        key=key,
        seen=fitted.range_,
    )
    number = config.get("study_trial")
    reference = bool(reference_every) and isinstance(number, int) and number % reference_every == 0
    lock_dir = Path(run_dir) / ".quiet" / socket.gethostname()  # per machine: nodes do not disturb each other

    def on_message(message: tuple) -> None:  # in this (parent) process: Tune reports happen here
        if message[0] == "epoch":
            _, epoch, val_acc, val_loss = message
            tune.report({"epoch": epoch, "val_accuracy": val_acc, "score": val_loss})
        elif message[0] == "stage":
            stage[0] = message[1]
            tune.report({"stage": message[1]})

    def work(send: Any) -> dict[str, Any]:  # in the forked child
        started = time.time()
        lock = QuietLock(lock_dir)
        work_dir = Path(run_dir) / "trials" / trial_id
        row = evaluate(
            cfg,
            task,
            run=run,
            work_dir=work_dir,
            lock=lock,
            on_epoch=lambda e, a, loss: send(("epoch", e, a, loss)),
            on_stage=lambda name: send(("stage", name)),
            tuning_db=tuning_db,
            cache_dir=Path(run_dir) / "cache",
            screening=screening,
        )
        waited0 = lock.waited_s
        if reference:
            send(("stage", "re-timing the reference model (drift check)"))
            t0 = time.perf_counter()
            row.update(measure_reference(task, Path(run_dir) / "cache", lock))
            row["reference_s"] = time.perf_counter() - t0 - (lock.waited_s - waited0)
            row["quiet_wait_s"] = (row.get("quiet_wait_s") or 0.0) + lock.waited_s - waited0
        _write_timeline(work_dir, started, time.time(), lock.waits)
        return row

    row = _stored_row(run_dir, trial_id)
    if row is None:
        try:
            row = run_isolated(work, timeout_s=timeout_s, memory_bytes=memory_bytes, on_message=on_message)
        except CandidateFailed as err:
            row = base_row(cfg, task, run=run, status="failed", error=f"{stage[0]}: {err.reason}")
        row["study_trial"] = config.get("study_trial")
        row["node"] = ray.get_runtime_context().get_node_id()[:12]
    final = {
        "final": True,
        "row_json": json.dumps(row, default=str),
        "status": row["status"],
        "violation_amounts": json.dumps(_violation_amounts(row, space, profile)),
        **_objective_values(row, space.objectives),
    }
    epochs = row.get("epochs") or 0
    tune.report({"epoch": epochs, "score": math.inf, **final} if not space.trains else {"epoch": epochs, **final})


def _violation_amounts(row: Mapping[str, Any], space: SearchSpace, profile: DeviceProfile) -> dict[str, float]:
    """Optuna constraint values (<= 0 is feasible), one per constraint, relative to its bound."""
    out = {}
    for name, c in space.constraints.items():
        v = row.get(metric_column(name))
        if v is None and name == "latency_ms":
            v = row.get("latency_pred_ms")  # skipped on the prediction
        if not isinstance(v, int | float):
            out[name] = 1.0
            continue
        amount = -1.0
        if c.max is not None:
            amount = max(amount, (v - c.max) / max(abs(c.max), 1e-12))
        if c.min is not None:
            amount = max(amount, (c.min - v) / max(abs(c.min), 1e-12))
        out[name] = float(amount)
    return out


# --------------------------------------------------------------------------- searcher and callback


def _make_sampler(name: str, seed: int) -> Any:
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=6)


def _make_searcher(space: SearchSpace, run_dir: Path, seed: int, sampler_name: str = "tpe") -> Any:
    import optuna
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class RobustOptunaSearch(OptunaSearch):
        """OptunaSearch that tells Optuna the truth about every trial.

        Stock OptunaSearch tells early-stopped trials COMPLETE with partial metrics and leaves
        trials with NaN results RUNNING. Here: no final row → PRUNED; a failed row or a
        non-finite objective → FAIL; constraint values are stored for the sampler first.
        """

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            result = result or {}
            done = self._ot_study.get_trials(deepcopy=False)[ot_trial.number].state.is_finished()
            if done:  # closed by an earlier run's sweep; nothing to tell
                self._completed_trials.add(trial_id)
                return
            if result.get("final") and not error:
                ot_trial.set_user_attr("status", result.get("status"))
                for name, amount in json.loads(result.get("violation_amounts") or "{}").items():
                    ot_trial.set_constraint(name, amount)
                vals = [result.get(m) for m in self.metric]
                if result.get("status") in ("ok", "infeasible") and all(
                    isinstance(v, int | float) and math.isfinite(v) for v in vals
                ):
                    self._ot_study.tell(ot_trial, vals)
                elif result.get("status") == "infeasible":
                    # screened out before training: no objective values, but its constraint values
                    # are set, and TPE reads those of pruned trials (the infeasible group)
                    self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
                else:
                    self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            else:
                self._ot_study.tell(ot_trial, state=TrialState.FAIL if error else TrialState.PRUNED)
            self._completed_trials.add(trial_id)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = list(space.objectives)
    sampler = _make_sampler(sampler_name, seed)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(run_dir / 'study.db').resolve()}")
    return RobustOptunaSearch(
        functools.partial(_define_by_run, space=space),
        metric=[f"obj/{n}" for n in names],
        mode=[space.objectives[n] for n in names],
        sampler=sampler,
        storage=storage,
        study_name=STUDY_NAME,
    )


def _tail(path: str | None) -> str:
    if not path or not Path(path).exists():
        return "the trial's process died (killed, or out of memory)"
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "unknown error"


class _RunCallbackBase:
    """Driver side: writes rows to the leaderboard as trials end and updates the progress."""

    def __init__(self, *, board: Leaderboard, run: str, space: SearchSpace, profile: DeviceProfile, progress: Progress):
        self.board, self.run, self.space, self.profile = board, run, space, profile
        self.progress = progress
        self.drift_threshold = board.drift_threshold
        self.started: dict[str, str] = {}
        self.live: dict[str, Any] = {}  # trial id -> Tune trial, while it runs
        self.on_progress: ProgressHook | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the run config
        state = self.__dict__.copy()
        state["on_progress"] = None
        state["live"] = {}
        return state

    def _emit(self) -> None:
        if self.on_progress:
            self.on_progress(self.progress)

    def _params(self, trial: Any) -> dict[str, Any]:
        return {k: v for k, v in trial.config.items() if k.startswith(PARAM_PREFIXES)}

    def _record(self, row: dict[str, Any]) -> None:
        rows = self.board.add(row)
        p = self.progress
        p.done += 1
        status = row.get("status")
        p.failed += status == "failed"
        p.pruned += status == "pruned"
        p.infeasible += status == "infeasible"
        from autotune.predictor import hit_rate

        p.predictor_hit_rate, p.predictor_checked = hit_rate(rows)
        # the board's rewrite derived drift and drift_flag (leaderboard.flag_drift)
        drifted = sorted(
            (r for r in rows if r.get("drift") is not None and abs(r["drift"]) > self.drift_threshold),
            key=lambda r: r.get("finished_at") or "",
        )
        if drifted:
            last = drifted[-1]
            p.drift_warning = (
                f"latency drift {last['drift']:+.0%}: the reference model timed {last['reference_latency_ms']:.4g} ms "
                f"in trial {last['trial_id']} ({len(drifted)} drifted re-timings; affected rows have drift_flag)"
            )
        front = [r for r in rows if r.get("pareto_rank") == 1]
        if front:
            first = next(iter(self.space.objectives))
            key = metric_column(first)
            rev = self.space.objectives[first] == "max"
            p.best = sorted(front, key=lambda r: r.get(key) or 0, reverse=rev)[0]
        p.running.pop(str(row["trial_id"]), None)
        self.live.pop(str(row["trial_id"]), None)
        self._emit()

    def record_unfinished(self, reason: str) -> int:
        """Write a ``pruned`` row for every trial still running when the search stopped."""
        left = list(self.live.values())
        for trial in left:
            row = self._base_row(trial, "pruned", reason)
            last = trial.last_result or {}
            row.update(val_accuracy=last.get("val_accuracy"), epochs=last.get("epoch"))
            self._record(row)
        return len(left)

    def trial_start(self, trial: Any) -> None:
        self.started.setdefault(trial.trial_id, _now())
        self.live[trial.trial_id] = trial
        self.progress.running[trial.trial_id] = "starting"
        self._emit()

    def trial_result(self, trial: Any, result: dict[str, Any]) -> None:
        if result.get("stage"):
            self.progress.running[trial.trial_id] = str(result["stage"])
            self._emit()
        elif "epoch" in result and not result.get("final"):
            self.progress.running[trial.trial_id] = f"train: epoch {result['epoch']}"
            self._emit()
        elif result.get("final"):
            self.progress.running[trial.trial_id] = "finishing"

    def trial_complete(self, trial: Any) -> None:
        last = trial.last_result or {}
        if last.get("final") and last.get("row_json"):
            row = json.loads(last["row_json"])
        else:
            row = self._base_row(trial, "pruned", "stopped early by ASHA on validation loss")
            row.update(val_accuracy=last.get("val_accuracy"), epochs=last.get("epoch"))
        self._record(row)

    def trial_error(self, trial: Any) -> None:
        self._record(self._base_row(trial, "failed", _tail(trial.error_file)))

    def _base_row(self, trial: Any, status: str, error: str) -> dict[str, Any]:
        now = _now()
        return {
            "schema_version": SCHEMA_VERSION,
            "run": self.run,
            "trial_id": trial.trial_id,
            "status": status,
            "error": error,
            "device": self.profile.name,
            "seed": int(trial.config.get("seed") or 0) + int(trial.config.get("study_trial") or 0),
            "study_trial": trial.config.get("study_trial"),
            "started_at": self.started.get(trial.trial_id, now),
            "finished_at": now,
            **self._params(trial),
        }


def _make_callback(**kwargs: Any) -> Any:
    from ray.tune import Callback

    class _RunCallback(_RunCallbackBase, Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.trial_start(trial)

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.trial_result(trial, result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.trial_complete(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.trial_error(trial)

    return _RunCallback(**kwargs)


# --------------------------------------------------------------------------- the driver


def _init_ray(address: str | None, num_cpus: int | None, profile: DeviceProfile) -> None:
    """Start the embedded Ray (or join the cluster at ``address``) with the workers' environment.

    A cluster's workers get the environment through Ray's ``runtime_env``. The embedded Ray's
    processes inherit it instead (set here only while Ray starts): a job ``runtime_env`` would keep
    Tune's trial actors off the workers Ray prestarts at ``init``, and cost each slot a fresh worker
    process (about 0.6 s per slot here, on the run's critical path).
    """
    import ray

    from autotune.trial import worker_env

    if ray.is_initialized():
        return
    env = {**worker_env(profile), "OMP_NUM_THREADS": "1", "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1"}
    # plug-in modules ('my_task:load') are imported from the driver's working directory
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
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
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _open_study(space: SearchSpace, run_dir: Path) -> Any:
    """Create (or open) the run's study with the space's directions; OptunaSearch attaches to it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize" if space.objectives[n] == "max" else "minimize" for n in space.objectives]
    storage = optuna.storages.RDBStorage(f"sqlite:///{(run_dir / 'study.db').resolve()}")
    return optuna.create_study(study_name=STUDY_NAME, storage=storage, directions=directions, load_if_exists=True)


def _add_priors(study: Any, priors: tuple[dict[str, Any], ...]) -> None:
    """Add an earlier run's finished trials to the study as completed observations."""
    import optuna

    for p in priors:
        study.add_trial(
            optuna.trial.create_trial(
                params=p["params"],
                distributions=p["distributions"],
                values=p["values"],
                user_attrs={"warm_start": True},
            )
        )


def _requeue_in_flight(study: Any) -> int:
    """Close trials a crash left RUNNING (FAIL) and enqueue their parameters to run again."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=[TrialState.RUNNING])
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return len(stale)


def _sweep_zombies(run_dir: Path, *, pruned: bool = False) -> int:
    """Close study trials left RUNNING (budget end: PRUNED; crash or interrupt: FAIL)."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.RDBStorage(f"sqlite:///{(run_dir / 'study.db').resolve()}")
    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    except KeyError:
        return 0
    stale = study.get_trials(deepcopy=False, states=[TrialState.RUNNING])
    for t in stale:
        study.tell(t.number, state=TrialState.PRUNED if pruned else TrialState.FAIL)
    return len(stale)


def run_search(
    space: SearchSpace,
    profile: DeviceProfile,
    settings: SearchSettings,
    *,
    on_progress: ProgressHook | None = None,
    ready: Callable[[], None] | None = None,
    finish: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) a search and return the leaderboard rows.

    Args:
        ready: called once Ray is up, before any trial (the caller's pre-flight checks, which ran
            meanwhile); an exception from it ends the search.
        finish: called after the last trial, while Ray shuts down (the report).

    Raises:
        UserError: the run exists and ``resume`` is off, or the Ray cluster cannot be reached.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")

    run_dir = settings.run_dir.resolve()
    board = Leaderboard(
        run_dir,
        objectives=space.objectives,
        metric_columns=METRICS,
        drift_threshold=settings.drift_threshold,
        devices=[o.name for o in settings.others],
    )
    previous = board.rows()
    progress = Progress(total=settings.trials, time_budget_s=settings.time_budget_s, objectives=dict(space.objectives))
    progress.done = len(previous)

    import ray

    started_ray = not ray.is_initialized()
    _init_ray(settings.address, None, profile)  # first: Ray's processes start while Tune is imported
    callback = _make_callback(board=board, run=settings.name, space=space, profile=profile, progress=progress)
    callback.on_progress = on_progress
    rows: list[dict[str, Any]] | None = None
    try:
        if ready is not None:
            ready()
        run_dir.mkdir(parents=True, exist_ok=True)
        rows = _run(space, profile, settings, run_dir, board, previous, callback)
    finally:
        if rows is not None and finish is not None:
            with ThreadPoolExecutor(1, thread_name_prefix="autotune-finish") as pool:
                done = pool.submit(finish)
                if started_ray:
                    ray.shutdown()
                done.result()
        elif started_ray:
            ray.shutdown()
    return rows


def _run(
    space: SearchSpace,
    profile: DeviceProfile,
    settings: SearchSettings,
    run_dir: Path,
    board: Leaderboard,
    previous: list[dict[str, Any]],
    callback: Any,
) -> list[dict[str, Any]]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    cpus = int(ray.cluster_resources().get("CPU", 1))
    concurrency = settings.concurrency or max(1, int(cpus // settings.cpus_per_trial))
    trainable = tune.with_resources(
        tune.with_parameters(
            _trainable,
            space=space,
            profile=profile,
            run=settings.name,
            run_dir=str(run_dir),
            timeout_s=settings.trial_timeout_s,
            memory_bytes=settings.trial_memory_bytes,
            tuning_db=str(_tuning_db(profile, run_dir)),
            predictor=settings.predictor,
            constraint_first=settings.constraint_first,
            reference_every=settings.reference_every,
            others=settings.others,
        ),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    tune_path = run_dir / "tune"
    if settings.resume and tune.Tuner.can_restore(str(tune_path)):
        tuner = tune.Tuner.restore(
            str(tune_path), trainable=trainable, resume_unfinished=True, resume_errored=False, restart_errored=False
        )
        tuner._local_tuner.get_run_config().callbacks = [callback]  # callbacks are not restorable
    else:
        # A first run, or a resume from before Tune's first snapshot: the study is the truth.
        study = _open_study(space, run_dir)
        retried = _requeue_in_flight(study) if settings.resume else 0
        for params in settings.enqueue:
            study.enqueue_trial(dict(params), skip_if_exists=True)
        if settings.priors and not settings.resume:  # after enqueueing: the front is among them
            _add_priors(study, settings.priors)
        remaining = settings.trials - len(previous) if settings.resume else settings.trials
        if retried:
            log.info("re-running %d trials that were in flight when the run stopped", retried)
        if remaining <= 0:
            return board.rewrite()
        if space.trains and settings.early_stopping:
            # max_t is one past the last epoch: ASHA stops a trial that reaches max_t, and a
            # trial that finished training must still compile and measure.
            max_epochs = max(_max_epochs(space), 1)
            scheduler: Any = ASHAScheduler(
                metric="score",
                mode="min",
                time_attr="epoch",
                max_t=max_epochs + 1,
                grace_period=max(2, max_epochs // 2),  # one rung, at half the epochs: keep the better half
                reduction_factor=2,
            )
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            param_space={"seed": settings.seed},
            tune_config=tune.TuneConfig(
                search_alg=_make_searcher(space, run_dir, settings.seed, settings.sampler),
                scheduler=scheduler,
                num_samples=remaining,
                max_concurrent_trials=concurrency,
                reuse_actors=True,
                time_budget_s=settings.time_budget_s,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str(run_dir),
                verbose=0,
                callbacks=[callback],
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            ),
        )
    log.info("search %s: up to %d trials, %d at a time", settings.name, settings.trials, concurrency)
    t0 = time.monotonic()
    try:
        tuner.fit()
    finally:
        budget_hit = settings.time_budget_s is not None and time.monotonic() - t0 >= settings.time_budget_s
        finished = len(board.rows()) >= settings.trials
        # An interrupted run leaves its in-flight trials for --resume to re-run. A run that ended
        # (all trials, or the time budget) closes whatever is still open.
        if budget_hit:
            n = callback.record_unfinished("stopped: the time budget ran out")
            if n:
                log.info("time budget reached: %d running trials stopped", n)
        if budget_hit or finished:
            _sweep_zombies(run_dir, pruned=budget_hit)
    if finished and profile.tuning.finalists and profile.tuning.trials_per_finalist:
        left = None if settings.time_budget_s is None else settings.time_budget_s - (time.monotonic() - t0)
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
    uses every core), re-measure them and record ``latency_tuned_ms``; ranks are then recomputed."""
    from autotune.errors import CandidateFailed
    from autotune.trial import prepare_task, retune

    cfg = profile.tuning
    first = next(iter(space.objectives))
    rows = [r for r in board.rewrite() if r.get("pareto_rank") == 1 and not r.get("latency_tuned_ms")]
    column, sign = metric_column(first), -1 if space.objectives[first] == "max" else 1
    rows.sort(key=lambda r: sign * (r.get(column) or 0))
    task = prepare_task(space, profile)
    t0 = time.monotonic()
    for row in rows[: cfg.finalists]:
        if time_left_s is not None and time.monotonic() - t0 >= time_left_s:
            log.info("time budget reached: finalists left untuned")
            break
        callback.progress.running[row["trial_id"]] = f"finalist: tuning {cfg.trials_per_finalist} trials"
        callback._emit()
        try:
            update = retune(
                row, task, run_dir=run_dir, trials=cfg.trials_per_finalist, tuning_db=_tuning_db(profile, run_dir)
            )
        except CandidateFailed as err:
            update = {"error": f"finalist re-tune failed: {err}"}
        callback.progress.running.pop(row["trial_id"], None)
        board.add({**row, **update})
        log.info(
            "finalist %s: %.4f ms untuned -> %s ms tuned",
            row["trial_id"],
            row["latency_ms"],
            update.get("latency_tuned_ms"),
        )
    callback._emit()


def _max_epochs(space: SearchSpace) -> int:
    spec = (space.train or {}).get("epochs", 10)
    if hasattr(spec, "high"):
        return int(spec.high)
    if hasattr(spec, "choices"):
        return int(max(spec.choices))
    return int(spec)
