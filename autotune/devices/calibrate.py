"""``autotune device calibrate NAME``: measure this machine's peaks and write a device profile.

- **Peak fp32 compute**: an FMA-bound kernel for the target's vector width, compiled by TVM
  (``autotune.measure.peak``): a true upper bound for any fp32 kernel. The best GFLOP/s of torch's
  fp32 matrix multiply (the vendor BLAS: MKL, oneDNN or OpenBLAS) over square sizes is measured too
  and named in the profile's ``peak.source`` (on an AMD EPYC Zen 5, 1 thread: FMA 270 GFLOP/s; a
  tuned TVM convolution reached 117 GFLOP/s and torch.mm about 100-200).
- **Memory bandwidth**: the best of STREAM-like copy and triad over arrays far larger than the caches.
- **Power**, where an energy meter can be read (``autotune.measure.energy``): idle watts over a
  quiet window, and active watts over the compute runs. Without a meter the base profile's power
  figures stay, and the written profile says they were not measured.

The profile's ``peak`` block feeds the leaderboard's ``roofline_fraction`` (achieved GFLOP/s over
``peak.fp32_gflops``).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotune.errors import UserError

__all__ = ["Calibration", "calibrate", "check_name", "measure_bandwidth_gbs", "measure_peak_gflops", "write_profile"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Calibration:
    """What ``calibrate`` measured (watts are None without a meter)."""

    fp32_gflops: float
    matmul_size: int
    bandwidth_gbs: float
    threads: int
    idle_w: float | None
    active_w: float | None
    meter: str | None
    cpu: str
    matmul_gflops: float = 0.0  # torch.mm's best (fp32_gflops is the FMA-bound peak)


def measure_peak_gflops(
    threads: int, sizes: tuple[int, ...] = (256, 512, 1024, 2048), seconds: float = 0.5
) -> tuple[float, int]:
    """Best fp32 GFLOP/s of ``torch.mm`` over ``sizes`` (each timed for about ``seconds``); and its size."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    best, best_n = 0.0, sizes[0]
    try:
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            out = torch.empty(n, n)
            torch.mm(a, b, out=out)  # warm-up: the BLAS picks its kernel, pages are touched
            calls, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < seconds or calls < 3:
                torch.mm(a, b, out=out)
                calls += 1
            gflops = 2 * n**3 * calls / elapsed / 1e9
            if gflops > best:
                best, best_n = gflops, n
    finally:
        torch.set_num_threads(before)
    return best, best_n


def measure_bandwidth_gbs(threads: int, mib: int = 256, repeats: int = 5) -> float:
    """Best GB/s of STREAM-like copy (``a = b``: 2 arrays moved) and triad (``a = b + s*c``: 3)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    n = mib * 2**20 // 4
    a, b, c = torch.zeros(n), torch.ones(n), torch.full((n,), 2.0)
    best = 0.0
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            a.copy_(b)
            best = max(best, 2 * 4 * n / (time.perf_counter() - t0) / 1e9)
            t0 = time.perf_counter()
            torch.add(b, c, alpha=3.0, out=a)
            best = max(best, 3 * 4 * n / (time.perf_counter() - t0) / 1e9)
    finally:
        torch.set_num_threads(before)
    return best


def calibrate(
    threads: int, *, meter_kind: str = "auto", idle_s: float = 3.0, matmul_s: float = 0.5, mib: int = 256
) -> Calibration:
    """Measure this machine: peak fp32 GFLOP/s, bandwidth and, with a readable meter, idle and active watts.

    Args:
        idle_s: the quiet window for idle power (with a meter only).
        matmul_s: seconds each matmul size is timed for.
        mib: size of each bandwidth array.
    """
    from autotune.measure.energy import open_meter

    meter = open_meter(meter_kind)
    idle_w = active_w = None
    if meter is not None:
        e0, t0 = meter.read_j(), time.perf_counter()
        time.sleep(idle_s)
        idle_w = (meter.read_j() - e0) / (time.perf_counter() - t0)
        e0, t0 = meter.read_j(), time.perf_counter()
    gflops, size = measure_peak_gflops(threads, seconds=matmul_s)
    if meter is not None:
        active_w = (meter.read_j() - e0) / (time.perf_counter() - t0)
    from autotune.measure.base import this_machine
    from autotune.measure.peak import fma_peak_gflops

    return Calibration(
        fp32_gflops=max(fma_peak_gflops(threads), gflops),
        matmul_size=size,
        matmul_gflops=gflops,
        bandwidth_gbs=measure_bandwidth_gbs(threads, mib=mib),
        threads=threads,
        idle_w=idle_w,
        active_w=active_w,
        meter=meter.name if meter is not None else None,
        cpu=this_machine()[0],
    )


def write_profile(name: str, base: dict[str, Any], cal: Calibration, out: Path) -> Path:
    """Write ``base`` (a profile's YAML mapping) as profile ``name`` with ``cal``'s peaks and power."""
    import torch
    from pydantic import ValidationError

    from autotune.config.device_profile import DeviceProfile
    from autotune.config.load import validation_error

    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d")
    doc = dict(base)
    doc["name"] = name
    doc["description"] = f"{cal.cpu}, calibrated {when} ({cal.threads} thread{'s' * (cal.threads > 1)})"
    doc["measure"] = {**(base.get("measure") or {}), "threads": cal.threads}
    doc["peak"] = {
        "fp32_gflops": round(cal.fp32_gflops, 2),
        "bandwidth_gbs": round(cal.bandwidth_gbs, 2),
        "threads": cal.threads,
        "source": f"autotune device calibrate {when}: an FMA-bound TVM kernel ({cal.fp32_gflops:.1f} GFLOP/s); "
        f"torch {torch.__version__} fp32 matmul reached {cal.matmul_gflops:.1f} GFLOP/s "
        f"({cal.matmul_size}x{cal.matmul_size}, best of 256-2048); STREAM-like copy/triad over 256 MiB",
    }
    if cal.idle_w is not None and cal.active_w is not None:
        doc["power"] = {
            "idle_w": round(cal.idle_w, 2),
            "active_w": round(max(cal.active_w, cal.idle_w), 2),
            "source": f"{cal.meter} meter, autotune device calibrate {when}: idle over a quiet window, "
            f"active over the fp32 matmul runs",
        }
    elif "power" in doc:
        power = dict(doc["power"])
        power["source"] = f"not measured (no readable energy meter): from the base profile: {power.get('source', '')}"
        doc["power"] = power
    text = yaml.safe_dump(doc, sort_keys=False)
    try:  # the written profile must load
        DeviceProfile.model_validate(yaml.safe_load(text))
    except ValidationError as err:
        raise validation_error(err, DeviceProfile, file=str(out)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Written by 'autotune device calibrate {name}' on {when} ({cal.cpu}).\n{text}")
    return out


def check_name(name: str) -> str:
    """A profile name that is a plain file name (letters, digits, ``_ . -``)."""
    if not _NAME.match(name):
        raise UserError(f"profile name {name!r} must be letters, digits, '_', '.' or '-' (at most 64)", key="NAME")
    return name
