"""Measurement on the device: runners (where a compiled model runs; ``RUNNERS``, the ``Runner`` protocol)
and energy meters (``ENERGY_METERS``)."""

from autotune.measure import local, rpc  # noqa: F401 - register the 'local' and 'rpc' runners
from autotune.measure.base import ENERGY_METERS, RUNNERS, EnergyMeter, Runner, summarize_latency
from autotune.measure.energy import IdlePower, open_meter

__all__ = ["ENERGY_METERS", "RUNNERS", "EnergyMeter", "IdlePower", "Runner", "open_meter", "summarize_latency"]
