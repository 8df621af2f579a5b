"""The run's Optuna study in ``<run>/study.db``: samplers, storage, priors and crash clean-up.

The study is the search's durable truth: ``OptunaSearch`` attaches to it by name, a resume re-runs
what a crash left in flight, and the sweeps close what a stopped run left ``RUNNING`` (TPE's
``constant_liar`` would otherwise keep treating those as pending). Optuna is imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autotune.config.search_space import SearchSpace
from autotune.registry import Registry

__all__ = [
    "SAMPLERS",
    "STUDY_NAME",
    "add_priors",
    "make_sampler",
    "open_study",
    "requeue_in_flight",
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

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=6)


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
