"""Devices autotune can provide itself: an emulated aarch64 board (or a loopback one) and calibration.

- ``build``: the emulated device's root filesystem (Debian's arm64 Python and TVM under QEMU user mode).
- ``emulated``: its lifecycle: start a tracker and server, status, stop (``autotune device emulate ...``).
- ``calibrate``: measure this machine's peaks and power and write a profile (``autotune device calibrate``).

Nothing here is imported by a search: a profile reaches these devices over TVM RPC like any other.
"""

from __future__ import annotations

from autotune.devices.build import DEFAULT_CACHE_DIR, WHEELS, build_device, cache_path
from autotune.devices.calibrate import Calibration, calibrate, check_name, measure_peak_gflops, write_profile
from autotune.devices.emulated import EmulatedDevice, device_status, running_device, start_device, stop_device

__all__ = [
    "DEFAULT_CACHE_DIR",
    "WHEELS",
    "Calibration",
    "EmulatedDevice",
    "build_device",
    "cache_path",
    "calibrate",
    "check_name",
    "device_status",
    "measure_peak_gflops",
    "running_device",
    "start_device",
    "stop_device",
    "write_profile",
]
