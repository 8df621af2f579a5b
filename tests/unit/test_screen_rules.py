"""Screening before training: which candidates qualify, what the prediction decides."""

from __future__ import annotations

import pytest

import autotune
from autotune.compress.pipeline import changes_structure, plan_compression
from autotune.constraints import weight_free_bounds as _weight_free_bounds
from autotune.predictor import Prediction
from autotune.records import TrialConfig
from autotune.screening import _in_doubt, _predicted_violation


def _cfg(compress: dict) -> TrialConfig:
    return TrialConfig(trial_id="t", params={}, arch={}, train=None, seed=0, compress=compress)


@pytest.mark.parametrize(
    ("compress", "fixed"),
    [
        ({}, True),
        ({"distill": {"enabled": True, "alpha": 0.5, "teacher": {}}}, True),
        ({"prune": {"enabled": True, "kind": "unstructured", "ratio": 0.5}}, True),  # dense kernels: same shape
        ({"prune": {"enabled": True, "kind": "structured", "ratio": 0.5}}, False),
        ({"prune": {"enabled": False, "kind": "structured"}}, True),
        ({"lowrank": {"enabled": True, "rank_ratio": 0.5}}, False),
        ({"quantize": {"enabled": True, "deploy": "int8"}}, False),
        ({"quantize": {"enabled": False}}, True),
    ],
)
def test_structure_fixed(compress, fixed):
    """What screening asks the passes: whether the deployed structure is fixed before training."""
    structure_fixed = not changes_structure(plan_compression(_cfg(compress).compress))
    assert structure_fixed is fixed


def _space(write_yaml, constraints: str):
    path = write_yaml(
        f"""
        task: {{data: digits, model: mobilenet}}
        arch: {{stages: 1}}
        objectives: {{latency_ms: min}}
        constraints: {constraints}
        """
    )
    return autotune.load_space(path)


def test_prediction_decides_only_when_sure(write_yaml):
    space = _space(write_yaml, "{latency_ms: {max: 1.0}}")
    sure, doubt = _predicted_violation(Prediction(3.0, 0.1, 100), space, 3.0)  # 3·e^-0.3 = 2.2 > 1
    assert sure and sure.startswith("latency_ms~3>1") and not doubt
    sure, doubt = _predicted_violation(Prediction(0.3, 0.1, 100), space, 3.0)  # 0.3·e^0.2 < 1: clearly fine
    assert sure is None and not doubt
    sure, doubt = _predicted_violation(Prediction(0.9, 0.1, 100), space, 3.0)  # near the bound
    assert sure is None and doubt
    assert _predicted_violation(None, space, 3.0) == (None, True)


def test_lower_bounds_are_screened_too(write_yaml):
    space = _space(write_yaml, "{latency_ms: {min: 1.0}}")
    sure, _ = _predicted_violation(Prediction(0.1, 0.1, 100), space, 3.0)
    assert sure and "<1" in sure


def test_cheap_estimates_rule_out_memory_limits(write_yaml):
    host = autotune.load_profile("host")  # limits.memory_bytes: 1 GiB
    space = _space(write_yaml, "{}")
    bounds = _weight_free_bounds(space, host)
    assert set(bounds) == {"peak_mem_bytes"}
    small = {"params": 1e4, "out_conv3": 1e4}
    assert not _in_doubt(bounds, small, latency_doubt=False)  # 80 KB against 1 GiB: no need to time it
    huge = {"params": 3e8, "out_conv3": 1e4}
    assert _in_doubt(bounds, huge, latency_doubt=False)
    assert _in_doubt({"energy_mj": (None, 1.0)}, small, latency_doubt=False)  # no cheap estimate
    assert _in_doubt({"latency_ms": (None, 1.0)}, small, latency_doubt=True)
    assert not _in_doubt({"latency_ms": (None, 1.0), "macs": (None, 5.0)}, small, latency_doubt=False)


def test_without_a_prediction_only_a_near_bound_is_timed(write_yaml):
    from autotune.screening import _doubt_without_prediction

    space = _space(write_yaml, "{latency_ms: {max: 5.0}}")
    assert _doubt_without_prediction(None, space)  # nothing measured on this profile yet
    assert not _doubt_without_prediction((0.01, 0.6), space)  # every latency far below the bound
    assert _doubt_without_prediction((0.01, 3.0), space)  # within a factor 2
    assert not _doubt_without_prediction((0.01, 3.0), _space(write_yaml, "{macs: {max: 5}}"))


def test_an_unsure_predictor_doubts_only_near_the_bound(write_yaml):
    space = _space(write_yaml, "{latency_ms: {max: 5.0}}")
    # sigma 1.5: e^(2·1.5) = 20x would put a 0.6 ms network "near" 5 ms; the doubt factor stays 2
    assert _predicted_violation(Prediction(0.6, 1.5, 10), space, 3.0) == (None, False)
    assert _predicted_violation(Prediction(3.0, 1.5, 10), space, 3.0) == (None, True)
