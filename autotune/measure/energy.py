"""Energy meters: RAPL (powercap sysfs), NVML, and the profile's power model as the fallback.

An energy figure always says where it came from (``energy_source``): ``rapl`` or ``nvml`` for a
hardware counter read over the timing window, ``model`` for ``active_w × latency`` from the
profile's power figures. A meter that cannot be read is never reported as 0 J.
"""

from __future__ import annotations

from pathlib import Path

from autotune.measure.base import ENERGY_METERS, EnergyMeter

__all__ = ["NvmlMeter", "RaplMeter", "open_meter"]

POWERCAP = Path("/sys/class/powercap")


class RaplMeter:
    """Sum of the RAPL package domains (``intel-rapl:N/energy_uj``), with counter wrap-around."""

    name = "rapl"

    def __init__(self, root: Path = POWERCAP) -> None:
        self.domains = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1)
        if not self.domains:
            raise OSError(f"no RAPL package domain under {root}")
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


@ENERGY_METERS.register("rapl")
def _rapl() -> EnergyMeter | None:
    try:
        return RaplMeter()
    except (OSError, ValueError):
        return None


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
    names = ["rapl", "nvml"] if kind == "auto" else [kind]
    for name in names:
        meter = ENERGY_METERS.get(name)()
        if meter is not None:
            return meter
    return None
