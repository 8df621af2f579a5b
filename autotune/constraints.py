"""Constraint arithmetic: which hard constraints (the space's and the device's limits) a row breaks,
by how much (for Optuna's constrained samplers), and which of them do not depend on the weights."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from autotune.config.device_profile import DeviceProfile
from autotune.config.search_space import TRAINED_METRICS, SearchSpace, metric_column

__all__ = ["LEARNED_SE", "Bounds", "bounds", "learned_floor", "violation_amounts", "violations", "weight_free_bounds"]

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


#: Binomial standard errors above the majority class's share that a trained candidate's validation
#: accuracy must reach to count as having learned (``learned_floor``).
LEARNED_SE = 3.0


def learned_floor(y_val: Sequence[int]) -> float | None:
    """The validation accuracy a trained classifier must pass to have learned anything: the share of
    the validation set's majority class plus ``LEARNED_SE`` binomial standard errors (0.151 on digits:
    10 balanced classes, 360 validation images). None without validation labels."""
    n = len(y_val)
    if n == 0:
        return None
    p = Counter(int(y) for y in y_val).most_common(1)[0][1] / n
    return p + LEARNED_SE * math.sqrt(p * (1 - p) / n)


def violation_amounts(
    row: Mapping[str, Any], space: SearchSpace, profile: DeviceProfile, learned: float | None = None
) -> dict[str, float]:
    """Optuna constraint values (<= 0 is feasible), one per constraint of the space, relative to its
    bound; a missing metric counts as violated (1.0).

    With ``learned`` (``learned_floor``) and accuracy an objective, a trained row's validation
    accuracy at or under it is violated too (``learned``): a candidate that learned nothing (say one
    whose learning rate diverged) is no trade-off, however fast, and a multi-objective sampler told
    it as feasible would keep proposing its neighbours for their latency."""
    out = {}
    acc = row.get(metric_column("accuracy"))
    if learned is not None and "accuracy" in space.objectives and isinstance(acc, int | float):
        out["learned"] = float(max(-1.0, (learned - acc) / learned))
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
