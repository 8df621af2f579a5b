"""Energy meters (RAPL and Jetson rails over fake sysfs trees, wrap-around included) and idle power."""

from __future__ import annotations

import os

import pytest

from autotune.measure import open_meter
from autotune.measure.energy import IdlePower, JetsonMeter, RaplMeter


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


def test_rapl_adds_dram_subdomains_but_not_core(tmp_path):
    _domain(tmp_path, "intel-rapl:0", 0, 1_000_000)
    dram = _domain(tmp_path, "intel-rapl:0:1", 100, 500_000)
    (dram / "name").write_text("dram\n")
    core = _domain(tmp_path, "intel-rapl:0:0", 0, 1_000_000)
    (core / "name").write_text("core\n")  # inside the package figure already
    meter = RaplMeter(tmp_path)
    assert [d.name for d in meter.domains] == ["intel-rapl:0", "intel-rapl:0:1"]
    (dram / "energy_uj").write_text("50")  # the DRAM counter wrapped: 499_901 uJ to its top, + 50 uJ
    (core / "energy_uj").write_text("999")
    assert meter.read_j() == pytest.approx(499_951e-6)


def _rail(root, chip, n, label, mv, ma):
    hw = root / chip / "hwmon" / "hwmon3"
    hw.mkdir(parents=True, exist_ok=True)
    (hw / f"in{n}_label").write_text(label + "\n")
    (hw / f"in{n}_input").write_text(str(mv))
    (hw / f"curr{n}_input").write_text(str(ma))
    return hw


def test_jetson_meter_integrates_the_input_rail(tmp_path, monkeypatch):
    """Trapezoids over the meter's clock (a fake one here: the joules are exact, no wall time read)."""
    import types

    from autotune.measure import energy

    now = [100.0]
    monkeypatch.setattr(energy, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    hw = _rail(tmp_path, "1-0040", 1, "VIN_SYS_5V0", 5000, 1000)  # 5 V x 1 A = 5 W: the module's input
    _rail(tmp_path, "1-0040", 2, "VDD_GPU_SOC", 1000, 2000)  # part of the input: not added
    meter = JetsonMeter((tmp_path,), period_s=3600)  # the sampler thread waits; read_j steps
    try:
        assert list(meter.rails) == ["VIN_SYS_5V0"] and meter.power_w() == pytest.approx(5.0)
        now[0] += 0.2
        assert meter.read_j() == pytest.approx(1.0)  # 5 W for 0.2 s
        # the load doubles; the file is replaced whole, as a sysfs read is (write_text truncates first,
        # and the sampler thread could read '')
        (hw / "curr1_input.new").write_text("2000")
        os.replace(hw / "curr1_input.new", hw / "curr1_input")
        now[0] += 0.2
        assert meter.read_j() == pytest.approx(1.0 + 0.2 * (5.0 + 10.0) / 2)  # a trapezoid from 5 to 10 W
        now[0] += 0.2
        assert meter.read_j() == pytest.approx(2.5 + 2.0)  # 10 W for 0.2 s
    finally:
        meter.close()
    assert not meter._thread.is_alive()


def test_jetson_meter_reads_iio_power_rails_and_sums_them(tmp_path):
    iio = tmp_path / "6-0040" / "iio:device0"
    iio.mkdir(parents=True)
    for n, (name, mw) in enumerate([("GPU", 1500), ("CPU", 2500)]):
        (iio / f"rail_name_{n}").write_text(name)
        (iio / f"in_power{n}_input").write_text(str(mw))
    meter = JetsonMeter((tmp_path,))
    try:
        assert sorted(meter.rails) == ["CPU", "GPU"] and meter.power_w() == pytest.approx(4.0)
    finally:
        meter.close()
    with pytest.raises(OSError, match="no INA3221 power rail"):
        JetsonMeter((tmp_path / "nothing",))


class _Clock:
    """A logical clock for ``autotune.measure.energy``'s ``time``: ``sleep`` moves it, nothing else does."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now

    monotonic = perf_counter

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_idle_power_is_measured_once_and_reused(monkeypatch):
    from autotune.measure import energy

    clock = _Clock()
    monkeypatch.setattr(energy, "time", clock)

    class Steady:
        name = "steady-test"
        reads = 0

        def read_j(self):
            Steady.reads += 1
            return 3.0 * clock.now  # 3 W

    meter, idle = Steady(), IdlePower()
    assert idle.watts(meter, 0.05) == pytest.approx(3.0)
    reads = Steady.reads
    assert idle.watts(meter, 0.05) == pytest.approx(3.0) and Steady.reads == reads  # cached
    assert idle.watts(meter, 0.05, ttl_s=0) == pytest.approx(3.0) and Steady.reads == reads + 2
    assert IdlePower().watts(meter, 0.05) == pytest.approx(3.0) and Steady.reads == reads + 4  # per owner
    clock.sleep(IdlePower().ttl_s)  # the first reading is now as old as its time to live: measured again
    assert idle.watts(meter, 0.05) == pytest.approx(3.0) and Steady.reads == reads + 6


def test_rapl_without_powercap_is_unavailable(tmp_path):
    with pytest.raises(OSError):
        RaplMeter(tmp_path)


def test_meter_none_means_model():
    assert open_meter("none") is None
