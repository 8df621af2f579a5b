"""Noise-aware Pareto ranking of leaderboard rows.

Latency (and energy, derived from the same timing) compare by the confidence interval of the
median: one candidate beats another on such an objective only when the intervals separate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from autotune.leaderboard.schema import TIMED_COLUMNS, TUNED_COLUMNS, at_device, split_device

__all__ = ["Interval", "device_objectives", "pareto_ranks", "rank_rows"]

#: A measured value's spread ``(low, high)``; a plain number is the point ``(v, v)``.
Interval = tuple[float, float]


def _dominates(a: Sequence[Interval], b: Sequence[Interval]) -> bool:
    """``a`` is better somewhere and worse nowhere; better means its interval lies wholly below."""
    better = worse = False
    for (alo, ahi), (blo, bhi) in zip(a, b, strict=True):
        if ahi < blo:
            better = True
        elif bhi < alo:
            worse = True
    return better and not worse


def pareto_ranks(points: Sequence[Sequence[float | Interval]]) -> list[int]:
    """Non-dominated sorting (all objectives minimised): rank 1 is the Pareto front.

    A value is a number or an interval ``(low, high)``. One candidate beats another on an objective
    only when its interval lies wholly below the other's; overlapping intervals tie, so two
    candidates whose latencies cannot be told apart by their measurements share a rank.
    """
    iv = [[(float(v), float(v)) if not isinstance(v, tuple) else v for v in p] for p in points]
    n = len(iv)
    ranks = [0] * n
    remaining = set(range(n))
    rank = 1
    while remaining:
        front = {i for i in remaining if not any(_dominates(iv[j], iv[i]) for j in remaining if j != i)}
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def interval(row: Mapping[str, Any], column: str, value: float) -> Interval:
    """The measured spread of a timed value: the confidence interval of the median latency (energy
    scaled with it); a point for everything else, and for finalists' tuned latency. A device's
    column (``latency_ms@rpi5``) uses that device's interval."""
    base, device = split_device(column)
    lo, hi = row.get(at_device("latency_ci_low_ms", device)), row.get(at_device("latency_ci_high_ms", device))
    lat = row.get(at_device("latency_ms", device))
    if base in ("latency_ms", "energy_mj") and isinstance(lo, int | float) and isinstance(hi, int | float):
        if base == "latency_ms":
            return (float(min(lo, value)), float(max(hi, value)))
        if isinstance(lat, int | float) and lat > 0:
            return (value * lo / lat, value * hi / lat)
    return (value, value)


def _objective_vector(
    row: Mapping[str, Any], objectives: Mapping[str, str], columns: Mapping[str, str]
) -> list[Interval] | None:
    vec = []
    for name, direction in objectives.items():
        column = columns.get(name, name)
        tuned = row.get(TUNED_COLUMNS.get(column, column))
        v = tuned or row.get(column)  # finalists rank on their tuned figure
        if v is None or v == "" or not math.isfinite(float(v)):
            return None
        lo, hi = (float(v), float(v)) if tuned else interval(row, column, float(v))
        vec.append((-hi, -lo) if direction == "max" else (lo, hi))
    return vec


def device_objectives(objectives: Mapping[str, str], device: str) -> dict[str, str]:
    """The objectives as seen on ``device`` of a multi-device search: its own latency and energy
    in place of the first device's (objectives that already name a device are kept)."""
    return {(at_device(n, device) if n in TIMED_COLUMNS else n): d for n, d in objectives.items()}


def rank_rows(
    rows: list[dict[str, Any]],
    objectives: Mapping[str, str],
    columns: Mapping[str, str],
    *,
    rank_column: str = "pareto_rank",
) -> None:
    """Set ``rank_column`` (default ``pareto_rank``) on the ``ok`` rows (in place); other rows get none.

    Ranking is noise-aware: latency (and energy, which is derived from the same timing) compare by
    their confidence intervals of the median, so a dominance counts only when the intervals
    separate (see ``pareto_ranks``).

    When the timings come from an emulated device (``timing == 'emulated'``), latency and energy
    objectives are left out of the ranking; with nothing left, no row is ranked.
    """
    # devices whose timings are emulated: '' is the first device (``timing``), 'pi' is ``timing@pi``
    emulated = {
        split_device(c)[1] for r in rows for c, v in r.items() if split_device(c)[0] == "timing" and v == "emulated"
    }
    if emulated:  # leave out the timed objectives measured there
        objectives = {
            k: v
            for k, v in objectives.items()
            if not (
                split_device(columns.get(k, k))[0] in TIMED_COLUMNS and split_device(columns.get(k, k))[1] in emulated
            )
        }
        if not objectives:
            for r in rows:
                r[rank_column] = None
            return
    idx, pts = [], []
    for i, r in enumerate(rows):
        r[rank_column] = None
        vec = _objective_vector(r, objectives, columns) if r.get("status") == "ok" else None
        if vec is not None:
            idx.append(i)
            pts.append(vec)
    for i, rank in zip(idx, pareto_ranks(pts), strict=True):
        rows[i][rank_column] = rank
