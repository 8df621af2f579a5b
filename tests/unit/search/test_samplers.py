"""TPE's start-up counts trained trials: screened ones (PRUNED, constraints only) keep it random,
early-stopped ones (PRUNED, marked with their last epoch) end it like measured ones."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from autotune.search.samplers import STOPPED_AT_EPOCH, MeasuredStartup


class _Recording(optuna.samplers.RandomSampler):
    """The wrapped sampler: counts the parameters it was asked for."""

    calls = 0

    def sample_independent(self, study, trial, param_name, param_distribution):
        type(self).calls += 1
        return super().sample_independent(study, trial, param_name, param_distribution)


def _ask(study):
    trial = study.ask()
    trial.suggest_int("stages", 1, 4)
    trial.suggest_float("width", 0.5, 1.5)
    return trial


def test_screened_trials_do_not_end_the_start_up_and_measured_ones_do():
    inner = _Recording(seed=0)
    _Recording.calls = 0
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=MeasuredStartup(inner, 2, seed=0))
    for _ in range(5):  # screened: told PRUNED with a constraint, never measured
        trial = _ask(study)
        trial.set_constraint("latency_ms", 0.01)
        study.tell(trial, state=TrialState.PRUNED)
    assert _Recording.calls == 0 and not study.sampler.started(study)
    for value in (0.9, 0.8):
        study.tell(_ask(study), [value, 0.03])
    assert _Recording.calls == 0 and study.sampler.started(study)
    _ask(study)
    assert _Recording.calls == 2  # both parameters of the next trial come from the wrapped sampler


def test_trials_stopped_early_after_training_end_the_start_up_too():
    inner = _Recording(seed=0)
    _Recording.calls = 0
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=MeasuredStartup(inner, 3, seed=0))
    trial = _ask(study)
    trial.set_constraint("latency_ms", 0.01)
    study.tell(trial, state=TrialState.PRUNED)  # screened
    for _ in range(2):  # stopped early at the rung, as the adapter tells it
        trial = _ask(study)
        trial.set_user_attr(STOPPED_AT_EPOCH, 2)
        study.tell(trial, state=TrialState.PRUNED)
    assert not study.sampler.started(study)  # two trained of three: still random
    study.tell(_ask(study), [0.9, 0.03])
    assert _Recording.calls == 0 and study.sampler.started(study)
    _ask(study)
    assert _Recording.calls == 2


class _Relative(optuna.samplers.RandomSampler):
    """A wrapped sampler with a joint (relative) search space: it fixes ``stages`` to 3."""

    def infer_relative_search_space(self, study, trial):
        return {"stages": optuna.distributions.IntDistribution(1, 4)}

    asked: list[int] = []

    def sample_relative(self, study, trial, search_space):
        type(self).asked.append(trial.number)
        return {"stages": 3}


def test_after_start_up_the_wrapped_sampler_samples_jointly_too():
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=MeasuredStartup(_Relative(), 2, seed=0))
    stages = []
    for value in (0.9, 0.5, 0.7, 0.6):
        trial = _ask(study)
        stages.append(trial.params["stages"])
        study.tell(trial, [value, 0.03])
    assert _Relative.asked == [2, 3] and stages[2:] == [3, 3]


def test_tpe_behind_it_runs_a_multi_objective_study_with_constraints():
    tpe = optuna.samplers.TPESampler(seed=0, n_startup_trials=2)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=MeasuredStartup(tpe, 2, seed=0))
    for _ in range(8):
        trial = _ask(study)
        trial.set_constraint("latency_ms", 0.01 * (trial.params["stages"] - 2))
        study.tell(trial, [trial.params["width"], 0.01 * trial.params["stages"]])
    best = study.best_trials
    assert best and all(t.params["stages"] <= 2 for t in best)  # the front holds feasible trials only
