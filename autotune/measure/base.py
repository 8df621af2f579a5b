"""Runner and energy-meter protocols, their registries, and latency statistics."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from autotune.config.device_profile import Measure
from autotune.registry import Registry

__all__ = [
    "ENERGY_METERS",
    "RUNNERS",
    "EnergyMeter",
    "fingerprint",
    "precise_enough",
    "repeat_until_precise",
    "summarize_latency",
    "time_in_rounds",
]


class EnergyMeter(Protocol):
    """Reads a cumulative energy counter. ``read_j`` is called before and after a timing window."""

    name: str

    def read_j(self) -> float:
        """Joules since an arbitrary origin (wrap-around handled by the meter)."""
        ...


def fingerprint(runner: str, key: str | None = None) -> dict[str, Any]:
    """Where a latency was measured, for comparing rows across runs: CPU model and frequency governor
    of this machine (``local`` runner; an RPC device is named ``rpc:<key>``, its governor unknown),
    and the TVM and torch versions that compiled and ran it."""
    import functools
    from importlib import metadata

    @functools.cache
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cpu, governor = f"rpc:{key}", None
    if runner == "local":
        cpu = _cpu_model()
        try:
            with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as f:
                governor = f.read().strip() or None
        except OSError:
            governor = None
    return {
        "cpu_model": cpu,
        "cpu_governor": governor,
        "tvm_version": version("apache-tvm"),
        "torch_version": version("torch"),
    }


def _cpu_model() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: Runners take (artifact, profile, input, lock) and return a Measurement or raise CandidateFailed.
RUNNERS: Registry[Callable[..., Any]] = Registry("runner")
#: Meter factories return an EnergyMeter, or None when the meter cannot be read on this machine.
ENERGY_METERS: Registry[Callable[[], EnergyMeter | None]] = Registry("energy meter")


def summarize_latency(seconds: list[float] | np.ndarray) -> dict[str, float]:
    """Median, p90, coefficient of variation and a ~95 % confidence interval of the median (ms).

    The interval is distribution-free: order statistics at ``n/2 ± 0.98·sqrt(n)`` of the sorted
    repeats (the normal approximation of the binomial), clipped to the sample.
    """
    ms = np.sort(np.asarray(seconds, dtype=np.float64) * 1e3)
    n = len(ms)
    if n == 0:
        raise ValueError("no timing repeats")
    half = 0.98 * math.sqrt(n)
    lo = int(max(0, math.floor(n / 2 - half)))
    hi = int(min(n - 1, math.ceil(n / 2 + half) - 1))
    mean = float(ms.mean())
    return {
        "latency_ms": float(np.median(ms)),
        "latency_p90_ms": float(np.percentile(ms, 90)),
        "latency_cov": float(ms.std(ddof=1) / mean) if n > 1 and mean > 0 else 0.0,
        "latency_ci_low_ms": float(ms[lo]),
        "latency_ci_high_ms": float(ms[hi]),
    }


def precise_enough(seconds: list[float], ci_target: float) -> bool:
    """Whether the median's confidence interval (``summarize_latency``) lies within ± ``ci_target``
    of the median. Always False for ``ci_target`` 0."""
    if ci_target <= 0 or not seconds:
        return False
    s = summarize_latency(seconds)
    median = s["latency_ms"]
    return median > 0 and max(median - s["latency_ci_low_ms"], s["latency_ci_high_ms"] - median) <= ci_target * median


def repeat_until_precise(timer: Callable[[int], list[float]], cfg: Measure) -> list[float]:
    """Per-repeat seconds from ``timer(n)`` (``n`` more repeats), run in rounds of ``cfg.min_repeat``
    until the median is within ``cfg.ci_target`` (``precise_enough``) or ``cfg.repeat`` have run."""
    results: list[float] = []
    while len(results) < cfg.repeat:
        results += list(timer(min(cfg.min_repeat, cfg.repeat - len(results))))
        if precise_enough(results, cfg.ci_target):
            break
    return results


def time_in_rounds(
    vm: Any, dev: Any, cfg: Measure, read_j: Callable[[], float] | None = None
) -> tuple[list[float], float, float]:
    """Time ``vm``'s ``main`` with TVM's time evaluator in rounds (``repeat_until_precise``).

    Returns the per-repeat seconds, and the energy counter ``read_j``'s joules and the seconds
    summed over the rounds only, not the gaps between them (an RPC round trip each); 0 without it.
    """
    joules, window_s = 0.0, 0.0

    def timer(n: int) -> list[float]:
        nonlocal joules, window_s
        evaluator = vm.time_evaluator(
            "invoke_stateful", dev, number=cfg.number, repeat=n, min_repeat_ms=int(cfg.min_repeat_ms)
        )
        e0, w0 = read_j() if read_j else 0.0, time.perf_counter()
        out = list(evaluator("main").results)
        window_s += time.perf_counter() - w0
        joules += (read_j() - e0) if read_j else 0.0
        return out

    results = repeat_until_precise(timer, cfg)
    return results, joules, window_s
