"""The Optuna adapter: define-by-run sampling, and the searcher telling Optuna each trial's real state."""

from __future__ import annotations

import json

import optuna
import pytest
from conftest import REPO
from optuna.trial import TrialState

from autotune.search import study as studies
from autotune.search.adapter import define_by_run, make_searcher
from autotune.search.samplers import STOPPED_AT_EPOCH, trained
from autotune.validate import load_space

pytestmark = pytest.mark.ray


@pytest.fixture
def space():
    return load_space(REPO / "tests" / "fixtures" / "tiny_cnn.yaml")


def test_define_by_run_samples_the_space_and_names_the_study_trial(space, tmp_path):
    study = studies.open_study(space, tmp_path)
    trial = study.ask()
    config = define_by_run(trial, space)
    assert config["study_trial"] == trial.number == 0
    assert 1 <= config["arch.stages"] <= 2 and "train.lr" in config


@pytest.mark.parametrize(
    "result,error,state",
    [
        ({"final": True, "status": "ok", "obj/accuracy": 0.9, "obj/latency_ms": 1.0}, False, TrialState.COMPLETE),
        ({"final": True, "status": "ok", "obj/accuracy": None, "obj/latency_ms": 1.0}, False, TrialState.FAIL),
        ({"final": True, "status": "infeasible", "obj/accuracy": None}, False, TrialState.PRUNED),
        ({"final": True, "status": "failed"}, False, TrialState.FAIL),
        ({"epoch": 2}, False, TrialState.PRUNED),  # stopped early by ASHA
        (None, True, TrialState.FAIL),
    ],
)
def test_searcher_tells_the_real_state(space, tmp_path, result, error, state):
    studies.open_study(space, tmp_path)
    searcher = make_searcher(space, tmp_path, seed=0)
    searcher.set_search_properties(None, None, {})
    assert searcher.suggest("t1")["study_trial"] == 0
    if result is not None and result.get("final"):
        result["violation_amounts"] = json.dumps({"latency_ms": -0.5})
    searcher.on_trial_complete("t1", result=result, error=error)
    (t,) = optuna.load_study(study_name=studies.STUDY_NAME, storage=studies.storage(tmp_path)).trials
    assert t.state == state
    if result and result.get("final"):
        assert t.system_attrs.get("constraints:latency_ms") == -0.5 and t.user_attrs["status"] == result["status"]
    # the early-stopped trial is marked with its last epoch: it was trained, and ends TPE's start-up
    assert t.user_attrs.get(STOPPED_AT_EPOCH) == (2 if result == {"epoch": 2} else None)
    assert trained(t) == (state == TrialState.COMPLETE or result == {"epoch": 2})


def test_a_suggestion_waits_for_a_timing_on_this_machine(space, tmp_path):
    import threading

    from autotune.quiet import QuietLock, quiet_dir

    studies.open_study(space, tmp_path)
    searcher = make_searcher(space, tmp_path, seed=0)
    searcher.set_search_properties(None, None, {})
    timing, holding, asking, events = QuietLock(quiet_dir(tmp_path)), threading.Event(), threading.Event(), []
    flock = searcher.quiet._flock

    def ask(fd: int, op: int) -> None:  # the suggestion asks for the lock: say so, then block on it
        if not asking.is_set():  # the turnstile first, then the lock itself
            events.append("asked")
            asking.set()
        flock(fd, op)

    searcher.quiet._flock = ask

    def time_a_candidate() -> None:
        with timing.exclusive():
            holding.set()
            asking.wait(timeout=60)  # an order, not a duration: released once the suggestion asked
            events.append("timed")

    timer = threading.Thread(target=time_a_candidate)
    timer.start()
    holding.wait()
    config = searcher.suggest("t1")
    events.append("suggested")
    timer.join()
    # the suggestion asked while the candidate was timed, and went on only after the timing ended
    assert config["study_trial"] == 0 and events == ["asked", "timed", "suggested"]
