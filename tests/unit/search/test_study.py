"""The run's Optuna study: sampler registry, storage, priors, re-queue and zombie sweep."""

from __future__ import annotations

import optuna
import pytest
from conftest import REPO
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from autotune.errors import UserError
from autotune.search import study as studies
from autotune.validate import load_space


@pytest.fixture
def space():
    return load_space(REPO / "tests" / "fixtures" / "tiny_cnn.yaml")


def test_sampler_registry():
    assert list(studies.SAMPLERS) == ["nsga2", "random", "tpe"]
    assert isinstance(studies.make_sampler("tpe", 0), optuna.samplers.TPESampler)
    assert isinstance(studies.make_sampler("nsga2", 0), optuna.samplers.NSGAIISampler)
    assert isinstance(studies.make_sampler("random", 0), optuna.samplers.RandomSampler)
    with pytest.raises(UserError, match="unknown sampler 'tpee'") as err:
        studies.make_sampler("tpee", 0)
    assert "did you mean 'tpe'" in err.value.render()


def test_open_study_has_the_spaces_directions_and_reopens(space, tmp_path):
    study = studies.open_study(space, tmp_path)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert (tmp_path / "study.db").exists()
    study.enqueue_trial({"arch.stages": 1})
    again = studies.open_study(space, tmp_path)
    assert again.study_name == studies.STUDY_NAME and len(again.trials) == 1


def test_requeue_and_sweep(space, tmp_path):
    study = studies.open_study(space, tmp_path)
    dist = IntDistribution(1, 2)
    t = study.ask({"arch.stages": dist})  # left RUNNING, as a crash leaves it
    assert studies.requeue_in_flight(study) == 1
    assert study.trials[t.number].state == TrialState.FAIL
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == t.number
    study.ask({"arch.stages": dist})  # takes the re-queued trial; RUNNING again
    assert studies.sweep_zombies(tmp_path, pruned=True) == 1
    assert study.trials[-1].state == TrialState.PRUNED
    study.ask({"arch.stages": dist})
    assert studies.sweep_zombies(tmp_path) == 1
    assert study.trials[-1].state == TrialState.FAIL
    (tmp_path / "empty").mkdir()
    assert studies.sweep_zombies(tmp_path / "empty") == 0  # no study yet


def test_priors_are_completed_warm_start_trials(space, tmp_path):
    study = studies.open_study(space, tmp_path)
    prior = {
        "params": {"arch.stages": 2},
        "distributions": {"arch.stages": IntDistribution(1, 2)},
        "values": [0.9, 3.0],
    }
    studies.add_priors(study, (prior,))
    (t,) = study.trials
    assert t.state == TrialState.COMPLETE and t.values == [0.9, 3.0] and t.user_attrs == {"warm_start": True}
