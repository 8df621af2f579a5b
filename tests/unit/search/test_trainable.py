"""The worker side's pure helpers: Optuna objective values, stored rows, timelines."""

from __future__ import annotations

import json
import math

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
