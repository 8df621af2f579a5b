"""``autotune device calibrate``: peaks measured, a profile written that loads, the roofline column."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import yaml

import autotune
from autotune.config.load import read_yaml
from autotune.devices.calibrate import Calibration, calibrate, check_name, measure_peak_gflops, write_profile
from autotune.errors import UserError
from autotune.leaderboard.row import roofline_fraction


def _cal(**kw):
    base = dict(
        fp32_gflops=100.0, matmul_size=512, bandwidth_gbs=10.0, threads=1, idle_w=None, active_w=None, meter=None,
        cpu="test cpu",
    )  # fmt: skip
    return Calibration(**{**base, **kw})


def test_peak_matmul_is_measured():
    gflops, size = measure_peak_gflops(1, sizes=(64, 128), seconds=0.02)
    assert gflops > 0 and size in (64, 128)


def test_the_fma_peak_kernel_runs_vector_fmas():
    from autotune.measure.peak import ACCUMULATORS, fma_peak_gflops, host_target

    peak = fma_peak_gflops(1, number=2, repeat=1)
    assert peak > 0 and ACCUMULATORS >= 8  # its figure is a bench's business (bench/, not a test)
    assert int(host_target(2).attrs["num-cores"]) == 2


class _FakeClock:
    """``calibrate``'s clock: each reading one second after the last; sleeping takes no time."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now

    def sleep(self, seconds):
        pass


class _FakeMeter:
    """An energy counter that gains 2 J every second of the fake clock (a steady 2 W)."""

    name = "fake"

    def __init__(self, clock):
        self._clock = clock

    def read_j(self):
        return 2.0 * self._clock.now


def test_calibrate_reads_idle_and_active_power_from_a_meter(monkeypatch):
    clock = _FakeClock()  # the watts follow from the clock alone: no wall-clock rate in the test
    monkeypatch.setattr(importlib.import_module("autotune.devices.calibrate"), "time", clock)
    monkeypatch.setattr("autotune.measure.energy.open_meter", lambda kind: _FakeMeter(clock))
    cal = calibrate(1, idle_s=0.1, matmul_s=0.01, mib=4)
    assert cal.meter == "fake" and cal.idle_w == pytest.approx(2.0, rel=0.05)
    assert cal.active_w == pytest.approx(2.0, rel=0.05)
    assert cal.fp32_gflops >= cal.matmul_gflops > 0 and cal.bandwidth_gbs > 0 and cal.threads == 1


def test_written_profile_loads_with_its_peak(tmp_path, repo):
    base = read_yaml(repo / "device_profiles/host.yaml")
    out = write_profile("calibrated", base, _cal(), tmp_path / "calibrated.yaml")
    profile = autotune.load_profile(out)
    assert profile.name == "calibrated" and profile.peak.fp32_gflops == 100.0 and profile.peak.threads == 1
    assert profile.target == {"host": True} and profile.measure.threads == 1
    assert profile.power.idle_w == base["power"]["idle_w"]  # no meter: the base's figures stay ...
    assert profile.power.source.startswith("not measured")  # ... and say so

    metered = write_profile("metered", base, _cal(idle_w=4.0, active_w=11.0, meter="rapl"), tmp_path / "m.yaml")
    power = autotune.load_profile(metered).power
    assert (power.idle_w, power.active_w) == (4.0, 11.0) and power.source.startswith("rapl meter")


def test_peak_threads_must_match_the_timing_threads(tmp_path, repo):
    doc = read_yaml(repo / "device_profiles/host.yaml")
    doc["peak"] = {"fp32_gflops": 100.0, "threads": 2, "source": "test"}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=r"peak.threads \(2\) must equal measure.threads \(1\)") as err:
        autotune.load_profile(path)
    assert str(path) in err.value.render()


def test_profile_name_cannot_be_a_path():
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(UserError, match="must be letters"):
            check_name(bad)
    assert check_name("xeon_2t") == "xeon_2t"


def test_roofline_fraction(tmp_path, repo):
    base = read_yaml(repo / "device_profiles/host.yaml")
    profile = autotune.load_profile(write_profile("p", base, _cal(fp32_gflops=200.0), tmp_path / "p.yaml"))
    peak = profile.peak.fp32_gflops
    # 1 M MACs in 0.1 ms = 20 GFLOP/s, a tenth of the 200 GFLOP/s peak
    assert roofline_fraction({"macs": 1_000_000, "latency_ms": 0.1}, peak) == pytest.approx(0.1)
    assert roofline_fraction({"macs": 1_000_000, "latency_ms": None}, peak) is None
    assert autotune.load_profile("host").peak is None  # no measured peak: no fraction
    assert roofline_fraction({"macs": 1_000_000, "latency_ms": 0.1}, None) is None


@pytest.mark.slow
def test_cli_writes_a_profile_and_refuses_to_overwrite(tmp_path):
    cmd = [sys.executable, "-m", "autotune.cli", "device", "calibrate", "mine"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert first.returncode == 0, first.stderr
    written = tmp_path / "device_profiles" / "mine.yaml"
    assert f"wrote {written.relative_to(tmp_path)}" in first.stdout
    assert autotune.load_profile(written).peak.fp32_gflops > 0
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
