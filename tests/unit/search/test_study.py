"""The run's Optuna study: sampler registry, storage, priors, re-queue and zombie sweep."""

from __future__ import annotations

import optuna
import pytest
from conftest import REPO
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from autotune.errors import UserError
from autotune.search import study as studies
from autotune.search.samplers import MeasuredStartup, trained
from autotune.validate import load_space


@pytest.fixture
def space():
    return load_space(REPO / "tests" / "fixtures" / "tiny_cnn.yaml")


def test_sampler_registry():
    assert list(studies.SAMPLERS) == ["nsga2", "random", "tpe"]
    tpe = studies.make_sampler("tpe", 0)
    assert isinstance(tpe, MeasuredStartup) and isinstance(tpe.sampler, optuna.samplers.TPESampler)
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


def _rows(space):
    """Leaderboard rows of tiny_cnn in each status (sampled parameters as the search stores them)."""
    arch = {"arch.stages": 1, "arch.width_mult": 0.5, "arch.kernel_0": 3, "arch.se": False, "arch.act": "relu"}
    train = {"train.optimizer": "adam", "train.lr": 0.005}
    base = {**arch, **train}
    return [
        {"trial_id": "a", "status": "ok", "val_accuracy": 0.9, "accuracy": 0.85, "latency_ms": 1.0, **base},
        {"trial_id": "b", "status": "infeasible", "val_accuracy": 0.8, "latency_ms": 60.0, **base},
        {"trial_id": "c", "status": "infeasible", "latency_pred_ms": 70.0, **base},  # screened before training
        {"trial_id": "d", "status": "pruned", "val_accuracy": 0.5, "epochs": 1, **base},  # stopped early
        {"trial_id": "e", "status": "failed", "error": "compile: boom", **base},
    ]


def test_an_unreadable_study_is_refused_and_rebuilt_from_the_rows(space, tmp_path):
    from autotune.config.load import load_profile

    (tmp_path / "study.db").write_bytes(b"this is not a SQLite database" * 100)
    (tmp_path / "tune").mkdir()
    with pytest.raises(UserError, match="study cannot be opened") as err:
        studies.check_study(tmp_path, 5)
    assert err.value.file == str(tmp_path / "study.db") and "--rebuild-study" in err.value.hint
    rows = _rows(space)
    profile = load_profile(REPO / "tests/fixtures/host_fast.yaml")
    aside = studies.rebuild_study(space, profile, tmp_path, rows, learned=0.85)
    assert aside.read_bytes().startswith(b"this is not") and not (tmp_path / "tune").exists()
    studies.check_study(tmp_path, 5)  # opens now
    trials = optuna.load_study(study_name=studies.STUDY_NAME, storage=studies.storage(tmp_path)).trials
    assert [t.user_attrs["trial_id"] for t in trials] == ["a", "b", "c", "d", "e"]
    states = [t.state for t in trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED, TrialState.FAIL]
    assert trials[0].values == [0.9, 1.0] and trials[1].values == [0.8, 60.0]  # selected on validation accuracy
    assert trials[0].params == {k: v for k, v in rows[0].items() if k.startswith(("arch.", "train."))}
    constraints = [t.system_attrs.get("constraints:latency_ms") for t in trials]  # latency_ms <= 50, as the search
    assert constraints[0] < 0 and constraints[1] > 0 and constraints[2] > 0 and constraints[4] is None  # sets them
    learned = [t.system_attrs.get("constraints:learned") for t in trials]  # trained rows: over the floor?
    assert learned[0] < 0 and learned[1] > 0 and learned[2] is None and learned[4] is None
    assert [trained(t) for t in trials] == [True, True, False, True, False]  # TPE's start-up counts these


def test_a_missing_study_is_refused_when_trials_finished(tmp_path):
    with pytest.raises(UserError, match="the file is missing"):
        studies.check_study(tmp_path, 2)
    studies.check_study(tmp_path, 0)  # stopped before the study was made: the resume makes it


def test_finished_trials_without_a_row_run_again(space, tmp_path):
    study = studies.open_study(space, tmp_path)
    dist = {"arch.stages": IntDistribution(1, 2)}
    kept, torn = study.ask(dist), study.ask(dist)
    study.tell(kept, [0.9, 1.0])
    study.tell(torn, [0.8, 2.0])  # told COMPLETE, but its row was torn off trials.jsonl
    studies.add_priors(study, ({"params": {"arch.stages": 1}, "distributions": dist, "values": [0.5, 1.0]},))
    rows = [{"trial_id": "k", "study_trial": kept.number}]
    assert studies.requeue_lost(study, rows) == 1
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == torn.number
    assert retry.system_attrs["fixed_params"] == {"arch.stages": torn.params["arch.stages"]}
    assert studies.requeue_lost(study, rows) == 0  # once
