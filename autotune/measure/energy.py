"""Energy meters: RAPL (powercap sysfs), NVML, Jetson power rails, and the profile's power model.

An energy figure always says where it came from (``energy_source``): ``rapl``, ``nvml`` or
``jetson`` for a hardware reading over the timing window, ``model`` for ``(active_w - idle_w) ×
latency`` from the profile's power figures. Either way it is the energy one inference adds above
idle: with a meter, idle power is measured over a quiet window (``IdlePower``) and subtracted.
A meter that cannot be read is never reported as 0 J.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from autotune.config.device_profile import DeviceProfile
from autotune.measure.base import ENERGY_METERS, EnergyMeter

__all__ = ["IdlePower", "JetsonMeter", "NvmlMeter", "RaplMeter", "modelled_mj", "open_meter", "per_inference_mj"]

POWERCAP = Path(os.environ.get("AUTOTUNE_POWERCAP", "/sys/class/powercap"))  # moved by tests
#: Jetson INA3221 rail monitors: hwmon (JetPack 5 and 6, Orin) and iio (JetPack 4, Xavier and Nano).
JETSON_RAILS = (Path("/sys/bus/i2c/drivers/ina3221"), Path("/sys/bus/i2c/drivers/ina3221x"))
#: Seconds an idle-power reading stays valid (``IdlePower``) before it is taken again.
IDLE_TTL_S = 600.0


class RaplMeter:
    """RAPL package domains (``intel-rapl:N``) plus their DRAM sub-domains (``intel-rapl:N:M`` named
    ``dram``), each counter with its wrap-around; core and uncore sub-domains are inside the package."""

    name = "rapl"

    def __init__(self, root: Path | None = None) -> None:
        root = POWERCAP if root is None else root
        packages = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
        if not packages:
            raise OSError(f"no RAPL package domain under {root}")
        dram = sorted(
            p
            for p in root.glob("intel-rapl:*:*")
            if (p / "name").is_file() and (p / "name").read_text().strip() == "dram"
        )
        self.domains = packages + dram
        self._max = [int((d / "max_energy_range_uj").read_text()) for d in self.domains]
        self._last = [int((d / "energy_uj").read_text()) for d in self.domains]
        self._total_uj = 0

    def read_j(self) -> float:
        for i, d in enumerate(self.domains):
            now = int((d / "energy_uj").read_text())
            delta = now - self._last[i]
            if delta < 0:  # the counter wrapped
                delta += self._max[i] + 1
            self._total_uj += delta
            self._last[i] = now
        return self._total_uj / 1e6


def _jetson_rails(roots: tuple[Path, ...]) -> dict[str, tuple[Path, Path | None]]:
    """Rail label -> (power file in mW) or (voltage mV, current mA) files, from the INA3221 monitors."""
    rails: dict[str, tuple[Path, Path | None]] = {}
    for root in roots:
        for label in sorted(root.glob("*/hwmon/hwmon*/in*_label")):  # JetPack 5/6: in<N>_input, curr<N>_input
            n = label.name.removeprefix("in").removesuffix("_label")
            volts, amps = label.with_name(f"in{n}_input"), label.with_name(f"curr{n}_input")
            if volts.is_file() and amps.is_file():
                rails[label.read_text().strip()] = (volts, amps)
        for name in sorted(root.glob("*/iio:device*/rail_name_*")):  # JetPack 4: in_power<N>_input (mW)
            power = name.with_name(f"in_power{name.name.removeprefix('rail_name_')}_input")
            if power.is_file():
                rails[name.read_text().strip()] = (power, None)
    return rails


class JetsonMeter:
    """Jetson board power from its INA3221 rail monitors, sampled every ``period_s`` in a background
    thread and integrated (trapezoids). The module's input rail (``VIN*``) is the total when present;
    otherwise the rails are summed. ``close`` stops the sampler."""

    name = "jetson"

    def __init__(self, roots: tuple[Path, ...] | None = None, period_s: float = 0.01) -> None:
        roots = JETSON_RAILS if roots is None else roots
        rails = _jetson_rails(roots)
        if not rails:
            raise OSError(f"no INA3221 power rail under {', '.join(map(str, roots))}")
        total = [k for k in rails if k.upper().startswith("VIN")]
        self.rails = {k: rails[k] for k in total[:1]} if total else rails
        self._period = period_s
        self._joules = 0.0
        self._last = (time.perf_counter(), self.power_w())
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="autotune-jetson-meter", daemon=True)
        self._thread.start()

    def power_w(self) -> float:
        total = 0.0
        for first, amps in self.rails.values():
            if amps is None:
                total += float(first.read_text()) / 1e3  # mW
            else:
                total += float(first.read_text()) * float(amps.read_text()) / 1e6  # mV x mA
        return total

    def _step(self) -> None:
        now, watts = time.perf_counter(), self.power_w()
        with self._lock:
            t0, w0 = self._last
            self._joules += (now - t0) * (w0 + watts) / 2
            self._last = (now, watts)

    def _sample(self) -> None:
        while not self._stop.wait(self._period):
            self._step()

    def read_j(self) -> float:
        self._step()
        with self._lock:
            return self._joules

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1.0)


class NvmlMeter:
    """Total energy of GPU 0 from NVML (``nvmlDeviceGetTotalEnergyConsumption``, mJ)."""

    name = "nvml"

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._h = pynvml.nvmlDeviceGetHandleByIndex(0)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(self._h)

    def read_j(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._h) / 1e3


def _readable(meter: type) -> Callable[[], EnergyMeter | None]:
    """An opener for the registry: the meter, or None where this machine has no such counter."""

    def open_meter_of_kind() -> EnergyMeter | None:
        try:
            return meter()
        except (OSError, ValueError):
            return None

    return open_meter_of_kind


ENERGY_METERS.register("rapl")(_readable(RaplMeter))
ENERGY_METERS.register("jetson")(_readable(JetsonMeter))


@ENERGY_METERS.register("nvml")
def _nvml() -> EnergyMeter | None:
    try:
        return NvmlMeter()
    except Exception:  # pynvml missing, no driver, no GPU: the meter is simply unavailable
        return None


def open_meter(kind: str) -> EnergyMeter | None:
    """The meter named by the profile (``auto``: the first readable one); None means use the model."""
    if kind == "none":
        return None
    names = ["rapl", "nvml", "jetson"] if kind == "auto" else [kind]
    for name in names:
        meter = ENERGY_METERS.get(name)()
        if meter is not None:
            return meter
    return None


class IdlePower:
    """Idle watts per meter, measured over a quiet window and reused for ``ttl_s`` seconds.

    The runner that times on this machine owns one (``autotune.measure.local.LocalRunner.idle``).
    """

    def __init__(self, ttl_s: float = IDLE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._readings: dict[str, tuple[float, float]] = {}  # meter name -> (watts, when measured)

    def watts(self, meter: EnergyMeter, seconds: float = 0.5, *, ttl_s: float | None = None) -> float:
        """Idle watts from ``meter`` over ``seconds`` of doing nothing (call it with the machine quiet);
        a reading younger than ``ttl_s`` (default: this object's) is reused."""
        ttl = self.ttl_s if ttl_s is None else ttl_s
        cached = self._readings.get(meter.name)
        if cached is not None and time.monotonic() - cached[1] < ttl:
            return cached[0]
        e0, t0 = meter.read_j(), time.perf_counter()
        time.sleep(seconds)
        watts = (meter.read_j() - e0) / (time.perf_counter() - t0)
        self._readings[meter.name] = (watts, time.monotonic())
        return watts


def per_inference_mj(joules: float, idle_w: float, window_s: float, call_s: list[float]) -> float:
    """The energy one inference adds above idle: a meter's ``joules`` over a timing window of
    ``window_s``, less ``idle_w`` over the window, per call in it (the window over the mean of the
    per-call times ``call_s``). Noise can take a tiny network's share below 0: that is 0."""
    per_call = statistics.fmean(call_s)
    calls = max(1, round(window_s / per_call)) if per_call > 0 else 1
    return max(0.0, (joules - idle_w * window_s) / calls * 1e3)


def modelled_mj(profile: DeviceProfile, latency_ms: float) -> float:
    """The power model's energy above idle for one inference: (active_w - idle_w) x latency (W x ms = mJ)."""
    return (profile.power.active_w - profile.power.idle_w) * latency_ms
