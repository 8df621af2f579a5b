"""Latency statistics, timing rounds until the median is precise, and the measuring machine's fingerprint."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.config.device_profile import Measure
from autotune.measure import summarize_latency
from autotune.measure.base import precise_enough, repeat_until_precise


def test_latency_summary():
    s = summarize_latency([0.001, 0.002, 0.003, 0.004, 0.010] * 4)
    assert s["latency_ms"] == pytest.approx(3.0)
    assert s["latency_p90_ms"] == pytest.approx(np.percentile([1, 2, 3, 4, 10] * 4, 90))
    assert s["latency_ci_high_ms"] >= s["latency_ms"] >= s["latency_ci_low_ms"]
    assert s["latency_cov"] > 0


def test_latency_summary_rejects_empty():
    with pytest.raises(ValueError):
        summarize_latency([])


class _Timer:
    """A time evaluator stand-in: hands out the given per-repeat seconds, recording each request."""

    def __init__(self, seconds):
        self.seconds, self.asked = list(seconds), []

    def __call__(self, n):
        self.asked.append(n)
        out, self.seconds = self.seconds[:n], self.seconds[n:]
        return out


def test_a_steady_device_stops_after_the_first_round():
    rng = np.random.default_rng(0)
    timer = _Timer(1e-3 * (1 + 0.001 * rng.standard_normal(15)))  # 0.1 % noise
    out = repeat_until_precise(timer, Measure())
    assert timer.asked == [5] and len(out) == 5
    assert precise_enough(out, 0.01)


def test_a_noisy_device_gets_every_repeat():
    rng = np.random.default_rng(0)
    timer = _Timer(1e-3 * (1 + 0.2 * rng.random(15)))  # up to 20 % slower
    out = repeat_until_precise(timer, Measure())
    assert timer.asked == [5, 5, 5] and len(out) == 15
    assert not precise_enough(out, 0.01)


def test_rounds_stop_once_the_interval_narrows():
    # one round with an outlier on each side of a 1 % band: the 5-repeat interval (min..max) is too wide,
    # at 10 repeats the order statistics drop both outliers
    first = [1.0, 1.0, 1.0, 0.9, 1.1]
    timer = _Timer(1e-3 * np.array(first + [1.0, 1.001, 0.999, 1.0, 1.0] + [1.0] * 5))
    out = repeat_until_precise(timer, Measure())
    assert timer.asked == [5, 5] and len(out) == 10
    assert precise_enough(out, 0.01) and not precise_enough(out[:5], 0.01)


def test_ci_target_zero_always_times_every_repeat_and_repeat_bounds_the_rounds():
    timer = _Timer([1e-3] * 15)
    assert len(repeat_until_precise(timer, Measure(ci_target=0))) == 15 and timer.asked == [5, 5, 5]
    timer = _Timer([1e-3] * 15)
    assert len(repeat_until_precise(timer, Measure(repeat=7, ci_target=0))) == 7 and timer.asked == [5, 2]
    timer = _Timer([1e-3] * 15)
    assert len(repeat_until_precise(timer, Measure(repeat=3))) == 3 and timer.asked == [3]


def test_fingerprint_names_the_measuring_machine_and_versions():
    import autotune
    from autotune.measure import RUNNERS

    local = RUNNERS.get("local").fingerprint(autotune.load_profile("host"))
    assert local["cpu_model"]
    assert local["tvm_version"] == "0.27.0.post1"
    assert local["torch_version"].startswith("2.13")
    remote = RUNNERS.get("rpc").fingerprint(autotune.load_profile("rpi4_emulated"))
    assert remote["cpu_model"] == "rpc:rpi4-emu"
    assert remote["cpu_governor"] is None
    assert remote["tvm_version"] == local["tvm_version"]
