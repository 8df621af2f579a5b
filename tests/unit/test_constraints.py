"""Constraint arithmetic: the floor a trained candidate must pass to have learned, and its amount."""

from __future__ import annotations

import math

import pytest
from conftest import REPO

from autotune.api import load_profile
from autotune.constraints import LEARNED_SE, learned_floor, violation_amounts
from autotune.validate import load_space


def test_the_learned_floor_is_the_majority_share_plus_standard_errors():
    balanced = [i % 10 for i in range(300)]
    assert learned_floor(balanced) == pytest.approx(0.1 + LEARNED_SE * math.sqrt(0.1 * 0.9 / 300))
    skewed = [0] * 80 + [1] * 20  # always answering 0 is right 80 % of the time
    assert learned_floor(skewed) == pytest.approx(0.8 + LEARNED_SE * 0.04)
    assert learned_floor([]) is None


def test_a_trained_candidate_at_chance_is_told_infeasible():
    space = load_space(REPO / "tests" / "fixtures" / "tiny_cnn.yaml")
    profile = load_profile(REPO / "tests" / "fixtures" / "host_fast.yaml")
    floor = learned_floor([i % 10 for i in range(300)])
    at_chance = violation_amounts({"val_accuracy": 0.1, "latency_ms": 1.0}, space, profile, floor)
    assert at_chance["learned"] == pytest.approx((floor - 0.1) / floor) and at_chance["learned"] > 0
    assert at_chance["latency_ms"] < 0  # fast, and still no trade-off
    assert violation_amounts({"val_accuracy": 0.9, "latency_ms": 1.0}, space, profile, floor)["learned"] == -1.0
    assert "learned" not in violation_amounts({"latency_pred_ms": 70.0}, space, profile, floor)  # not trained
    assert "learned" not in violation_amounts({"val_accuracy": 0.1}, space, profile)  # no floor given
    latency_only = space.model_copy(update={"objectives": {"latency_ms": "min"}})
    assert "learned" not in violation_amounts({"val_accuracy": 0.1}, latency_only, profile, floor)
