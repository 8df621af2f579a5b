"""Measurement on the device: runners (where a compiled model runs) and energy meters."""

from autotune.measure import local, rpc  # noqa: F401 - register the 'local' and 'rpc' runners
from autotune.measure.base import ENERGY_METERS, RUNNERS, EnergyMeter, summarize_latency
from autotune.measure.energy import open_meter

__all__ = ["ENERGY_METERS", "RUNNERS", "EnergyMeter", "open_meter", "summarize_latency"]
