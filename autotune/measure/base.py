"""Runner and energy-meter protocols, their registries, and latency statistics.

A runner plug-in is one module with a class implementing ``Runner`` and one instance registered in
``RUNNERS`` under the profile's ``runner.kind``; ``tests/unit/measure/test_runner_contract.py`` runs
every entry.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from autotune.config.device_profile import DeviceProfile, Measure
from autotune.quiet import QuietLock
from autotune.records import CompiledArtifact, Measurement
from autotune.registry import Registry

if TYPE_CHECKING:
    from tvm.s_tir import meta_schedule as ms

__all__ = [
    "ENERGY_METERS",
    "RUNNERS",
    "EnergyMeter",
    "Runner",
    "cpu_flags",
    "host_fingerprint",
    "metaschedule_evaluator",
    "precise_enough",
    "repeat_until_precise",
    "summarize_latency",
    "this_machine",
    "time_in_rounds",
]


class EnergyMeter(Protocol):
    """Reads a cumulative energy counter. ``read_j`` is called before and after a timing window."""

    name: str

    def read_j(self) -> float:
        """Joules since an arbitrary origin (wrap-around handled by the meter)."""
        ...


@runtime_checkable
class Runner(Protocol):
    """Where compiled candidates run and are timed: one instance per ``runner.kind``, in ``RUNNERS``."""

    name: str

    def check(self, profile: DeviceProfile, *, file: str | None = None) -> None:
        """Pre-flight, cheap: the device can be reached and can run the profile's target.

        Raises:
            UserError: naming ``file`` and the profile key to fix.
        """
        ...

    def measure(
        self, artifact: CompiledArtifact, profile: DeviceProfile, inputs: np.ndarray, *, lock: QuietLock | None = None
    ) -> Measurement:
        """Time ``main`` on one input (batch 1).

        Raises:
            CandidateFailed: stage ``measure``.
        """
        ...

    def executor(self, artifact: CompiledArtifact, profile: DeviceProfile) -> Callable[[np.ndarray], np.ndarray] | None:
        """Where the numerics check runs: a function of the (N, ...) inputs returning output 0 of each
        (raising ``CandidateFailed`` stage ``verify``), or None to run the artifact in this process."""
        ...

    def metaschedule_runner(self, profile: DeviceProfile) -> ms.runner.Runner:
        """The MetaSchedule runner that measures tuning candidates on this device."""
        ...

    def tunes_in_place(self, profile: DeviceProfile) -> bool:
        """Whether tuning measures on this machine (so it needs the quiet lock exclusively)."""
        ...

    def fingerprint(self, profile: DeviceProfile) -> dict[str, Any]:
        """Where a latency was measured: ``cpu_model``, ``cpu_governor``, ``tvm_version``, ``torch_version``."""
        ...


@functools.cache
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def host_fingerprint(cpu_model: str, governor: str | None) -> dict[str, Any]:
    """The fingerprint columns for a device of ``cpu_model``: plus the TVM and torch versions here."""
    return {
        "cpu_model": cpu_model,
        "cpu_governor": governor,
        "tvm_version": _version("apache-tvm"),
        "torch_version": _version("torch"),
    }


def this_machine() -> tuple[str, str | None]:
    """This machine's CPU model and frequency governor (None when unknown)."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as f:
            governor = f.read().strip() or None
    except OSError:
        governor = None
    return _cpu_model(), governor


def metaschedule_evaluator() -> ms.runner.EvaluatorConfig:
    """How MetaSchedule times each tuning candidate: 3 repeats of at least 30 ms (kernels here take µs
    to ms); MetaSchedule ranks by the mean."""
    from tvm.s_tir import meta_schedule as ms

    return ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=30, enable_cpu_cache_flush=False)


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """This machine's CPU feature flags (x86 ``flags``, Arm ``Features``); empty when unreadable."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


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


#: Runner instances by ``runner.kind`` (``local``, ``rpc``).
RUNNERS: Registry[Runner] = Registry("runner")
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
