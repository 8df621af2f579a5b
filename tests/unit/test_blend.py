"""Choosing between the network- and kernel-level predictors, or blending them, on cross-validated errors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from autotune.blend import WEIGHTS, Blend, choose
from autotune.predictor import LatencyPredictor, Prediction


def _fitted(errors, ready=True):
    e = np.asarray(errors, dtype=float)
    sigma = float(np.sqrt(np.nanmean(np.square(e)))) if ready else math.inf
    return SimpleNamespace(ready=ready, cv_log_ratios_=e, sigma_=sigma)


def test_errors_of_opposite_sign_are_blended_and_the_blend_beats_both():
    rng = np.random.default_rng(0)
    common = rng.normal(0, 0.08, 60)  # what each predictor gets wrong in opposite directions
    network = _fitted(common + rng.normal(0, 0.02, 60))
    kernels = _fitted(-common + rng.normal(0, 0.02, 60))
    blend = choose(network, kernels)
    assert 0 < blend.weight < 1 and blend.model == "blend"
    assert blend.sigma < min(network.sigma_, kernels.sigma_)
    rms = [np.sqrt(np.mean(np.square(w * kernels.cv_log_ratios_ + (1 - w) * network.cv_log_ratios_))) for w in WEIGHTS]
    assert blend.sigma == pytest.approx(min(rms))


def test_a_predictor_better_everywhere_is_kept_alone():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.1, 40)
    blend = choose(_fitted(noise), _fitted(noise / 10))  # same errors, ten times smaller
    assert blend.weight == 1.0 and blend.model == "kernels"
    blend = choose(_fitted(noise / 10), _fitted(noise))
    assert blend.weight == 0.0 and blend.model == "network"


def test_one_ready_predictor_is_used_alone_and_none_without_any():
    net = _fitted([0.1] * 10)
    assert choose(net, None).model == "network" and choose(net, _fitted([], ready=False)).model == "network"
    assert choose(_fitted([], ready=False), net).model == "kernels"
    assert choose(None, None) is None and choose(_fitted([], False), _fitted([], False)) is None


def test_unaligned_errors_fall_back_to_the_smaller_sigma():
    net, kern = _fitted([0.2] * 12), _fitted([0.1] * 10)  # different records: not comparable one by one
    blend = choose(net, kern)
    assert blend.model == "kernels" and blend.sigma == pytest.approx(0.1)
    few = choose(_fitted([0.2] * 12), _fitted([0.1] * 2 + [math.nan] * 10))  # too few records in common
    assert few.model == "kernels" and few.sigma == pytest.approx(0.1)


def test_a_blended_prediction_is_the_weighted_geometric_mean_and_widens_with_either_side():
    blend = Blend(0.25, 0.04, network_sigma=0.06, kernels_sigma=0.05)
    n, k = Prediction(2.0, 0.06, 30), Prediction(4.0, 0.05, 30, source="kernels")
    p = blend.predict(n, k)
    assert p.source == "blend" and p.latency_ms == pytest.approx(4.0**0.25 * 2.0**0.75)
    assert p.sigma == pytest.approx(0.04)
    wide = blend.predict(Prediction(2.0, 0.12, 30), Prediction(4.0, 0.13, 30, source="kernels"))  # unseen kinds
    extra_n, extra_k = math.sqrt(0.12**2 - 0.06**2), math.sqrt(0.13**2 - 0.05**2)
    assert wide.sigma == pytest.approx(math.sqrt(0.04**2 + (0.75 * extra_n) ** 2 + (0.25 * extra_k) ** 2))
    assert blend.predict(None, k) is k and blend.predict(n, None) is n and blend.predict(None, None) is None
    assert Blend(1.0, 0.05).predict(n, k) is k and Blend(0.0, 0.06).predict(n, k) is n


def test_cross_validated_errors_line_up_with_the_inputs():
    rng = np.random.default_rng(2)
    feats = [{"conv_macs": float(m), "conv_count": 2.0} for m in rng.uniform(1e5, 1e7, 30)]
    lat = [1e-6 * f["conv_macs"] * float(rng.uniform(0.95, 1.05)) for f in feats]
    lat[7] = math.nan  # not a measurement: skipped, and nan in its place
    net = LatencyPredictor().fit(feats, lat)
    assert len(net.cv_log_ratios_) == 30 and np.isnan(net.cv_log_ratios_[7])
    assert np.isfinite(np.delete(net.cv_log_ratios_, 7)).all()
    assert net.sigma_ == pytest.approx(float(np.sqrt(np.nanmean(np.square(net.cv_log_ratios_)))))
