"""Constraint arithmetic: which hard constraints (the space's and the device's limits) a row breaks,
by how much (for Optuna's constrained samplers), and which of them do not depend on the weights."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import TRAINED_METRICS, SearchSpace, metric_column

__all__ = ["Bounds", "bounds", "violation_amounts", "violations", "weight_free_bounds"]

#: metric name → (lower bound or None, upper bound or None)
Bounds = dict[str, tuple[float | None, float | None]]


def bounds(space: SearchSpace, profile: DeviceProfile) -> Bounds:
    """Every hard constraint: the space's, with the profile's memory and size limits folded in."""
    out: Bounds = {name: (c.min, c.max) for name, c in space.constraints.items()}
    for name, limit in (("peak_mem_bytes", profile.limits.memory_bytes), ("size_bytes", profile.limits.size_bytes)):
        if limit:
            lo, hi = out.get(name, (None, None))
            out[name] = (lo, limit if hi is None else min(hi, limit))
    return out


def violations(row: Mapping[str, Any], space: SearchSpace, profile: DeviceProfile) -> list[str]:
    """The hard constraints that a measured row breaks, as ``name=value>bound`` strings."""
    out = []
    for name, (lo, hi) in bounds(space, profile).items():
        v = row.get(metric_column(name))
        if v is None:
            continue
        if hi is not None and v > hi:
            out.append(f"{name}={v:.6g}>{hi:g}")
        if lo is not None and v < lo:
            out.append(f"{name}={v:.6g}<{lo:g}")
    return out


def weight_free_bounds(space: SearchSpace, profile: DeviceProfile) -> Bounds:
    """The hard constraints on metrics that do not depend on the weights (all but accuracy), and on
    the profile's device only (no ``@device`` metric)."""
    return {n: b for n, b in bounds(space, profile).items() if n not in TRAINED_METRICS and "@" not in n}


def violation_amounts(row: Mapping[str, Any], space: SearchSpace, profile: DeviceProfile) -> dict[str, float]:
    """Optuna constraint values (<= 0 is feasible), one per constraint of the space, relative to its
    bound; a missing metric counts as violated (1.0)."""
    out = {}
    for name, c in space.constraints.items():
        v = row.get(metric_column(name))
        if v is None and name == "latency_ms":
            v = row.get("latency_pred_ms")  # skipped on the prediction
        if not isinstance(v, int | float):
            out[name] = 1.0
            continue
        amount = -1.0
        if c.max is not None:
            amount = max(amount, (v - c.max) / max(abs(c.max), 1e-12))
        if c.min is not None:
            amount = max(amount, (c.min - v) / max(abs(c.min), 1e-12))
        out[name] = float(amount)
    return out
