"""The run's Optuna study in ``<run>/study.db``: samplers, storage, priors and crash clean-up.

The study is the search's durable truth: ``OptunaSearch`` attaches to it by name, a resume re-runs
what a crash left in flight, and the sweeps close what a stopped run left ``RUNNING`` (TPE's
``constant_liar`` would otherwise keep treating those as pending). Optuna is imported lazily.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import SearchSpace, metric_column
from autotune.errors import UserError
from autotune.registry import Registry

__all__ = [
    "SAMPLERS",
    "STUDY_NAME",
    "add_priors",
    "check_study",
    "make_sampler",
    "open_study",
    "rebuild_study",
    "requeue_in_flight",
    "requeue_lost",
    "storage",
    "sweep_zombies",
]

STUDY_NAME = "autotune"

#: Optuna sampler factories (``seed -> sampler``) a search may use: multi-objective TPE (the
#: default; it reads the trials' constraint values, so infeasible candidates steer it away),
#: NSGA-II, or uniform random sampling.
SAMPLERS: Registry[Callable[[int], Any]] = Registry("sampler")


@SAMPLERS.register("tpe")
def _tpe(seed: int) -> Any:
    import optuna

    from autotune.search.samplers import MeasuredStartup

    # start-up counts measured trials only: screened ones carry no objective values (samplers.py)
    return MeasuredStartup(optuna.samplers.TPESampler(seed=seed, n_startup_trials=6), n_startup=6, seed=seed)


@SAMPLERS.register("nsga2")
def _nsga2(seed: int) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)


@SAMPLERS.register("random")
def _random(seed: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def make_sampler(name: str, seed: int) -> Any:
    """A fresh sampler ``name`` seeded with ``seed`` (Optuna never stores the sampler in the study).

    Raises:
        UserError: ``name`` is not in ``SAMPLERS``.
    """
    return SAMPLERS.get(name, key="--sampler")(seed)


def storage(run_dir: Path) -> Any:
    """The run's study storage: an ``RDBStorage`` on ``<run_dir>/study.db`` (OptunaSearch wants an instance)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.RDBStorage(f"sqlite:///{(run_dir / 'study.db').resolve()}")


def open_study(space: SearchSpace, run_dir: Path) -> Any:
    """Create (or open) the run's study with the space's directions; OptunaSearch attaches to it."""
    import optuna

    directions = ["maximize" if space.objectives[n] == "max" else "minimize" for n in space.objectives]
    return optuna.create_study(
        study_name=STUDY_NAME, storage=storage(run_dir), directions=directions, load_if_exists=True
    )


def add_priors(study: Any, priors: tuple[Mapping[str, Any], ...]) -> None:
    """Add an earlier run's finished trials to the study as completed observations (``autotune.warmstart``)."""
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


def requeue_in_flight(study: Any) -> int:
    """Close trials a crash left RUNNING (FAIL) and enqueue their parameters to run again; return how many."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=[TrialState.RUNNING])
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return len(stale)


def requeue_lost(study: Any, rows: Sequence[Mapping[str, Any]]) -> int:
    """Enqueue again the finished study trials that have no leaderboard row (their row was torn by a
    power loss, or not written when the disk filled): the leaderboard is the truth. Trials already
    re-queued, warm-start priors and rebuilt trials are left alone. Returns how many."""
    from optuna.trial import TrialState

    have = {int(r["study_trial"]) for r in rows if isinstance(r.get("study_trial"), int | float)}
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    lost = [
        t
        for t in trials
        if t.state in finished
        and t.number not in have
        and t.number not in retried
        and not (t.user_attrs.get("warm_start") or t.user_attrs.get("rebuilt"))
    ]
    for t in lost:
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return len(lost)


def sweep_zombies(run_dir: Path, *, pruned: bool = False) -> int:
    """Close study trials left RUNNING (budget end: PRUNED; crash or interrupt: FAIL); return how many."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage(run_dir))
    except KeyError:
        return 0
    stale = study.get_trials(deepcopy=False, states=[TrialState.RUNNING])
    for t in stale:
        study.tell(t.number, state=TrialState.PRUNED if pruned else TrialState.FAIL)
    return len(stale)


def check_study(run_dir: Path, rows: int) -> None:
    """Open a resumed run's ``study.db`` and read its trials, before any work (a run with no finished
    trial and no study yet is fine: the resume makes the study).

    Raises:
        UserError: (the file) it cannot be opened or read; the hint offers ``--rebuild-study``.
    """
    import optuna

    path = run_dir / "study.db"
    if not path.exists() and not rows:
        return  # stopped before its study was made: the resume makes it
    try:
        if not path.exists():
            raise FileNotFoundError("the file is missing")
        optuna.load_study(study_name=STUDY_NAME, storage=storage(run_dir)).get_trials(deepcopy=False)
    except Exception as err:  # sqlite3/SQLAlchemy errors, a missing study (KeyError): all mean "unreadable"
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"the run's Optuna study cannot be opened: {reason}",
            file=str(path),
            key="--resume",
            hint=f"rebuild it from trials.jsonl ({rows} finished trials): autotune search --resume {run_dir} "
            "--rebuild-study",
        ) from None


def rebuild_study(
    space: SearchSpace,
    profile: DeviceProfile,
    run_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    learned: float | None = None,
) -> Path:
    """Replace the run's study with one rebuilt from its leaderboard rows; return where the old one went.

    The old ``study.db`` (and Tune's state in ``tune/``, which points into it) are moved aside with a
    time stamp. Each row becomes one finished trial with its sampled parameters: ``ok``/``infeasible``
    with finite objective values COMPLETE with them, other ``infeasible`` rows PRUNED, ``pruned``
    rows PRUNED (marked ``STOPPED_AT_EPOCH`` when trained), ``failed`` rows FAIL; constraint values
    as the search tells them (``learned``: the task's ``constraints.learned_floor``). The resumed
    run then goes on from the rebuilt study (``requeue_in_flight`` has nothing to re-run).
    """
    import math

    import optuna
    from optuna.trial import TrialState

    from autotune.constraints import violation_amounts
    from autotune.search.samplers import STOPPED_AT_EPOCH
    from autotune.space import PARAM_PREFIXES, distribution_of, param_specs

    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = run_dir / f"study.db.broken-{stamp}"
    if (run_dir / "study.db").exists():
        (run_dir / "study.db").rename(aside)
    if (run_dir / "tune").exists():
        shutil.move(run_dir / "tune", run_dir / f"tune.broken-{stamp}")
    study = open_study(space, run_dir)
    specs = param_specs(space)
    for row in rows:
        params, dists = {}, {}
        for key, value in row.items():
            if key.startswith(PARAM_PREFIXES) and value is not None:
                if (dist := distribution_of(specs, key, value)) is not None:
                    params[key], dists[key] = value, dist
        values = [row.get(metric_column(name)) for name in space.objectives]
        finite = all(isinstance(v, int | float) and math.isfinite(v) for v in values)
        status = row.get("status")
        if status in ("ok", "infeasible") and finite:
            state = TrialState.COMPLETE
        else:
            state = TrialState.FAIL if status == "failed" else TrialState.PRUNED
        told = (space.constraints or learned is not None) and status != "failed"
        constraints = violation_amounts(row, space, profile, learned) if told else None
        attrs = {"status": status, "trial_id": row.get("trial_id"), "rebuilt": True}
        if status == "pruned" and row.get("epochs"):  # stopped early after training, as the adapter marks it
            attrs[STOPPED_AT_EPOCH] = int(row["epochs"])
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                values=[float(v) for v in values] if state == TrialState.COMPLETE else None,
                params=params,
                distributions=dists,
                user_attrs=attrs,
                constraints=constraints,
            )
        )
    return aside
