"""The latency predictor: structural features, the fit, its uncertainty, the per-profile history."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from autotune.predictor import (
    MIN_TO_PREDICT,
    LatencyPredictor,
    Prediction,
    hit_rate,
    load_history,
    record_measurement,
    structure_features,
)


def _net(width: int = 8) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 5, padding=2, groups=width),
        nn.Conv2d(width, 12, 1),
        nn.Hardswish(),
        nn.Flatten(),
        nn.Linear(12 * 8 * 8, 10),
    )


def test_structure_features_count_operators_and_macs():
    f = structure_features(_net(), (1, 8, 8))
    assert f["n_conv3"] == f["n_dw5"] == f["n_pw1"] == f["n_linear"] == 1
    assert f["macs_conv3"] == 8 * 8 * 8 * 9 * 1  # output elements x k*k x input channels
    assert f["macs_dw5"] == 8 * 8 * 8 * 25  # depthwise: one input channel per output
    assert f["macs_pw1"] == 12 * 8 * 8 * 8
    assert f["macs_linear"] == 10 * 768
    assert f["ragged_pw1"] == f["macs_pw1"]  # 12 output channels: not a multiple of 8
    assert f["ragged_conv3"] == 0
    assert f["n_relu"] == f["n_hardswish"] == 1 and "n_batchnorm2d" not in f  # BN folds away
    assert f["params"] == sum(p.numel() for p in _net().parameters())
    assert f["fp16"] == f["int8"] == 0
    assert structure_features(_net(), (1, 8, 8), precision="int8")["int8"] == 1


def test_structure_features_leave_the_model_as_it_was():
    model = _net().train()
    structure_features(model, (1, 8, 8))
    assert model.training
    assert not any(m._forward_hooks for m in model.modules())


def _synthetic(n: int, seed: int = 0) -> tuple[list[dict[str, float]], list[float]]:
    """Candidates whose latency is a known per-operator cost (+1 % noise)."""
    rng = np.random.default_rng(seed)
    feats, lats = [], []
    for _ in range(n):
        f = {
            "n_conv3": 1.0,
            "macs_conv3": float(rng.integers(1e4, 1e6)),
            "n_pw1": float(rng.integers(1, 12)),
            "macs_pw1": float(rng.integers(1e4, 3e6)),
        }
        lat = 0.005 + 2e-8 * f["macs_conv3"] + 0.002 * f["n_pw1"] + 5e-8 * f["macs_pw1"]
        feats.append(f)
        lats.append(lat * (1 + 0.01 * rng.standard_normal()))
    return feats, lats


def test_predictor_learns_per_operator_costs():
    feats, lats = _synthetic(80)
    p = LatencyPredictor().fit(feats[:60], lats[:60])
    errs = [p.predict(f).latency_ms / y - 1 for f, y in zip(feats[60:], lats[60:], strict=True)]
    assert np.mean(np.abs(errs) <= 0.05) >= 0.9
    assert p.sigma_ < 0.1
    pred = p.predict(feats[0])
    lo, hi = pred.bounds(3)
    value = pred.latency_ms  # a prediction, not a timing
    assert lo < value < hi and pred.samples == 60


def test_more_work_never_predicts_less_time():
    """Every per-operator cost is non-negative: a fit on a few measurements with correlated features
    (elements written follow MACs) cannot trade one against another and extrapolate below zero."""
    for seed in range(10):
        feats, lats = _synthetic(10, seed=seed)  # few measurements: no boosted correction
        rng = np.random.default_rng(seed)
        feats = [{**f, "elems_pw1": f["macs_pw1"] / 50 * (1 + 0.3 * rng.standard_normal())} for f in feats]
        p = LatencyPredictor().fit(feats, lats)
        for name, value in feats[0].items():
            assert p.predict({**feats[0], name: 3 * value}).latency_ms >= p.predict(feats[0]).latency_ms, (seed, name)


def test_a_lower_precision_can_be_predicted_faster():
    feats, lats = _synthetic(12)  # 24 measurements: the ridge alone, no boosted correction
    int8 = [{**f, "int8": 1.0} for f in feats]
    p = LatencyPredictor().fit(feats + int8, lats + [y - 0.004 for y in lats])  # int8 saves 4 µs each
    assert p.predict({**feats[0], "int8": 1.0}).latency_ms < p.predict(feats[0]).latency_ms


def test_predictor_needs_some_history():
    feats, lats = _synthetic(MIN_TO_PREDICT - 1)
    p = LatencyPredictor().fit(feats, lats)
    assert not p.ready and p.predict(feats[0]) is None
    assert LatencyPredictor().fit([], []).predict({"n_conv3": 1.0}) is None


def test_unseen_operator_widens_the_uncertainty():
    feats, lats = _synthetic(40)
    p = LatencyPredictor().fit(feats, lats)
    seen = p.predict(feats[0])
    unseen = p.predict({**feats[0], "n_dw7": 2.0, "macs_dw7": 1e5})
    assert unseen.sigma == pytest.approx(2 * seen.sigma)


def test_prediction_bounds_are_multiplicative():
    lo, hi = Prediction(latency_ms=1.0, sigma=0.1, samples=50).bounds(2)
    assert lo == pytest.approx(math.exp(-0.2)) and hi == pytest.approx(math.exp(0.2))


def test_history_keeps_comparable_measurements_only(tmp_path):
    path = tmp_path / ".predictor" / "host.jsonl"
    key = {"profile": "host", "cpu_model": "A", "tvm_version": "0.27"}
    record_measurement(path, key, {"n_conv3": 1.0}, 0.5, run="r", trial_id="t1")
    record_measurement(path, {**key, "cpu_model": "B"}, {"n_conv3": 1.0}, 0.9)
    with open(path, "a") as f:
        f.write('{"profile": "host", "cpu_mo')  # a line torn by a crash
    recs = load_history(path, key)
    assert [r["latency_ms"] for r in recs] == [0.5]
    assert recs[0]["trial_id"] == "t1" and recs[0]["features"] == {"n_conv3": 1.0}
    assert load_history(tmp_path / "missing.jsonl", key) == []
    assert all(json.loads(line) for line in path.read_text().splitlines()[:2])


def test_hit_rate_counts_predictions_within_ten_percent():
    rows = [
        {"latency_ms": 1.0, "latency_pred_ms": 1.05},
        {"latency_ms": 1.0, "latency_pred_ms": 1.2},
        {"latency_ms": 2.0, "latency_pred_ms": 1.9},
        {"latency_ms": 1.0},  # no prediction
        {"latency_pred_ms": 3.0},  # skipped on the prediction: nothing measured
    ]
    assert hit_rate(rows) == (pytest.approx(2 / 3), 3)
    assert hit_rate([]) == (None, 0)


def test_real_models_give_finite_features():
    from autotune.models import MODEL_FAMILIES, build_model

    torch.manual_seed(0)
    model = build_model(MODEL_FAMILIES.get("mobilenet"), {"stages": 2, "se": True}, (1, 8, 8), 10)
    f = structure_features(model, (1, 8, 8))
    assert all(math.isfinite(v) and v >= 0 for v in f.values())
    assert f["n_dw3"] >= 2 and f["macs_linear"] > 0


def test_fit_history_fits_the_comparable_measurements(tmp_path):
    from autotune.predictor import fit_history

    path = tmp_path / "h.jsonl"
    feats, lats = _synthetic(12)
    for f, y in zip(feats[:10], lats[:10], strict=True):
        record_measurement(path, {"profile": "p"}, f, y)
    record_measurement(path, {"profile": "other"}, feats[10], lats[10])
    fitted = fit_history(path, {"profile": "p"})
    assert fitted.samples_ == 10 and fitted.range_ == (min(lats[:10]), max(lats[:10]))
    assert fit_history(tmp_path / "none.jsonl", {"profile": "p"}).range_ is None
