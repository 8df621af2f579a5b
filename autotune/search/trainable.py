"""The Ray worker's side of a trial: evaluate one candidate in a sandboxed child, report to Tune.

``Worker`` holds what every trial of a run shares (the space, the profiles, the limits); Tune calls
``run_trial`` with each trial's sampled ``config``. The candidate itself runs in a forked child
(``autotune.sandbox``) that calls ``evaluate`` and nothing else of the pipeline; the parent turns
its epochs and stages into Tune reports and its outcome into the final report (the row as JSON,
the Optuna objective and constraint values). A bug inside the child leaves ``traceback.txt`` in the
trial's directory and an ``internal error`` row.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import SearchSpace, metric_column
from autotune.quiet import QuietLock, quiet_dir
from autotune.space import PARAM_PREFIXES

__all__ = ["TRACEBACK_FILE", "Worker", "run_trial"]

#: In ``<run>/trials/<trial id>/``: the full traceback of a bug inside the trial.
TRACEBACK_FILE = "traceback.txt"

#: What every trial's forked child would otherwise import again (about 1-1.6 s per trial on a small
#: CPU): TVM and the stages that use it. Importing TVM starts no threads, so forking after it is safe.
_WARM_MODULES = (
    "tvm",
    "tvm.relax",
    "tvm.relax.frontend.torch",
    "autotune.compiler",
    "autotune.numerics",
    "autotune.measure.local",
    "autotune.measure.rpc",
    "autotune.exporter",
    "autotune.train",
    "torch_pruning",
    "sklearn.linear_model",
    "sklearn.ensemble",
)
_WARM_COMPRESSION = ("autotune.compress.pipeline", "autotune.compress.fakequant")


#: (profile, input shape) this worker process has exported and compiled once (``evaluate.warm_up``).
_WARMED_UP: set[tuple[str, tuple[int, ...]]] = set()

#: The quiet locks this worker process holds open, by directory (``Worker._lock``).
_LOCKS: dict[Path, QuietLock] = {}


def objective_values(row: Mapping[str, Any], objectives: Mapping[str, str]) -> dict[str, float | None]:
    """The row's objectives as Tune metrics ``obj/<name>`` (None when missing or not finite)."""
    out: dict[str, float | None] = {}
    for name in objectives:
        v = row.get(metric_column(name))
        out[f"obj/{name}"] = float(v) if isinstance(v, int | float) and math.isfinite(v) else None
    return out


def stored_row(run_dir: str | Path, trial_id: str) -> dict[str, Any] | None:
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


def write_timeline(work_dir: Path, started: float, finished: float, waits: list[tuple[float, float]]) -> None:
    """``trials/<id>/timeline.json``: when the trial's process worked (Unix times, sub-second), less
    the spans it stood blocked on the quiet lock (another trial timing); ``bench/orchestration.py``
    reads it to find the wall time in which no trial worked."""
    record = {"started": started, "finished": finished, "quiet_waits": [list(w) for w in waits]}
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "timeline.json").write_text(json.dumps(record) + "\n")


@dataclass
class Worker:
    """What every trial of a run shares, and the worker process's own state (its warm imports).

    Args:
        run: the run's name (the rows' ``run``).
        run_dir: the run directory (absolute; trials write under ``trials/<id>``).
        timeout_s: a trial's time limit (None: none).
        memory_bytes: a trial's cap on the memory its child holds of its own (None: none).
        tuning_db: the profile's MetaSchedule database.
        reference_every: re-time the reference model every N study trials (0: never).
    """

    space: SearchSpace
    profile: DeviceProfile
    run: str
    run_dir: str
    timeout_s: float | None
    memory_bytes: int | None
    tuning_db: str | None
    predictor: bool = True
    constraint_first: bool = True
    reference_every: int = 0
    others: tuple[DeviceProfile, ...] = ()
    warmed: set[str] = field(default_factory=set)

    def warm(self, task: Any) -> None:
        """Import, once per worker process, what the trial's forked child needs, and run the first
        export and compile (``evaluate.warm_up``): the child inherits both. The worker's environment
        already holds ``worker_env`` (TVM reads it at import)."""
        import importlib

        names = _WARM_MODULES + (_WARM_COMPRESSION if self.space.compress else ())
        with self._lock().shared():  # seconds of imports: not beside a timing
            for name in names:
                if name not in self.warmed:
                    importlib.import_module(name)
                    self.warmed.add(name)
        slot = (self.profile.model_dump_json(), tuple(task.data.input_shape))
        if slot not in _WARMED_UP:
            from autotune.evaluate import warm_up

            _WARMED_UP.add(slot)
            warm_up(task, self._lock())  # holds the lock itself (never nest it)

    def run_trial(self, config: dict[str, Any]) -> None:
        """Evaluate one candidate (``config``: the sampled parameters, ``seed``, ``study_trial``) and
        report its epochs, stages and final row to Tune."""
        import ray
        import torch
        from ray import tune

        from autotune.constraints import learned_floor, violation_amounts
        from autotune.errors import CandidateFailed
        from autotune.leaderboard.row import LeaderboardRow, now
        from autotune.sandbox import TrialError, run_isolated
        from autotune.task import make_trial_config, prepare_task

        ctx = tune.get_context()
        trial_id = ctx.get_trial_id()
        torch.set_num_threads(max(1, int(ctx.get_trial_resources().required_resources.get("CPU", 1))))
        with self._lock().shared():  # the trial's set-up waits for a timing on this machine
            task = prepare_task(self.space, self.profile, others=self.others, cache_dir=Path(self.run_dir) / "cache")
        self.warm(task)
        number = config.get("study_trial")
        params = {k: v for k, v in config.items() if k.startswith(PARAM_PREFIXES)}
        seed = int(config.get("seed", 0)) + int(number or 0)
        cfg = make_trial_config(
            params, self.space, trial_id=trial_id, seed=seed, study_trial=number, passes=task.passes
        )
        node = ray.get_runtime_context().get_node_id()[:12]
        stage = ["start"]
        learned = learned_floor(task.data.y_val) if task.data.labelled else None
        judged = {"accuracy_floor": learned, "epochs_planned": (cfg.train or {}).get("epochs")}  # pruning

        def on_message(message: tuple) -> None:  # in this (parent) process: Tune reports happen here
            if message[0] == "epoch":
                _, epoch, val_acc, val_loss = message
                extra = {k: v for k, v in judged.items() if v is not None}
                tune.report({"epoch": epoch, "val_accuracy": val_acc, "score": val_loss, **extra})
            elif message[0] == "cost":
                judged.update({f"cost_{k}": v for k, v in message[1].items()})
            elif message[0] == "stage":
                stage[0] = message[1]
                tune.report({"stage": message[1]})

        work_dir = Path(self.run_dir) / "trials" / trial_id
        traceback_file = None
        row = stored_row(self.run_dir, trial_id)
        if row is None:
            started = now()
            work = self._work(task, cfg, number, node, work_dir)
            try:
                row = run_isolated(
                    work, timeout_s=self.timeout_s, memory_bytes=self.memory_bytes, on_message=on_message
                )
            except (CandidateFailed, TrialError) as err:
                if isinstance(err, TrialError):
                    error = str(err)
                    if err.kind == "internal":
                        traceback_file = str(_write_traceback(work_dir, trial_id, stage[0], err.traceback))
                else:
                    error = f"{stage[0] if err.stage in ('limit', 'crash') else err.stage}: {err.reason}"
                failed = LeaderboardRow.unfinished(
                    run=self.run, trial_id=trial_id, device=self.profile.name, seed=seed, params=cfg.params,
                    status="failed", error=error, started_at=started, study_trial=number, node=node,
                )  # fmt: skip
                row = dict(failed)
        final = {
            "final": True,
            "row_json": json.dumps(row, default=str),
            "status": row["status"],
            "violation_amounts": json.dumps(violation_amounts(row, self.space, self.profile, learned)),
            "traceback_file": traceback_file,
            **objective_values(row, self.space.objectives),
        }
        epochs = row.get("epochs") or 0
        extra = {} if self.space.trains else {"score": math.inf}
        tune.report({"epoch": epochs, **extra, **final})

    def _lock_dir(self) -> Path:
        """The run's quiet lock on this machine (nodes do not disturb each other)."""
        return quiet_dir(self.run_dir)

    def _lock(self) -> QuietLock:
        """That lock, opened once per worker process (each ``QuietLock`` keeps two files open)."""
        where = self._lock_dir()
        if where not in _LOCKS:
            _LOCKS[where] = QuietLock(where)
        return _LOCKS[where]

    def _work(self, task: Any, cfg: Any, number: Any, node: str, work_dir: Path) -> Any:
        """The function the forked child runs: ``evaluate`` (with the drift re-timing when due)."""
        from autotune.evaluate import evaluate
        from autotune.quiet import QuietLock

        run_dir = Path(self.run_dir)
        screening = _screening(self.profile, run_dir, self.predictor, self.constraint_first, self.tuning_db)
        reference = bool(self.reference_every) and isinstance(number, int) and number % self.reference_every == 0
        lock_dir = self._lock_dir()
        run, tuning_db = self.run, self.tuning_db

        def work(send: Any) -> dict[str, Any]:  # in the forked child
            started = time.time()
            lock = QuietLock(lock_dir)
            row = evaluate(
                cfg,
                task,
                run=run,
                work_dir=work_dir,
                lock=lock,
                on_epoch=lambda e, a, loss: send(("epoch", e, a, loss)),
                on_stage=lambda name: send(("stage", name)),
                on_cost=lambda cost: send(("cost", cost)),
                tuning_db=tuning_db,
                cache_dir=run_dir / "cache",
                curves_dir=run_dir / "tensorboard" / cfg.trial_id,
                screening=screening,
                reference=reference,
                store_dir=run_dir.parent / ".predictor",
                node=node,
            )
            write_timeline(work_dir, started, time.time(), lock.waits)
            return dict(row)  # a plain dict crosses the pipe

        return work


#: This worker process's last fitted screenings, by what they were fitted on (``_screening``).
_FITTED: dict[tuple[Any, ...], Any] = {}


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _screening(
    profile: DeviceProfile, run_dir: Path, predictor: bool, constraint_first: bool, tuning_db: str | None
) -> Any:
    """The trial's screening: the latency predictors fitted on the profile's history and kernel table
    (in the parent, before the fork, so their fit time is the trial's ``screen_s``); the network-level
    one, the kernel-level one or a blend of both, whichever cross-validates best (``autotune.blend``).

    The fit is deterministic in its files, so while the history and both kernel tables are unchanged
    since this worker's last trial (a trial screened on a prediction times nothing) that fit is
    reused, with ``fit_s`` 0."""
    import dataclasses

    from autotune.catalog import kernels_donor
    from autotune.kernel_table import table_path
    from autotune.predictor import history_path

    history = history_path(profile, run_dir.parent)
    table = table_path(profile, run_dir.parent)  # filled where kernels are timed here (a local profile)
    donor = kernels_donor(profile)
    given = table_path(donor, run_dir.parent) if donor is not None else None
    files = tuple((str(f), _file_state(f)) for f in (history, table, given) if f is not None)
    slot = (profile.model_dump_json(), predictor, constraint_first, tuning_db, files)
    if slot in _FITTED:
        return dataclasses.replace(_FITTED[slot], fit_s=0.0)
    fitted = _fit_screening(profile, history, table, donor, given, predictor, constraint_first, tuning_db)
    _FITTED.clear()  # the newest only: older states of the files do not come back
    _FITTED[slot] = fitted
    return fitted


def _fit_screening(
    profile: DeviceProfile,
    history: Path,
    table: Path,
    donor: DeviceProfile | None,
    given: Path | None,
    predictor: bool,
    constraint_first: bool,
    tuning_db: str | None,
) -> Any:
    from autotune.blend import choose
    from autotune.kernel_predictor import fit_kernels
    from autotune.predictor import MAX_HISTORY, LatencyPredictor, environment_key, load_history
    from autotune.screening import Screening

    key = environment_key(profile)
    t_fit = time.perf_counter()
    recs = load_history(history, key)[-MAX_HISTORY:]  # one reading: both predictors score the same records
    fitted = LatencyPredictor().fit([r["features"] for r in recs], [r["latency_ms"] for r in recs])
    donated = (given, environment_key(donor)) if given is not None and donor is not None else None
    kernels = fit_kernels(history, table, key, donated, records=recs) if predictor else None
    blend = choose(fitted, kernels)
    better = kernels is not None and blend is not None and blend.weight > 0
    return Screening(
        fit_s=time.perf_counter() - t_fit,
        constraint_first=constraint_first,
        predictor=fitted if predictor else None,
        history=history,
        key=key,
        seen=fitted.range_,
        kernels=kernels if better else None,
        blend=blend if better else None,
        table=table,
        tuning_db=tuning_db,
    )


def _write_traceback(work_dir: Path, trial_id: str, stage: str, text: str) -> Path:
    """Write the child's traceback to ``<work_dir>/traceback.txt``; return its path."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / TRACEBACK_FILE
    path.write_text(f"trial {trial_id}, in stage {stage!r}:\n{text}")
    return path


def run_trial(config: dict[str, Any], *, worker: Worker) -> None:
    """Ray Tune function trainable (``tune.with_parameters(run_trial, worker=...)``)."""
    worker.run_trial(config)
