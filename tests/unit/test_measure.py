"""Latency statistics and energy meters (RAPL over a fake sysfs, wrap-around included)."""

from __future__ import annotations

import numpy as np
import pytest

from autotune.measure import open_meter, summarize_latency
from autotune.measure.energy import RaplMeter


def test_latency_summary():
    s = summarize_latency([0.001, 0.002, 0.003, 0.004, 0.010] * 4)
    assert s["latency_ms"] == pytest.approx(3.0)
    assert s["latency_p90_ms"] == pytest.approx(np.percentile([1, 2, 3, 4, 10] * 4, 90))
    assert s["latency_ci_high_ms"] >= s["latency_ms"] >= s["latency_ci_low_ms"]
    assert s["latency_cov"] > 0


def test_latency_summary_rejects_empty():
    with pytest.raises(ValueError):
        summarize_latency([])


def _domain(root, name, energy, max_range):
    d = root / name
    d.mkdir()
    (d / "energy_uj").write_text(str(energy))
    (d / "max_energy_range_uj").write_text(str(max_range))
    return d


def test_rapl_sums_domains_and_handles_wraparound(tmp_path):
    d0 = _domain(tmp_path, "intel-rapl:0", 999_000, 1_000_000)
    _domain(tmp_path, "intel-rapl:1", 10, 1_000_000)
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-domain (core): not summed
    meter = RaplMeter(tmp_path)
    assert meter.read_j() == 0.0
    (d0 / "energy_uj").write_text("2000")  # wrapped: 1001 uJ + 2000 uJ
    assert meter.read_j() == pytest.approx(3001e-6)


def test_rapl_without_powercap_is_unavailable(tmp_path):
    with pytest.raises(OSError):
        RaplMeter(tmp_path)


def test_meter_none_means_model():
    assert open_meter("none") is None


def test_fingerprint_names_the_measuring_machine_and_versions():
    from autotune.measure.base import fingerprint

    local = fingerprint("local")
    assert local["cpu_model"]
    assert local["tvm_version"] == "0.27.0.post1"
    assert local["torch_version"].startswith("2.13")
    remote = fingerprint("rpc", "rpi4")
    assert remote["cpu_model"] == "rpc:rpi4"
    assert remote["cpu_governor"] is None
