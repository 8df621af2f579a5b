"""The worker side's pure helpers: Optuna objective values, stored rows, timelines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import REPO

from autotune.search.trainable import objective_values, stored_row, write_timeline
from autotune.validate import load_space


@pytest.fixture
def space():
    return load_space(REPO / "tests" / "fixtures" / "tiny_cnn.yaml")


def test_objective_values_are_finite_or_none(space):
    assert objective_values({"val_accuracy": 0.5, "latency_ms": 2.0}, space.objectives) == {
        "obj/accuracy": 0.5,
        "obj/latency_ms": 2.0,
    }
    assert objective_values({"val_accuracy": math.nan}, space.objectives) == {
        "obj/accuracy": None,
        "obj/latency_ms": None,
    }


def test_stored_row_returns_a_finished_trials_first_row(tmp_path):
    assert stored_row(tmp_path, "t1") is None
    lines = [
        {"trial_id": "t1", "status": "pruned"},
        {"trial_id": "t10", "status": "ok"},
        {"trial_id": "t1", "status": "failed", "error": "compile: x"},
    ]
    (tmp_path / "trials.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n{broken\n")
    assert stored_row(tmp_path, "t1") == lines[2]
    assert stored_row(tmp_path, "t2") is None


def test_timeline(tmp_path):
    write_timeline(tmp_path / "t", 1.0, 2.5, [(1.2, 1.4)])
    assert json.loads((tmp_path / "t" / "timeline.json").read_text()) == {
        "started": 1.0,
        "finished": 2.5,
        "quiet_waits": [[1.2, 1.4]],
    }


def test_a_worker_refits_its_screening_only_when_what_it_was_fitted_on_changed(tmp_path):
    from autotune.api import load_profile
    from autotune.predictor import environment_key, history_path, record_measurement
    from autotune.search.trainable import _screening

    profile = load_profile("host")
    run_dir = tmp_path / "run"
    history, key = history_path(profile, tmp_path), environment_key(profile)
    rng = np.random.default_rng(0)

    def measure(n: int) -> None:
        for _ in range(n):
            f = {"n_conv3": 1.0, "macs_conv3": float(rng.integers(1e4, 1e6))}
            record_measurement(history, key, f, 0.01 + 2e-8 * f["macs_conv3"])

    measure(10)
    first = _screening(profile, run_dir, True, True, None)
    assert first.predictor.samples_ == 10
    again = _screening(profile, run_dir, True, True, None)  # nothing new measured (a trial screened out)
    assert again is not first and again.predictor is first.predictor and again.fit_s == 0.0  # no fit, none counted
    assert _screening(profile, run_dir, False, True, None).predictor is None  # other settings: their own fit
    measure(1)
    grown = _screening(profile, run_dir, True, True, None)
    assert grown.predictor is not first.predictor and grown.predictor.samples_ == 11  # refitted
