"""Every meter in ENERGY_METERS keeps the contract: opening it gives None where this machine has no such
counter, or a meter whose ``read_j`` is a non-decreasing float. Fake sysfs trees stand in for the
hardware (``energy.POWERCAP`` is where ``AUTOTUNE_POWERCAP`` points)."""

from __future__ import annotations

import time

import pytest

from autotune.measure import ENERGY_METERS, energy


def _fake_rapl(root):
    d = root / "intel-rapl:0"
    d.mkdir(parents=True)
    (d / "energy_uj").write_text("1000")
    (d / "max_energy_range_uj").write_text("1000000")
    return d


def _fake_jetson(root):
    hw = root / "1-0040" / "hwmon" / "hwmon3"
    hw.mkdir(parents=True)
    (hw / "in1_label").write_text("VIN_SYS_5V0\n")
    (hw / "in1_input").write_text("5000")
    (hw / "curr1_input").write_text("1000")


@pytest.fixture
def hardware(tmp_path, monkeypatch):
    """Fake RAPL and Jetson trees; returns the RAPL package directory (its counter can be advanced)."""
    monkeypatch.setattr(energy, "POWERCAP", tmp_path / "powercap")
    monkeypatch.setattr(energy, "JETSON_RAILS", (tmp_path / "ina3221",))
    _fake_jetson(tmp_path / "ina3221")
    return _fake_rapl(tmp_path / "powercap")


@pytest.fixture
def no_hardware(tmp_path, monkeypatch):
    monkeypatch.setattr(energy, "POWERCAP", tmp_path / "none")
    monkeypatch.setattr(energy, "JETSON_RAILS", (tmp_path / "none",))


def _close(meter) -> None:
    if hasattr(meter, "close"):
        meter.close()


@pytest.mark.parametrize("name", ENERGY_METERS.names())
def test_every_meter_reads_a_non_decreasing_float_or_is_unavailable(name, hardware):
    meter = ENERGY_METERS.get(name)()
    if meter is None:
        return  # not on this machine (nvml without a GPU)
    try:
        assert meter.name == name
        readings = []
        for step in range(4):
            if name == "rapl":
                (hardware / "energy_uj").write_text(str(1000 + 500 * step))
            readings.append(meter.read_j())
            time.sleep(0.01)
        assert all(isinstance(r, float) for r in readings)
        assert readings == sorted(readings) and readings[-1] > readings[0]
    finally:
        _close(meter)


@pytest.mark.parametrize("name", ["rapl", "jetson"])
def test_a_meter_without_its_counter_opens_as_none(name, no_hardware):
    assert ENERGY_METERS.get(name)() is None


def test_the_fake_trees_open_the_sysfs_meters(hardware):
    for name in ("rapl", "jetson"):
        meter = ENERGY_METERS.get(name)()
        assert meter is not None, name
        _close(meter)
