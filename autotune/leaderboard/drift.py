"""Drift of the measuring machine: the reference model's timings over a run, and the rows they cast doubt on."""

from __future__ import annotations

from typing import Any

__all__ = ["DRIFT_THRESHOLD", "flag_drift"]

#: A reference re-timing further than this from the run's first one is drift.
DRIFT_THRESHOLD = 0.10


def flag_drift(rows: list[dict[str, Any]], threshold: float = DRIFT_THRESHOLD) -> list[dict[str, Any]]:
    """Set ``drift`` on rows that timed the reference model (its latency over the run's first
    reference timing, minus 1) and ``drift_flag`` on every timed row whose nearest reference timing
    before or after it (by ``finished_at``) drifted more than ``threshold``. Returns the drifted
    reference rows, in time order."""
    timed = sorted(
        (r for r in rows if isinstance(r.get("latency_ms"), int | float) or r.get("reference_latency_ms")),
        key=lambda r: (r.get("finished_at") or "", str(r.get("trial_id"))),
    )
    refs = [i for i, r in enumerate(timed) if isinstance(r.get("reference_latency_ms"), int | float)]
    for r in rows:
        r.pop("drift", None)
        r.pop("drift_flag", None)
    if not refs:
        return []
    base = timed[refs[0]]["reference_latency_ms"]
    drifted = set()
    for i in refs:
        d = timed[i]["reference_latency_ms"] / base - 1.0
        timed[i]["drift"] = d
        if abs(d) > threshold:
            drifted.add(i)
    for pos, r in enumerate(timed):
        before = [i for i in refs if i <= pos]
        after = [i for i in refs if i >= pos]
        near = {before[-1]} if before else set()
        near |= {after[0]} if after else set()
        r["drift_flag"] = bool(near & drifted)
    return [timed[i] for i in sorted(drifted)]
